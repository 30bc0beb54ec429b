//! Admin API (zones, classes, queues, reload), job watch and the Prometheus endpoint, over real sockets.

use sovra_api::v1::admin_client::AdminClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{
    CancelRequest, ClassesRequest, QueuesRequest, ReloadRequest, SubmitRequest, WatchRequest, ZonesRequest,
};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::{Options, Scheduler, serve, serve_metrics};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR, certifications: [HDS]}
  - {id: us-de, country: DE, region: Frankfurt, jurisdiction: EU, operator: h, operator_hq: US}
pools:
  - {id: train-fr, zone: fr, purpose: training}
  - {id: train-de, zone: us-de, purpose: training}
residency_classes:
  - {name: fr-only, countries: [FR]}
  - {name: eu-restricted, jurisdictions: [EU], operator_hq_in: [EU]}
nodes:
  - {name: fr-a, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
  - {name: de-a, pool: train-de, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
queues:
  - {name: research, weight: 2, quota_milli: {train-fr: 2000}}
  - {name: prod}
"#;

const TOKEN: &str = "t";

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

async fn start(file: &std::path::Path) -> (Channel, std::net::SocketAddr) {
    let cluster = ClusterConfig::load(file).unwrap();
    let opts = Options { config_path: Some(file.into()), ..Default::default() };
    let s = Scheduler::with_options(cluster, PolicySpec::default(), 42, None, opts).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(serve(l, s.clone(), TOKEN.into(), std::future::pending()));
    let m = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = m.local_addr().unwrap();
    tokio::spawn(serve_metrics(m, s, std::future::pending()));
    (Endpoint::from_shared(addr).unwrap().connect().await.unwrap(), maddr)
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn job(name: &str, queue: &str, gpus: u32) -> String {
    format!(
        "name: {name}\nkind: training\nqueue: {queue}\nresidency: eu-restricted\nresources: {{gpus: {gpus}, cpu_milli: 100, memory_mib: 100}}\n"
    )
}

#[tokio::test]
async fn admin_views_reload_watch_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, CLUSTER).unwrap();
    let (ch, maddr) = start(&file).await;
    let mut admin = AdminClient::new(ch.clone());
    let mut jobs = JobsClient::new(ch);

    let zones = admin.zones(authed(ZonesRequest {})).await.unwrap().into_inner().zones;
    assert_eq!(
        zones.iter().map(|z| (z.id.as_str(), z.operator_hq.as_str())).collect::<Vec<_>>(),
        [("fr", "FR"), ("us-de", "US")]
    );
    let classes = admin.classes(authed(ClassesRequest {})).await.unwrap().into_inner().classes;
    let eu = classes.iter().find(|c| c.name == "eu-restricted").unwrap();
    assert_eq!(eu.zones, ["fr"], "the US-owned zone does not satisfy eu-restricted");

    // Watch every job, then submit: the watcher sees it placed, then cancelled.
    let mut watch = jobs.watch(authed(WatchRequest::default())).await.unwrap().into_inner();
    let id = jobs
        .submit(authed(SubmitRequest { job_yaml: job("a", "research", 2), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner()
        .id;
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((seen.id, seen.state.as_str()), (id, "placed"));
    // The research queue's quota (2 GPUs in train-fr) keeps a second job waiting.
    let id2 = jobs
        .submit(authed(SubmitRequest { job_yaml: job("b", "research", 1), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner()
        .id;
    let queues = admin.queues(authed(QueuesRequest {})).await.unwrap().into_inner().queues;
    let research = queues.iter().find(|q| q.name == "research").unwrap();
    assert_eq!((research.weight, research.pending, research.running, research.gpu_milli_held), (2, 1, 1, 2000));
    assert_eq!(research.quota_milli.get("train-fr"), Some(&2000));
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((seen.id, seen.state.as_str()), (id2, "pending"));

    // Metrics.
    let (status, body) = http_get(maddr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    for want in [
        "sovra_queue_pending_jobs{queue=\"research\"} 1",
        "sovra_placements_total 1",
        "sovra_submits_total 2",
        "sovra_pool_gpu_milli{pool=\"train-fr\",zone=\"fr\",state=\"used\"} 2000",
        "sovra_zone_gpu_milli{zone=\"fr\",state=\"free\"} 2000",
        "sovra_nodes{state=\"ready\"} 2",
        "sovra_decision_seconds_bucket",
    ] {
        assert!(body.contains(want), "missing {want} in\n{body}");
    }
    let (status, body) = http_get(maddr, "/healthz").await;
    assert!(status.contains("200") && body.trim() == "ok", "{status} {body}");

    // Reload: an invalid file is refused (naming the field) and changes nothing.
    std::fs::write(&file, CLUSTER.replace("pool: train-fr,", "pool: nowhere,")).unwrap();
    let e = admin.reload(authed(ReloadRequest {})).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("nodes[0].pool"), "{}", e.message());
    // A valid file that raises the quota: the waiting job starts.
    std::fs::write(&file, CLUSTER.replace("train-fr: 2000", "train-fr: 3000")).unwrap();
    let r = admin.reload(authed(ReloadRequest {})).await.unwrap().into_inner();
    assert_eq!((r.nodes, r.pools, r.requeued.len()), (2, 2, 0));
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((seen.id, seen.state.as_str()), (id2, "placed"));
    // Moving fr-a into the US-owned zone's pool is refused: a reload never moves a node across a border.
    std::fs::write(&file, CLUSTER.replace("{name: fr-a, pool: train-fr,", "{name: fr-a, pool: train-de,")).unwrap();
    let e = admin.reload(authed(ReloadRequest {})).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("moves node fr-a from zone fr to zone us-de"), "{}", e.message());
    // fr's operator becoming US-owned requeues what ran there (eu-restricted may not run under the CLOUD Act).
    std::fs::write(&file, CLUSTER.replace("operator: o, operator_hq: FR", "operator: o, operator_hq: US")).unwrap();
    let r = admin.reload(authed(ReloadRequest {})).await.unwrap().into_inner();
    assert_eq!(r.requeued, vec![id, id2]);
    jobs.cancel(authed(CancelRequest { id })).await.unwrap();
}
