//! The node API over real gRPC and mutual TLS on loopback: identity binds zone (another node's certificate, no
//! certificate, a foreign CA, an unenrolled node, a claimed zone are all refused, and nothing a daemon sends moves
//! its node), reported inventory replacing the configured GPUs, health changes, the heartbeat deadline, and a
//! restart keeping reported inventories.

use sovra_api::v1::cluster_client::ClusterClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::nodes_client::NodesClient;
use sovra_api::v1::{
    GetRequest, GpuReport, HealthChange, Heartbeat, NodeInfo, NodeInventory, NodeReport, NodesRequest, Register,
    ReportReply, SubmitRequest, node_report, report_reply,
};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::{Options, Scheduler, serve, serve_with};
use sovra_scheduler::store::{SledStore, Store};
use sovra_scheduler::tls::{TlsDir, generate};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status, Streaming};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}
  - {id: us-de, country: DE, region: Frankfurt, jurisdiction: EU, operator: h, operator_hq: US}
pools:
  - {id: train-fr, zone: fr, purpose: training}
  - {id: train-de, zone: us-de, purpose: training}
residency_classes:
  - {name: fr-only, countries: [FR]}
nodes:
  - {name: n1, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100-80GB-HBM3, count: 1, memory_mib: 81920}}
  - {name: n2, pool: train-de, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100-80GB-HBM3, count: 1, memory_mib: 81920}}
"#;

const TOKEN: &str = "t";

