//! The scheduler service over real gRPC on loopback: authentication, validation, refusal, explanation, cancel,
//! cluster views, and a restart from the sled directory recovering jobs and placements.

use sovra_api::v1::cluster_client::ClusterClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{CancelRequest, GetRequest, JobInfo, ListRequest, NodesRequest, PoolsRequest, SubmitRequest};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::{Scheduler, serve};
use sovra_scheduler::store::{SledStore, Store};
use tonic::transport::Channel;
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
  - {name: default}
"#;

const TOKEN: &str = "test-token";

fn job(name: &str, class: &str, gpus: u32) -> String {
    format!(
        "name: {name}\nkind: training\nresidency: {class}\nresources: {{gpus: {gpus}, cpu_milli: 1000, memory_mib: 1024}}\n"
    )
}

/// Starts a server on an ephemeral port; returns its address and a handle that stops it.
async fn start(store: Option<SledStore>) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let cluster = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let scheduler =
        Scheduler::new(cluster, PolicySpec::default(), 42, store.map(|s| Box::new(s) as Box<dyn Store>)).unwrap();
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
    (addr, tx, handle)
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

async fn clients(addr: &str) -> (JobsClient<Channel>, ClusterClient<Channel>) {
    let channel = Channel::from_shared(addr.to_string()).unwrap().connect().await.unwrap();
    (JobsClient::new(channel.clone()), ClusterClient::new(channel))
}

#[tokio::test]
async fn jobs_over_grpc() {
    let (addr, stop, handle) = start(None).await;
    let (mut jobs, mut cluster) = clients(&addr).await;

    // Unauthenticated and wrongly authenticated calls are rejected.
    let e = jobs.list(ListRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut wrong = Request::new(ListRequest::default());
    wrong.metadata_mut().insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(jobs.list(wrong).await.unwrap_err().code(), Code::Unauthenticated);

    // Invalid spec: INVALID_ARGUMENT naming the field path.
    let bad = job("bad", "fr-only", 1).replace("gpus: 1", "gpus: 1, gpu_milli: 1500");
    let e = jobs.submit(authed(SubmitRequest { job_yaml: bad, request_id: String::new() })).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("resources.gpu_milli: 1500 is out of range"), "{}", e.message());
    let e = jobs
        .submit(authed(SubmitRequest { job_yaml: job("x", "us-anywhere", 1), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("residency: unknown residency class"), "{}", e.message());

    // Impossible: refused at submit with the explanation, not queued forever.
    let e = jobs
        .submit(authed(SubmitRequest { job_yaml: job("huge", "fr-only", 8), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("even when empty"), "{}", e.message());

    // Placed, then pending with an explanation; idempotent by request id.
    let a = jobs
        .submit(authed(SubmitRequest { job_yaml: job("a", "fr-only", 4), request_id: "r-a".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.state, "placed");
    let again = jobs
        .submit(authed(SubmitRequest { job_yaml: job("a", "fr-only", 4), request_id: "r-a".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, a.id);
    let b = jobs
        .submit(authed(SubmitRequest { job_yaml: job("b", "fr-only", 2), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.state, "pending");
    let info = jobs.get(authed(GetRequest { id: b.id })).await.unwrap().into_inner();
    assert!(info.explanation_summary.contains("no room now"), "{}", info.explanation_summary);
    let explanation: serde_json::Value = serde_json::from_str(&info.explanation_json).unwrap();
    assert!(explanation["filters"].as_array().unwrap().iter().any(|f| f["filter"] == "residency"));

    // Residency holds through the service: the EU-restricted job avoids the US-owned zone.
    let c = jobs
        .submit(authed(SubmitRequest { job_yaml: job("c", "eu-restricted", 1), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.state, "pending", "the only EU-owned node is full");

    // Cancel frees the GPUs and the waiting jobs start.
    let cancelled = jobs.cancel(authed(CancelRequest { id: a.id })).await.unwrap().into_inner();
    assert_eq!(cancelled.state, "cancelled");
    let b_now = jobs.get(authed(GetRequest { id: b.id })).await.unwrap().into_inner();
    assert_eq!(b_now.state, "placed");
    assert_eq!(b_now.replicas[0].zone, "fr");
    let list =
        jobs.list(authed(ListRequest { state: "placed".into(), ..Default::default() })).await.unwrap().into_inner();
    assert_eq!(list.jobs.len(), 2, "b and c");

    let nodes = cluster.nodes(authed(NodesRequest::default())).await.unwrap().into_inner().nodes;
    let fr = nodes.iter().find(|n| n.name == "fr-a").unwrap();
    assert_eq!((fr.zone.as_str(), fr.gpus, fr.used_milli), ("fr", 4, 3000));
    let pools = cluster.pools(authed(PoolsRequest {})).await.unwrap().into_inner().pools;
    assert_eq!(pools.iter().map(|p| p.capacity_milli).sum::<u64>(), 8000);
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_restart_recovers_jobs_and_placements() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop, handle) = start(Some(SledStore::open(dir.path()).unwrap())).await;
    let (mut jobs, _) = clients(&addr).await;
    let a = jobs
        .submit(authed(SubmitRequest { job_yaml: job("a", "fr-only", 4), request_id: "r-a".into() }))
        .await
        .unwrap()
        .into_inner();
    let b = jobs
        .submit(authed(SubmitRequest { job_yaml: job("b", "fr-only", 4), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((a.state.as_str(), b.state.as_str()), ("placed", "pending"));
    let before = jobs.get(authed(GetRequest { id: a.id })).await.unwrap().into_inner();
    stop.send(()).unwrap();
    handle.await.unwrap();
    drop(jobs);

    // Same directory, new process state: the jobs, their states and a's GPUs are back; ids continue.
    let (addr, stop, handle) = start(Some(SledStore::open(dir.path()).unwrap())).await;
    let (mut jobs, mut cluster) = clients(&addr).await;
    let after = jobs.get(authed(GetRequest { id: a.id })).await.unwrap().into_inner();
    assert!(after.revision > before.revision, "revisions keep increasing across a restart");
    assert_eq!(JobInfo { revision: 0, ..after }, JobInfo { revision: 0, ..before });
    assert_eq!(jobs.get(authed(GetRequest { id: b.id })).await.unwrap().into_inner().state, "pending");
    let nodes = cluster.nodes(authed(NodesRequest::default())).await.unwrap().into_inner().nodes;
    assert_eq!(nodes.iter().find(|n| n.name == "fr-a").unwrap().used_milli, 4000, "no GPU assigned twice, none lost");
    let again = jobs
        .submit(authed(SubmitRequest { job_yaml: job("a", "fr-only", 4), request_id: "r-a".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, a.id, "request ids survive the restart");
    let c = jobs
        .submit(authed(SubmitRequest { job_yaml: job("c", "fr-only", 1), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    assert!(c.id > b.id, "ids continue");
    stop.send(()).unwrap();
    handle.await.unwrap();
}
