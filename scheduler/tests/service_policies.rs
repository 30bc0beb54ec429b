//! Queueing behaviour through the real gRPC API on loopback: preemption, quotas, fair share, backfill with a
//! reservation, and gangs — what a client observes, not engine internals.

use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{CancelRequest, GetRequest, SubmitRequest};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::{Scheduler, serve};
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "policy-token";

/// fr: two 4-GPU nodes (pool train-fr); de: one 4-GPU node (pool train-de). Queues: `a` and `b` (equal weights),
/// `capped` (at most 4 GPUs in train-fr).
const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}
  - {id: de, country: DE, region: Berlin, jurisdiction: EU, operator: p, operator_hq: DE}
pools:
  - {id: train-fr, zone: fr, purpose: training}
  - {id: train-de, zone: de, purpose: training}
residency_classes:
  - {name: any}
  - {name: fr-only, countries: [FR]}
nodes:
  - {name: fr, count: 2, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
  - {name: de-a, pool: train-de, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
queues:
  - {name: a}
  - {name: b}
  - {name: capped, quota_milli: {train-fr: 4000}}
"#;

async fn start() -> JobsClient<Channel> {
    start_with().await.0
}

/// A served scheduler: a client and the scheduler itself (for its event log).
async fn start_with() -> (JobsClient<Channel>, Scheduler) {
    let cluster = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let scheduler = Scheduler::new(cluster, PolicySpec::default(), 42, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, scheduler.clone(), TOKEN.into(), std::future::pending()));
    (JobsClient::new(Channel::from_shared(addr).unwrap().connect().await.unwrap()), scheduler)
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

/// Submits a job; returns its id and state.
async fn submit(
    c: &mut JobsClient<Channel>,
    name: &str,
    queue: &str,
    prio: i32,
    class: &str,
    replicas: u32,
    gpus: u32,
) -> (u64, String) {
    let yaml = format!(
        "name: {name}\nkind: training\nqueue: {queue}\npriority: {prio}\nresidency: {class}\nreplicas: {replicas}\n\
         resources: {{gpus: {gpus}, cpu_milli: 1000, memory_mib: 1024}}\n"
    );
    let r = c.submit(authed(SubmitRequest { job_yaml: yaml, request_id: String::new() })).await.unwrap().into_inner();
    (r.id, r.state)
}

async fn state(c: &mut JobsClient<Channel>, id: u64) -> (String, u32, Vec<String>) {
    let j = c.get(authed(GetRequest { id })).await.unwrap().into_inner();
    (j.state, j.preemptions, j.replicas.into_iter().map(|r| r.node).collect())
}

#[tokio::test]
async fn preemption_is_whole_gang_and_only_when_it_helps() {
    let (mut c, scheduler) = start_with().await;
    let (gang, s) = submit(&mut c, "gang", "a", 0, "fr-only", 2, 4).await;
    assert_eq!(s, "placed", "a 2 × 4 GPU gang fills both fr nodes");
    let (high, s) = submit(&mut c, "high", "a", 10, "fr-only", 1, 2).await;
    assert_eq!(s, "placed");
    let (st, pre, nodes) = state(&mut c, gang).await;
    assert_eq!((st.as_str(), pre, nodes.len()), ("pending", 1, 0), "the whole gang was preempted and holds nothing");
    // The operators' event log keeps the preemption record: who, whom, both priorities, what was freed.
    let events = scheduler.events(100);
    let line = events.iter().find(|l| l.contains(&format!("preempted job {gang}"))).expect("a preemption event");
    assert!(line.contains(&format!("job {high} (priority 10)")) && line.contains("8 devices"), "{line}");
    // A high job that fits elsewhere preempts nothing.
    let (lowde, _) = submit(&mut c, "low-de", "a", 0, "any", 1, 2).await;
    let (other, s) = submit(&mut c, "other", "a", 10, "any", 1, 2).await;
    assert_eq!(s, "placed");
    assert_eq!(state(&mut c, lowde).await.1, 0, "no preemption needed");
    let _ = other;
}

#[tokio::test]
async fn quota_caps_a_queue_in_a_pool() {
    let mut c = start().await;
    let (_, s1) = submit(&mut c, "c1", "capped", 0, "fr-only", 1, 4).await;
    let (c2, s2) = submit(&mut c, "c2", "capped", 0, "fr-only", 1, 4).await;
    assert_eq!((s1.as_str(), s2.as_str()), ("placed", "pending"), "4 GPUs of quota in train-fr");
    let (_, s3) = submit(&mut c, "c3", "capped", 0, "any", 1, 4).await;
    assert_eq!(s3, "placed", "outside the quota'd pool it runs (de)");
    let (_, s4) = submit(&mut c, "free", "a", 0, "fr-only", 1, 4).await;
    assert_eq!(s4, "placed", "another queue uses the free fr node");
    assert_eq!(state(&mut c, c2).await.0, "pending");
}

#[tokio::test]
async fn fair_share_alternates_between_queues() {
    let mut c = start().await;
    // Fill the cluster with queue a, then both queues wait; as a's jobs finish (cancel), capacity alternates.
    let mut a_running = Vec::new();
    for i in 0..12 {
        a_running.push(submit(&mut c, &format!("a{i}"), "a", 0, "any", 1, 1).await.0);
    }
    let a_wait: Vec<u64> = submit_many(&mut c, "a", 4).await;
    let b_wait: Vec<u64> = submit_many(&mut c, "b", 4).await;
    // Free 4 GPUs: b's dominant share is 0, a's is 12/12 → b gets all 4 freed GPUs... until shares meet.
    for id in a_running.iter().take(4) {
        c.cancel(authed(CancelRequest { id: *id })).await.unwrap();
    }
    let mut placed_b = 0;
    for id in &b_wait {
        if state(&mut c, *id).await.0 == "placed" {
            placed_b += 1;
        }
    }
    let mut placed_a = 0;
    for id in &a_wait {
        if state(&mut c, *id).await.0 == "placed" {
            placed_a += 1;
        }
    }
    assert_eq!((placed_a, placed_b), (0, 4), "the queue with the smaller share goes first");
}

/// Submits `n` one-GPU jobs to `queue`; returns their ids.
async fn submit_many(c: &mut JobsClient<Channel>, queue: &str, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(submit(c, &format!("{queue}-wait{i}"), queue, 0, "any", 1, 1).await.0);
    }
    ids
}

#[tokio::test]
async fn backfill_never_takes_the_reserved_nodes() {
    let mut c = start().await;
    let (s1, _) = submit(&mut c, "s1", "a", 0, "fr-only", 1, 3).await;
    let (s2, _) = submit(&mut c, "s2", "a", 0, "fr-only", 1, 3).await;
    let (big, s) = submit(&mut c, "big", "a", 0, "fr-only", 2, 4).await;
    assert_eq!(s, "pending");
    let (small_any, s) = submit(&mut c, "small-any", "a", 0, "any", 1, 1).await;
    assert_eq!(s, "placed", "backfilled outside the reservation");
    assert_eq!(state(&mut c, small_any).await.2, ["de-a"]);
    let (small_fr, s) = submit(&mut c, "small-fr", "a", 0, "fr-only", 1, 1).await;
    assert_eq!(s, "pending", "free fr GPUs are reserved for the big gang");
    for id in [s1, s2] {
        c.cancel(authed(CancelRequest { id })).await.unwrap();
    }
    assert_eq!(state(&mut c, big).await.0, "placed", "the gang starts as soon as its nodes are free");
    assert_eq!(state(&mut c, small_fr).await.0, "pending");
}
