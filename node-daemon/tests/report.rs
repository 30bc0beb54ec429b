//! The daemon binary reporting to a scheduler over real gRPC and mutual TLS on loopback, with the fake GPU
//! backend: the scheduler shows its GPUs; an XID event stops placements on that GPU (an ignored XID does not); a
//! daemon killed and restarted does not duplicate its inventory and loses no job; a daemon gone takes its GPUs out
//! of the free pool within two heartbeat intervals; bad daemon configuration exits 2 naming the key.

use sovra_api::v1::cluster_client::ClusterClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{GetRequest, NodeInfo, NodesRequest, SubmitRequest};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::{Options, Scheduler, serve_with};
use sovra_scheduler::tls::{TlsDir, generate};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}
pools:
  - {id: train-fr, zone: fr, purpose: training}
residency_classes:
  - {name: fr-only, countries: [FR]}
nodes:
  - {name: gpu-1, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100-80GB-HBM3, count: 1, memory_mib: 81920}}
"#;

const TOKEN: &str = "t";
const HEARTBEAT: Duration = Duration::from_millis(500);

struct Env {
    dir: tempfile::TempDir,
    addr: String,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &[], &["gpu-1".into()]).unwrap();
    let cluster = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let opts = Options { heartbeat: HEARTBEAT, require_daemons: true, config_path: None, ..Options::default() };
    let scheduler = Scheduler::with_options(cluster, PolicySpec::default(), 42, None, opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("https://{}", listener.local_addr().unwrap());
    let tls = TlsDir(dir.path().into()).server_config().unwrap();
    tokio::spawn(serve_with(listener, scheduler, TOKEN.into(), Some(tls), std::future::pending()));
    Env { dir, addr }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Starts the daemon binary with a config file (exercising the file's reporting keys).
fn daemon(env: &Env, fixture_name: &str) -> Child {
    daemon_with(env, fixture_name, &[])
}

fn daemon_with(env: &Env, fixture_name: &str, flags: &[&str]) -> Child {
    let cfg = env.dir.path().join("daemon.yaml");
    let text = format!(
        "backend: fake\nfixture: {}\nreport_interval_ms: 50\nserver: {}\nnode: gpu-1\ntls_dir: {}\n",
        fixture(fixture_name).display(),
        env.addr,
        env.dir.path().display()
    );
    std::fs::write(&cfg, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sovra-node-daemon"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn channel(env: &Env) -> Channel {
    let ca = Certificate::from_pem(std::fs::read(env.dir.path().join("ca.pem")).unwrap());
    let tls = ClientTlsConfig::new().ca_certificate(ca);
    Endpoint::from_shared(env.addr.clone()).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

async fn node(env: &Env) -> NodeInfo {
    let nodes =
        ClusterClient::new(channel(env).await).nodes(authed(NodesRequest::default())).await.unwrap().into_inner().nodes;
    nodes.into_iter().next().unwrap()
}

/// Polls the node until `cond` holds (or 20 s pass); returns it and when it first held.
async fn wait_node(env: &Env, cond: impl Fn(&NodeInfo) -> bool) -> (NodeInfo, Instant) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = node(env).await;
        if cond(&n) || Instant::now() > deadline {
            return (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn submit(env: &Env, name: &str, gpus: u32) -> (u64, String, Vec<u32>) {
    let yaml = format!(
        "name: {name}\nkind: training\nresidency: fr-only\nresources: {{gpus: {gpus}, cpu_milli: 100, memory_mib: 100}}\n"
    );
    let mut jobs = JobsClient::new(channel(env).await);
    let id = jobs.submit(authed(SubmitRequest { job_yaml: yaml, request_id: String::new() })).await.unwrap();
    let id = id.into_inner().id;
    let j = jobs.get(authed(GetRequest { id })).await.unwrap().into_inner();
    (id, j.state, j.replicas.iter().flat_map(|r| r.devices.clone()).collect())
}

async fn state(env: &Env, id: u64) -> String {
    JobsClient::new(channel(env).await).get(authed(GetRequest { id })).await.unwrap().into_inner().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reports_its_gpus_and_an_xid_event_stops_placements_on_that_gpu() {
    let env = start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{port}");
    let mut d = daemon_with(&env, "fake-8gpu-xid-later.yaml", &["--metrics-listen", &metrics]);
    let (n, _) = wait_node(&env, |n| n.connected && n.ready).await;
    assert!(n.ready && n.connected, "{n:?}");
    assert_eq!(n.gpus, 8);
    assert!(n.backend.starts_with("fake (fixture "), "named as fake: {}", n.backend);
    // XID 79 on GPU 5 at 1.5 s; XID 31 on GPU 2 at 1.6 s is ignored by the default policy.
    let (n, _) = wait_node(&env, |n| n.healthy_gpus == 7).await;
    assert_eq!(n.unhealthy, vec!["5: XID 79".to_string()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node(&env).await.healthy_gpus, 7, "XID 31 leaves GPU 2 healthy");
    let mut devices = Vec::new();
    for i in 0..8 {
        let (_, st, d) = submit(&env, &format!("j{i}"), 1).await;
        assert_eq!(st, if i < 7 { "placed" } else { "pending" }, "job {i}");
        devices.extend(d);
    }
    assert!(!devices.contains(&5), "nothing placed on the GPU that fell off the bus: {devices:?}");
    // The daemon's own metrics.
    let body = http_get(&metrics, "/metrics").await;
    for want in ["sovra_daemon_gpus 8", "sovra_daemon_gpus_healthy 7", "sovra_daemon_connected 1"] {
        assert!(body.contains(want), "missing {want} in\n{body}");
    }
    d.kill().unwrap();
    d.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_one_inventory_and_a_gone_daemon_takes_its_gpus_out_within_two_intervals() {
    let env = start().await;
    let mut d = daemon(&env, "fake-8gpu.yaml");
    wait_node(&env, |n| n.connected && n.ready).await;
    let (job, st, _) = submit(&env, "four", 4).await;
    assert_eq!(st, "placed");
    // kill -9 and restart at once: the new registration replaces the old one; nothing is lost.
    d.kill().unwrap();
    d.wait().unwrap();
    let mut d = daemon(&env, "fake-8gpu.yaml");
    let (n, _) = wait_node(&env, |n| n.connected && n.heartbeat_age_ms < 200).await;
    assert_eq!((n.gpus, n.used_milli, n.ready), (8, 4000, true), "one inventory, the job's GPUs still in use");
    assert_eq!(state(&env, job).await, "placed");
    // Now the daemon goes for good.
    d.kill().unwrap();
    let killed = Instant::now();
    d.wait().unwrap();
    let (n, at) = wait_node(&env, |n| !n.ready).await;
    let took = at - killed;
    assert!(!n.ready, "the node must become NotReady");
    assert!(took <= HEARTBEAT * 2 + Duration::from_millis(250), "NotReady after {took:?}; the deadline is 2 intervals");
    assert_eq!(state(&env, job).await, "pending", "lost with the node and requeued");
    let (_, st, _) = submit(&env, "after", 1).await;
    assert_eq!(st, "pending", "nothing is placed on a NotReady node");
    eprintln!("NotReady {took:?} after the daemon was killed (heartbeat {HEARTBEAT:?})");
}

#[test]
fn bad_run_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("backend: fake\nfixture: f\nnode: a\n", "run: --server"),
        ("backend: fake\nfixture: f\nserver: https://x:1\n", "run: --node"),
        ("backend: fake\nfixture: f\nserver: https://x:1\nnode: a\n", "run: --ca (or --tls-dir) is required"),
        ("backend: fake\nfixture: f\nserver: https://x:1\nnode: a\ntls_dir: /nonexistent\n", "/nonexistent/ca.pem"),
        ("backend: fake\nfixture: f\nserverr: https://x:1\n", "unknown field `serverr`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = dir.path().join("daemon.yaml");
        std::fs::write(&cfg, text).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_sovra-node-daemon"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(want), "case {i}: {err}");
        assert!(!err.contains("panicked"), "case {i}: {err}");
    }
}

async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

/// The test NVML library cargo built as a dev-dependency (see tests/nvml.rs).
fn testlib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let candidates = [deps.join("libsovra_nvml_testlib.so"), deps.parent().unwrap().join("libsovra_nvml_testlib.so")];
    candidates.iter().find(|p| p.exists()).cloned().expect("libsovra_nvml_testlib.so is built as a dev-dependency")
}

/// The daemon on the NVML backend (the test NVML library), reporting to the scheduler.
fn nvml_daemon(env: &Env, lib: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sovra-node-daemon"))
        .args(["run", "--backend", "nvml", "--nvml-lib", lib.to_str().unwrap(), "--server", &env.addr])
        .args(["--node", "gpu-1", "--tls-dir", env.dir.path().to_str().unwrap()])
        .env("SOVRA_TEST_NVML_FIXTURE", fixture("nvml-4gpu.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nvml_backend_reports_through_the_same_stream_and_missing_nvml_is_a_state() {
    let env = start().await;
    // The real NVML code path against the test library: 4 GPUs, one in MIG mode with 2 instances (5 devices);
    // XID 79 on GPU 1 makes it unhealthy, XID 13 on GPU 3 is ignored.
    let mut d = nvml_daemon(&env, &testlib());
    let (n, _) = wait_node(&env, |n| n.connected && n.ready && !n.unhealthy.is_empty()).await;
    assert_eq!((n.backend.as_str(), n.gpus, n.healthy_gpus), ("nvml", 5, 4), "{n:?}");
    assert_eq!(n.driver_version, "550.54.15");
    assert_eq!(n.unhealthy, vec!["1: XID 79".to_string()]);
    d.kill().unwrap();
    d.wait().unwrap();
    // No NVML at all: the daemon still registers, saying so, and the node offers no GPUs.
    let mut d = nvml_daemon(&env, Path::new("/nonexistent/libnvidia-ml.so.1"));
    let (n, _) = wait_node(&env, |n| n.connected && n.gpus == 0).await;
    assert_eq!((n.gpus, n.backend.as_str(), n.ready), (0, "nvml", true), "{n:?}");
    let yaml = "name: one\nkind: training\nresidency: fr-only\nresources: {gpus: 1, cpu_milli: 100, memory_mib: 100}\n";
    let e = JobsClient::new(channel(&env).await)
        .submit(authed(SubmitRequest { job_yaml: yaml.into(), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "no GPU anywhere in the permitted pools: {e:?}");
    d.kill().unwrap();
    d.wait().unwrap();
}