struct Server {
    addr: String,
    scheduler: Scheduler,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path, opts: Options, store: Option<SledStore>, tls: bool) -> Server {
    generate(dir, &[], &["n1".into(), "n2".into(), "n9".into()]).unwrap();
    let cluster = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let scheduler =
        Scheduler::with_options(cluster, PolicySpec::default(), 42, store.map(|s| Box::new(s) as Box<dyn Store>), opts)
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls { "https" } else { "http" };
    let addr = format!("{scheme}://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let s = scheduler.clone();
    let tls = tls.then(|| TlsDir(dir.into()).server_config().unwrap());
    let handle = tokio::spawn(async move {
        serve_with(listener, s, TOKEN.into(), tls, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server { addr, scheduler, stop, handle }
}

/// A channel to the scheduler, presenting `node`'s certificate (or none), trusting the CA of `dir`.
async fn channel(addr: &str, dir: &Path, node: Option<&str>) -> Result<Channel, String> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(dir.join("ca.pem")).unwrap()));
    if let Some(n) = node {
        let (c, k) = TlsDir(dir.into()).node(n);
        tls = tls.identity(Identity::from_pem(std::fs::read(c).unwrap(), std::fs::read(k).unwrap()));
    }
    let ep = Endpoint::from_shared(addr.to_string()).unwrap();
    let ep = if addr.starts_with("https") { ep.tls_config(tls).unwrap() } else { ep };
    ep.connect().await.map_err(|e| format!("{e:?}"))
}

fn gpus(n: u32) -> NodeInventory {
    NodeInventory {
        backend: "test".into(),
        backend_ready: true,
        driver_version: "555.0".into(),
        gpus: (0..n)
            .map(|i| GpuReport {
                index: i,
                uuid: format!("GPU-{i}"),
                name: "NVIDIA H100 80GB HBM3".into(),
                model: "H100-80GB-HBM3".into(),
                memory_total_mib: 81559,
                healthy: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn register(node: &str, zone: &str, inv: NodeInventory) -> NodeReport {
    NodeReport {
        body: Some(node_report::Body::Register(Register {
            node: node.into(),
            claimed_zone: zone.into(),
            inventory: Some(inv),
            ..Default::default()
        })),
    }
}

/// Opens a report stream with `first`; returns the sender, the replies and the first reply (or the refusal).
async fn report(
    ch: Channel,
    first: NodeReport,
) -> (mpsc::Sender<NodeReport>, Result<(Streaming<ReportReply>, ReportReply), Status>) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.unwrap();
    let r = NodesClient::new(ch).report(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    let r = match r {
        Ok(resp) => {
            let mut s = resp.into_inner();
            match s.message().await {
                Ok(Some(first)) => Ok((s, first)),
                Ok(None) => Err(Status::unknown("closed")),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    (tx, r)
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

async fn node(addr: &str, dir: &Path, name: &str) -> NodeInfo {
    let ch = channel(addr, dir, None).await.unwrap();
    let nodes = ClusterClient::new(ch).nodes(authed(NodesRequest::default())).await.unwrap().into_inner().nodes;
    nodes.into_iter().find(|n| n.name == name).unwrap()
}

async fn submit(addr: &str, dir: &Path, name: &str, gpus: u32) -> u64 {
    try_submit(addr, dir, name, gpus).await.unwrap()
}

async fn try_submit(addr: &str, dir: &Path, name: &str, gpus: u32) -> Result<u64, Status> {
    let yaml = format!(
        "name: {name}\nkind: training\nresidency: fr-only\nresources: {{gpus: {gpus}, cpu_milli: 1000, memory_mib: 1024}}\n"
    );
    let ch = channel(addr, dir, None).await.unwrap();
    JobsClient::new(ch)
        .submit(authed(SubmitRequest { job_yaml: yaml, request_id: String::new() }))
        .await
        .map(|r| r.into_inner().id)
}

async fn job_state(addr: &str, dir: &Path, id: u64) -> (String, Vec<u32>) {
    let ch = channel(addr, dir, None).await.unwrap();
    let j = JobsClient::new(ch).get(authed(GetRequest { id })).await.unwrap().into_inner();
    (j.state, j.replicas.iter().flat_map(|r| r.devices.clone()).collect())
}

fn long_heartbeat() -> Options {
    Options { heartbeat: Duration::from_secs(60), ..Default::default() }
}

#[tokio::test]
async fn a_node_registers_with_its_certificate_and_its_reported_gpus_replace_the_configured_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), long_heartbeat(), None, true).await;
    assert_eq!(node(&s.addr, dir.path(), "n1").await.gpus, 1, "as configured");
    let ch = channel(&s.addr, dir.path(), Some("n1")).await.unwrap();
    let (tx, r) = report(ch, register("n1", "fr", gpus(4))).await;
    let (mut replies, first) = r.unwrap();
    let Some(report_reply::Body::Registered(reg)) = first.body else { panic!("{first:?}") };
    assert_eq!((reg.zone.as_str(), reg.pool.as_str(), reg.devices), ("fr", "train-fr", 4));
    assert_eq!(reg.heartbeat_interval_ms, 60_000);
    let n = node(&s.addr, dir.path(), "n1").await;
    assert_eq!((n.gpus, n.healthy_gpus, n.backend.as_str(), n.connected, n.zone.as_str()), (4, 4, "test", true, "fr"));
    // A heartbeat is acknowledged.
    tx.send(NodeReport { body: Some(node_report::Body::Heartbeat(Heartbeat { seq: 7 })) }).await.unwrap();
    // (After the registration the scheduler sends the node's assignment set: none here.)
    let mut ack = replies.message().await.unwrap().unwrap();
    while let Some(report_reply::Body::Assignments(a)) = &ack.body {
        assert!(a.replicas.is_empty(), "{a:?}");
        ack = replies.message().await.unwrap().unwrap();
    }
    assert!(matches!(ack.body, Some(report_reply::Body::Ack(a)) if a.seq == 7));
    // A job can now use the four reported GPUs.
    let id = submit(&s.addr, dir.path(), "four", 4).await;
    assert_eq!(job_state(&s.addr, dir.path(), id).await.0, "placed");
    // Re-registering (a daemon restart) replaces the inventory, never adds to it; the job keeps its GPUs.
    drop((tx, replies));
    let ch = channel(&s.addr, dir.path(), Some("n1")).await.unwrap();
    let (_tx, r) = report(ch, register("n1", "", gpus(4))).await;
    r.unwrap();
    let n = node(&s.addr, dir.path(), "n1").await;
    assert_eq!((n.gpus, n.used_milli), (4, 4000));
    assert_eq!(job_state(&s.addr, dir.path(), id).await.0, "placed");
    let _ = s.stop.send(());
}

#[tokio::test]
async fn nvlink_peers_that_differ_from_the_cluster_file_are_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), long_heartbeat(), None, true).await;
    let mut inv = gpus(2);
    inv.gpus[0].nvlink_peers = vec![1];
    inv.gpus[1].nvlink_peers = vec![0];
    let ch = channel(&s.addr, dir.path(), Some("n1")).await.unwrap();
    let (_tx, r) = report(ch, register("n1", "fr", inv.clone())).await;
    r.unwrap();
    let events = s.scheduler.events(50);
    let hits: Vec<&String> = events.iter().filter(|e| e.contains("reports NVLink peers")).collect();
    assert_eq!(hits.len(), 1, "{events:?}");
    assert!(hits[0].contains("node n1") && hits[0].contains("[[1], [0]]") && hits[0].contains("[[]]"), "{hits:?}");
    // The same report again (a daemon restart) is not news.
    let ch = channel(&s.addr, dir.path(), Some("n1")).await.unwrap();
    let (_tx2, r) = report(ch, register("n1", "fr", inv)).await;
    r.unwrap();
    assert_eq!(s.scheduler.events(50).iter().filter(|e| e.contains("reports NVLink peers")).count(), 1);
    let _ = s.stop.send(());
}

#[tokio::test]
async fn identity_binds_zone_other_certificates_and_claims_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), long_heartbeat(), None, true).await;
    // n2's certificate reporting for n1.
    let ch = channel(&s.addr, dir.path(), Some("n2")).await.unwrap();
    let (_tx, r) = report(ch, register("n1", "", gpus(8))).await;
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("node \"n2\"'s"), "{}", e.message());
    // No certificate at all.
    let ch = channel(&s.addr, dir.path(), None).await.unwrap();
    let (_tx, r) = report(ch, register("n1", "", gpus(8))).await;
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("client certificate"), "{}", e.message());
    // A certificate from another CA does not get through the handshake.
    let other = tempfile::tempdir().unwrap();
    generate(other.path(), &[], &["n1".into()]).unwrap();
    let (c, k) = TlsDir(other.path().into()).node("n1");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(dir.path().join("ca.pem")).unwrap()))
        .identity(Identity::from_pem(std::fs::read(c).unwrap(), std::fs::read(k).unwrap()));
    let refused = match Endpoint::from_shared(s.addr.clone()).unwrap().tls_config(tls).unwrap().connect().await {
        Err(_) => true,
        Ok(ch) => report(ch, register("n1", "", gpus(8))).await.1.is_err(),
    };
    assert!(refused, "a foreign CA's certificate must not register");
    // A node that is not in the cluster file.
    let ch = channel(&s.addr, dir.path(), Some("n9")).await.unwrap();
    let e = report(ch, register("n9", "", gpus(8))).await.1.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("not enrolled"), "{}", e.message());
    // n2 (enrolled in the US-owned zone) claiming to be in the French zone.
    let ch = channel(&s.addr, dir.path(), Some("n2")).await.unwrap();
    let e = report(ch, register("n2", "fr", gpus(8))).await.1.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("enrolled in \"us-de\", not \"fr\""), "{}", e.message());
    // None of that changed anything: n1 and n2 are as configured, in their zones.
    let (n1, n2) = (node(&s.addr, dir.path(), "n1").await, node(&s.addr, dir.path(), "n2").await);
    assert_eq!((n1.gpus, n1.backend.as_str(), n1.zone.as_str()), (1, "config", "fr"));
    assert_eq!((n2.gpus, n2.backend.as_str(), n2.zone.as_str()), (1, "config", "us-de"));
    // Registered properly, n2 is still in its enrolled zone whatever it reports, and fr-only jobs never go there.
    let ch = channel(&s.addr, dir.path(), Some("n2")).await.unwrap();
    let (_tx, r) = report(ch, register("n2", "", gpus(8))).await;
    let (_, first) = r.unwrap();
    assert!(matches!(first.body, Some(report_reply::Body::Registered(ref r)) if r.zone == "us-de"));
    let e = try_submit(&s.addr, dir.path(), "eight", 8).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "8 GPUs exist only in the US-owned zone: {e:?}");
    let _ = s.stop.send(());
}

