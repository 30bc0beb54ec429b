//! Submit → process running, through the whole path: a scheduler (in process) with 100 simulated nodes whose
//! daemons (the real reporting and runner code, fake GPU backend) take their assignments over mutual TLS gRPC on
//! loopback and start each replica as a real process through the real shim. 1,000 one-GPU jobs (`/bin/true`) are
//! submitted one after another; for each, the placement figure (the `Submit` call, answered once the job is placed
//! and committed) and the run figure (from just before `Submit` to the process's start as its shim recorded it)
//! are taken in the same run.
//!
//! ```sh
//! cargo build --release --workspace --bins --examples
//! target/release/examples/run_latency [--nodes 100] [--jobs 1000] [--gap-ms 0] [--tick-ms 100]
//! ```
//! `--gap-ms` waits between submissions (0: back to back, the machine saturated); `--tick-ms` is the runners'
//! reconcile interval (the daemon's is 100 ms).
//! Prints JSON: p50/p90/p99/max of both figures in milliseconds and their ratio (BENCHMARKS.md).

use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{GetRequest, SubmitRequest};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_node_daemon::HealthPolicy;
use sovra_node_daemon::fake::FakeBackend;
use sovra_node_daemon::report::{DaemonMetrics, Reporter, sources};
use sovra_node_daemon::run::RunnerConfig;
use sovra_scheduler::service::{Options, Scheduler, serve_with};
use sovra_scheduler::tls::{TlsDir, generate};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::Request;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn authed<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut().insert("authorization", "Bearer t".parse().expect("header"));
    r
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The `q` quantile of sorted figures.
fn q(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    serde_json::json!({"p50": q(&v, 0.5), "p90": q(&v, 0.9), "p99": q(&v, 0.99), "max": q(&v, 1.0)})
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (nodes, jobs, gap_ms) = (arg("--nodes", 100), arg("--jobs", 1000), arg("--gap-ms", 0) as u64);
    let gpus_per_node = jobs.div_ceil(nodes).max(1);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let names: Vec<String> = (0..nodes).map(|i| format!("n{i:03}")).collect();
    generate(dir.path(), &[], &names).expect("certificates");
    let mut yaml = String::from(
        "zones:\n  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}\npools:\n  \
         - {id: p, zone: fr, purpose: training}\nresidency_classes:\n  - {name: fr, countries: [FR]}\nnodes:\n",
    );
    for n in &names {
        yaml.push_str(&format!(
            "  - {{name: {n}, pool: p, cpu_milli: 640000, memory_mib: 2621440, gpus: {{model: H100-80GB-HBM3, count: \
             {gpus_per_node}, memory_mib: 81920}}}}\n"
        ));
    }
    let cluster = ClusterConfig::from_yaml("cluster.yaml", &yaml).expect("the cluster");
    let opts = Options { heartbeat: Duration::from_secs(2), require_daemons: true, ..Options::default() };
    let scheduler = Scheduler::with_options(cluster.clone(), PolicySpec::default(), 42, None, opts).expect("starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = format!("https://{}", listener.local_addr().expect("bound"));
    let tls = TlsDir(dir.path().into());
    tokio::spawn(serve_with(
        listener,
        scheduler,
        "t".into(),
        Some(tls.server_config().expect("tls")),
        std::future::pending(),
    ));
    // The shim is the daemon binary next to this example's folder (target/<profile>/sovra-node-daemon).
    let exe = std::env::current_exe().expect("this program");
    let shim = exe.parent().and_then(|p| p.parent()).expect("target folder").join("sovra-node-daemon");
    assert!(shim.exists(), "build the daemon first: {} is missing", shim.display());
    let ca = std::fs::read(tls.ca()).expect("ca");
    for node in &cluster.nodes {
        let (inventory, updates) =
            sources::fake(FakeBackend::of_node(node, ""), HealthPolicy::default(), Duration::from_secs(1));
        let (cert, key) = tls.node(&node.name);
        let mut reporter = Reporter {
            server: addr.clone(),
            node: node.name.clone(),
            ca_pem: ca.clone(),
            cert_pem: std::fs::read(cert).expect("cert"),
            key_pem: std::fs::read(key).expect("key"),
            claim_zone: None,
            claim_pool: None,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            runner: None,
            address: "127.0.0.1".into(),
        };
        let cfg = RunnerConfig {
            node: node.name.clone(),
            state_dir: dir.path().join("runs").join(&node.name),
            default_user: "nobody".into(),
            allow_root: false,
            log_max_bytes: 1 << 20,
            log_keep: 1,
            cgroup_root: dir.path().join("no-cgroup"),
            shim: shim.clone(),
            tick: Duration::from_millis(arg("--tick-ms", 100) as u64),
        };
        let updates = sovra_node_daemon::run::attach(&mut reporter, cfg, updates).expect("runner");
        tokio::spawn(async move {
            let _ = reporter.run(inventory, updates, Arc::new(DaemonMetrics::default())).await;
        });
    }
    let channel = Endpoint::from_shared(addr)
        .expect("address")
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .expect("tls")
        .connect()
        .await
        .expect("connects");
    let client_channel = channel.clone();
    let mut client = JobsClient::new(channel);
    // Every daemon registered: the pool's GPUs are all offered.
    let mut cluster_api = sovra_api::v1::cluster_client::ClusterClient::new(client_channel.clone());
    loop {
        let req = sovra_api::v1::NodesRequest { page_size: 0, page_token: String::new() };
        let n = cluster_api.nodes(authed(req)).await.expect("nodes").into_inner().nodes;
        if n.iter().filter(|n| n.ready && n.connected).count() == nodes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = "name: j\nkind: training\nresidency: fr\nresources: {gpus: 1, cpu_milli: 100, memory_mib: 100}\n\
               run: {command: /bin/true}\n";
    let mut submitted = Vec::with_capacity(jobs);
    let mut placement_ms = Vec::with_capacity(jobs);
    let started = Instant::now();
    for _ in 0..jobs {
        let (t0, at) = (Instant::now(), now_ms());
        let r = client.submit(authed(SubmitRequest { job_yaml: job.into(), request_id: String::new() })).await;
        let r = r.expect("submitted").into_inner();
        assert_eq!(r.state, "placed", "every job fits at once");
        placement_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        submitted.push((r.id, at));
        if gap_ms > 0 {
            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        }
    }
    let submit_s = started.elapsed().as_secs_f64();
    let mut run_ms = Vec::with_capacity(jobs);
    let mut last_start = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    for (id, at) in &submitted {
        loop {
            let j = client.get(authed(GetRequest { id: *id })).await.expect("get").into_inner();
            if let Some(r) = j.runs.first().filter(|r| r.started_ms > 0) {
                run_ms.push(r.started_ms.saturating_sub(*at) as f64);
                last_start = last_start.max(r.started_ms);
                break;
            }
            assert!(Instant::now() < deadline, "job {id} never started: {j:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let first_submit = submitted.first().map_or(0, |s| s.1);
    let run_span_s = last_start.saturating_sub(first_submit) as f64 / 1000.0;
    let (p, r) = (summary(placement_ms), summary(run_ms));
    let ratio = r["p50"].as_f64().unwrap_or(0.0) / p["p50"].as_f64().unwrap_or(1.0).max(1e-9);
    let doc = serde_json::json!({
        "nodes": nodes, "jobs": jobs, "gpus_per_node": gpus_per_node, "gap_ms": gap_ms,
        "tick_ms": arg("--tick-ms", 100),
        "submit_seconds": submit_s,
        "placed_per_second": jobs as f64 / submit_s,
        "first_submit_to_last_start_seconds": run_span_s,
        "started_per_second": jobs as f64 / run_span_s.max(1e-9),
        "placement_ms": p, "submit_to_running_ms": r,
        "ratio_p50_running_over_placement": ratio,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    std::process::exit(0);
}
