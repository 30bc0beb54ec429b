//! Issue #11 (hardening), over real gRPC on loopback and the real `sovra-scheduler` binary: input sizes over the
//! documented limits are INVALID_ARGUMENT naming the field and the limit (and the service keeps answering); a
//! request id reused with different content is ALREADY_EXISTS; `serve --help` shows no secret from the
//! environment; the `try:` line `serve` prints carries `SOVRA_CA`.

use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{ListRequest, SubmitRequest};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::{Scheduler, serve};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use tonic::transport::Channel;
use tonic::{Code, Request};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}
pools:
  - {id: train-fr, zone: fr, purpose: training}
residency_classes:
  - {name: fr-only, countries: [FR]}
nodes:
  - {name: fr-a, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
"#;

const TOKEN: &str = "test-token";

fn job(name: &str, replicas: &str, resources: &str) -> String {
    format!("name: {name}\nkind: training\nresidency: fr-only\nreplicas: {replicas}\nresources: {{{resources}}}\n")
}

async fn start() -> (JobsClient<Channel>, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let cluster = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let scheduler = Scheduler::new(cluster, PolicySpec::default(), 42, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        serve(listener, scheduler, TOKEN.into(), async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let channel = Channel::from_shared(addr).unwrap().connect().await.unwrap();
    (JobsClient::new(channel), tx, handle)
}

fn submit(job_yaml: String, request_id: &str) -> Request<SubmitRequest> {
    let mut r = Request::new(SubmitRequest { job_yaml, request_id: request_id.into() });
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

fn list() -> Request<ListRequest> {
    let mut r = Request::new(ListRequest::default());
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

#[tokio::test]
async fn replicas_over_limit_is_refused_not_oom() {
    let (mut jobs, stop, handle) = start().await;
    let e = jobs
        .submit(submit(job("big", "4000000000", "gpus: 1, cpu_milli: 1000, memory_mib: 1024"), ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message().contains("replicas: 4000000000 is over the limit of 10000 replicas per job"),
        "{}",
        e.message()
    );
    // The service survived and keeps answering.
    let ok = jobs.submit(submit(job("small", "2", "gpus: 1, cpu_milli: 1000, memory_mib: 1024"), "")).await.unwrap();
    assert_eq!(ok.into_inner().state, "placed");
    assert_eq!(jobs.list(list()).await.unwrap().into_inner().jobs.len(), 1);
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn sizes_over_limits_are_invalid_argument_naming_field_and_limit() {
    let (mut jobs, stop, handle) = start().await;
    let r = "gpus: 1, cpu_milli: 1000, memory_mib: 1024";
    let long = "n".repeat(300);
    let cases = [
        (job("a", "1", "gpus: 65, cpu_milli: 1, memory_mib: 1"), "", "resources.gpus: 65 is over the limit of 64 GPUs"),
        (
            job("a", "1", "gpus: 1, cpu_milli: 9223372036854775807, memory_mib: 1"),
            "",
            "resources.cpu_milli: 9223372036854775807 is over the limit of 1000000000 milli-cores",
        ),
        (
            job(
                "a",
                "1",
                &format!("gpus: 1, gpu_models: [{}], cpu_milli: 1, memory_mib: 1", vec!["H100"; 1001].join(",")),
            ),
            "",
            "resources.gpu_models: has 1001 entries; at most 1000 are allowed",
        ),
        (job(&long, "1", r), "", "name: is 300 bytes long; at most 253 are allowed"),
        (job("a", "1", r).replace("kind:", &format!("queue: {long}\nkind:")), "", "queue: is 300 bytes long"),
        (job("a", "1", r), &long, "request_id: is 300 bytes long; at most 253 are allowed"),
        (format!("{}\n#{}", job("a", "1", r), "x".repeat(1 << 20)), "", "job: the job YAML is "),
    ];
    for (yaml, request_id, expected) in cases {
        let expected = if expected.ends_with("is ") {
            format!("{expected}{} bytes; at most 1048576 are accepted", yaml.len())
        } else {
            expected.to_string()
        };
        let expected = expected.as_str();
        let e = jobs.submit(submit(yaml, request_id)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(e.message().contains(expected), "expected {expected:?} in {}", e.message());
    }
    assert!(jobs.list(list()).await.unwrap().into_inner().jobs.is_empty(), "nothing was recorded");
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn request_id_reused_with_different_content_is_already_exists() {
    let (mut jobs, stop, handle) = start().await;
    let first = job("a", "1", "gpus: 1, cpu_milli: 1000, memory_mib: 1024");
    let a = jobs.submit(submit(first.clone(), "r-1")).await.unwrap().into_inner();
    // The same content, written differently (a comment, a default spelled out): the same job, as before.
    let same = format!("# resent\n{first}queue: default\npriority: 0\n");
    assert_eq!(jobs.submit(submit(same, "r-1")).await.unwrap().into_inner().id, a.id);
    // Different content under the same request id: an error naming the first job, not a silent success.
    let changed = job("a", "1", "gpus: 2, cpu_milli: 1000, memory_mib: 1024");
    let e = jobs.submit(submit(changed.clone(), "r-1")).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());
    let m = e.message();
    assert!(m.contains(&format!("request id \"r-1\" was already used for job {} with different content", a.id)), "{m}");
    assert_eq!(jobs.list(list()).await.unwrap().into_inner().jobs.len(), 1, "no second job");
    // A new request id makes a new job.
    let b = jobs.submit(submit(changed, "r-2")).await.unwrap().into_inner();
    assert!(b.id > a.id);
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[test]
fn serve_help_does_not_show_the_token_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_sovra-scheduler"))
        .args(["serve", "--help"])
        .env("SOVRA_TOKEN", "secret-value")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("SOVRA_TOKEN"), "the help still names the variable: {help}");
    assert!(!help.contains("secret-value"), "the help shows the token's value: {help}");
}

#[test]
fn try_line_of_serve_carries_sovra_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let bin = env!("CARGO_BIN_EXE_sovra-scheduler");
    let certs = Command::new(bin).args(["certs", "--dir"]).arg(&tls).output().unwrap();
    assert!(certs.status.success(), "{}", String::from_utf8_lossy(&certs.stderr));
    let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml");
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--token", "t", "--tls-dir"])
        .arg(&tls)
        .arg("--config")
        .arg(&cluster)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let try_line = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("try:")).unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();
    let ca = std::path::absolute(tls.join("ca.pem")).unwrap();
    assert!(ca.exists());
    assert!(try_line.contains("SOVRA_SERVER=https://127.0.0.1:"), "{try_line}");
    assert!(try_line.contains(&format!("SOVRA_CA={} ", ca.display())), "{try_line}");
}

#[tokio::test]
async fn request_id_retry_of_a_refused_job_is_refused_again_not_ok() {
    // Found by the `scheduler_submit` fuzz target: the retry of a refused submit answered OK (state "refused").
    let (mut jobs, stop, handle) = start().await;
    let never = job("a", "1", "gpus: 1, gpu_models: [L8], cpu_milli: 1000, memory_mib: 1024");
    let first = jobs.submit(submit(never.clone(), "r-1")).await.unwrap_err();
    assert_eq!(first.code(), Code::FailedPrecondition, "{}", first.message());
    let again = jobs.submit(submit(never, "r-1")).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{}", again.message());
    assert_eq!(again.message(), first.message(), "the retry gets the first answer");
    assert_eq!(jobs.list(list()).await.unwrap().into_inner().jobs.len(), 1, "one refused job");
    stop.send(()).unwrap();
    handle.await.unwrap();
}

/// `sovra jobs --state bogus` was refused by the CLI only: the List RPC answered an empty list to any other client.
#[tokio::test]
async fn list_with_an_unknown_state_is_invalid_argument_not_an_empty_list() {
    let (mut jobs, stop, handle) = start().await;
    jobs.submit(submit(job("one", "1", "gpus: 1, cpu_milli: 1000, memory_mib: 1024"), "")).await.unwrap();
    let mut bogus = list();
    bogus.get_mut().state = "bogus".into();
    let e = jobs.list(bogus).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().starts_with("state: \"bogus\" is not a job state"), "{}", e.message());
    // Every state the message names is one the service takes.
    for name in ["pending", "placed", "running", "succeeded", "failed", "cancelled", "lost", "refused"] {
        assert!(e.message().contains(name), "{}", e.message());
        let mut r = list();
        r.get_mut().state = name.into();
        let got = jobs.list(r).await.unwrap().into_inner().jobs;
        assert_eq!(got.len(), usize::from(name == "placed"), "{name}");
    }
    stop.send(()).unwrap();
    handle.await.unwrap();
}

/// `serve --heartbeat-ms 1` was taken (only 0 was refused), though it makes healthy nodes flap NotReady.
#[test]
fn serve_heartbeat_below_100_ms_is_refused_naming_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.yaml");
    std::fs::write(&config, CLUSTER).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sovra-scheduler"))
        .args(["serve", "--listen", "127.0.0.1:0", "--heartbeat-ms", "1", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--heartbeat-ms") && err.contains("use 100 to 60000 ms"), "{err}");
}