#[tokio::test]
async fn without_tls_node_reports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), long_heartbeat(), None, false).await;
    let ch = channel(&s.addr, dir.path(), None).await.unwrap();
    let e = report(ch, register("n1", "", gpus(8))).await.1.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let _ = s.stop.send(());
}

#[tokio::test]
async fn an_unhealthy_gpu_is_not_offered_and_bad_inventories_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), long_heartbeat(), None, true).await;
    // A malformed inventory: NVLink to itself.
    let mut bad = gpus(2);
    bad.gpus[1].nvlink_peers = vec![1];
    let ch = channel(&s.addr, dir.path(), Some("n1")).await.unwrap();
    let e = report(ch, register("n1", "", bad)).await.1.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("register.inventory.gpus[1].nvlink_peers"), "{}", e.message());

    let ch = channel(&s.addr, dir.path(), Some("n1")).await.unwrap();
    let (tx, r) = report(ch, register("n1", "", gpus(4))).await;
    let (_replies, _) = r.unwrap();
    let health = HealthChange { gpu_index: 2, healthy: false, reason: "XID 79".into() };
    tx.send(NodeReport { body: Some(node_report::Body::Health(health)) }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let n = loop {
        let n = node(&s.addr, dir.path(), "n1").await;
        if n.healthy_gpus == 3 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(n.unhealthy, vec!["2: XID 79".to_string()]);
    // Four one-GPU jobs: three fit, never on GPU 2; the fourth waits.
    let mut devices = Vec::new();
    let mut states = Vec::new();
    for i in 0..4 {
        let id = submit(&s.addr, dir.path(), &format!("j{i}"), 1).await;
        let (state, d) = job_state(&s.addr, dir.path(), id).await;
        states.push(state);
        devices.extend(d);
    }
    assert_eq!(states, ["placed", "placed", "placed", "pending"]);
    assert!(!devices.contains(&2), "{devices:?}");
    let _ = s.stop.send(());
}

#[tokio::test]
async fn a_silent_node_is_not_ready_after_one_and_a_half_intervals_and_its_jobs_are_requeued() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), long_heartbeat(), None, true).await;
    let ch = channel(&s.addr, dir.path(), Some("n1")).await.unwrap();
    let registered_at = Instant::now();
    let (_tx, r) = report(ch, register("n1", "", gpus(2))).await;
    let (_replies, _) = r.unwrap();
    let after = Instant::now();
    let id = submit(&s.addr, dir.path(), "two", 2).await;
    assert_eq!(job_state(&s.addr, dir.path(), id).await.0, "placed");
    // The deadline is 1.5 × 60 s from the registration (the last message): judged at chosen instants.
    assert!(s.scheduler.check_liveness(registered_at + Duration::from_secs(89)).unwrap().is_empty());
    assert!(node(&s.addr, dir.path(), "n1").await.ready);
    assert_eq!(s.scheduler.check_liveness(after + Duration::from_secs(91)).unwrap(), vec!["n1".to_string()]);
    let n = node(&s.addr, dir.path(), "n1").await;
    assert!(!n.ready);
    assert_eq!(job_state(&s.addr, dir.path(), id).await.0, "pending", "lost with its node, then requeued");
    let _ = s.stop.send(());
}

#[tokio::test]
async fn with_require_daemons_nodes_wait_for_their_daemon_and_a_restart_keeps_reported_inventories() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let opts = Options { require_daemons: true, ..long_heartbeat() };
    let s = start(dir.path(), opts.clone(), Some(SledStore::open(data.path()).unwrap()), true).await;
    assert!(!node(&s.addr, dir.path(), "n1").await.ready, "no daemon yet");
    let id = submit(&s.addr, dir.path(), "one", 1).await;
    assert_eq!(job_state(&s.addr, dir.path(), id).await.0, "pending");
    let ch = channel(&s.addr, dir.path(), Some("n1")).await.unwrap();
    let (tx, r) = report(ch, register("n1", "", gpus(4))).await;
    let (replies, _) = r.unwrap();
    assert!(node(&s.addr, dir.path(), "n1").await.ready);
    assert_eq!(job_state(&s.addr, dir.path(), id).await.0, "placed", "placed as soon as its node is there");
    let three = submit(&s.addr, dir.path(), "three", 3).await;
    assert_eq!(job_state(&s.addr, dir.path(), three).await.0, "placed", "on the reported GPUs");
    drop((tx, replies));
    let _ = s.stop.send(());
    s.handle.await.unwrap();
    drop(s.scheduler);
    // Restart on the same state: n1 keeps its 4 reported GPUs and the job its placement.
    let mut store = SledStore::open(data.path());
    for _ in 0..100 {
        if store.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        store = SledStore::open(data.path());
    }
    let s = start(dir.path(), opts, Some(store.unwrap()), true).await;
    let n = node(&s.addr, dir.path(), "n1").await;
    assert_eq!((n.gpus, n.used_milli, n.backend.as_str()), (4, 4000, "test"));
    assert_eq!(job_state(&s.addr, dir.path(), three).await.0, "placed");
    let _ = s.stop.send(());
}

#[tokio::test]
async fn plain_serve_still_works_for_clients() {
    // `serve` (plain HTTP/2) keeps serving the user API.
    let cluster = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let scheduler = Scheduler::new(cluster, PolicySpec::default(), 42, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, scheduler, TOKEN.into(), std::future::pending()));
    let ch = Endpoint::from_shared(addr).unwrap().connect().await.unwrap();
    let nodes = ClusterClient::new(ch).nodes(authed(NodesRequest::default())).await.unwrap().into_inner().nodes;
    assert_eq!(nodes.len(), 2);
}
