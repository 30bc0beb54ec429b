//! Signed placement receipts as the scheduler's API hands them out: one per replica placed and one per replica
//! ended, each a DSSE envelope over an in-toto statement signed by the receipt key, in a hash-chained log whose
//! proof (the log from the job's first receipt to a signed head) verifies; the log survives a restart and goes on
//! from its head. The tonic service methods are called directly.

use serde_json::Value;
use sovra_api::v1::admin_server::Admin;
use sovra_api::v1::jobs_server::Jobs;
use sovra_api::v1::{CancelRequest, ReceiptsRequest, SchedulerAuditRequest, SetStateRequest, SubmitRequest};
use sovra_audit::{AuditEntry, AuditHead};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_oms::dsse::Envelope;
use sovra_oms::keys::SigningKey;
use sovra_scheduler::service::receipts::{CHECKPOINT_TYPE, RECEIPT_PREDICATE, STATEMENT_TYPE};
use sovra_scheduler::service::{Options, Scheduler, generate_receipt_key};
use sovra_scheduler::store::{SledStore, Store};
use std::path::Path;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn cluster() -> ClusterConfig {
    ClusterConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml")).unwrap()
}

fn scheduler(key: &Arc<SigningKey>, store: Option<Box<dyn Store>>) -> Scheduler {
    let opts = Options { receipt_key: Some(key.clone()), ..Options::default() };
    Scheduler::with_options(cluster(), PolicySpec::default(), 42, store, opts).unwrap()
}

async fn submit(s: &Scheduler, name: &str, class: &str, replicas: u32) -> u64 {
    let yaml = format!(
        "name: {name}\nkind: training\nresidency: {class}\nreplicas: {replicas}\nresources: {{gpus: 1, cpu_milli: \
         100, memory_mib: 128}}\n"
    );
    s.submit(Request::new(SubmitRequest { job_yaml: yaml, request_id: String::new() })).await.unwrap().into_inner().id
}

async fn set(s: &Scheduler, id: u64, state: &str) {
    s.set_state(Request::new(SetStateRequest { id, state: state.into() })).await.unwrap();
}

async fn document(s: &Scheduler, id: u64) -> Value {
    let r = s.receipts(Request::new(ReceiptsRequest { id })).await.unwrap().into_inner();
    serde_json::from_str(&r.json).unwrap()
}

/// Every receipt's signature and the chain proof, checked as a verifier would; the predicates, in log order.
fn verify(doc: &Value, key: &SigningKey) -> Vec<Value> {
    let entries: Vec<AuditEntry> = serde_json::from_value(doc["chain"]["entries"].clone()).unwrap();
    let head: AuditHead = serde_json::from_value(doc["chain"]["head"].clone()).unwrap();
    sovra_audit::verify_segment(&entries, &head).unwrap();
    let cp: Envelope = serde_json::from_value(doc["chain"]["checkpoint"].clone()).unwrap();
    let cp: Value = serde_json::from_slice(&cp.verify(CHECKPOINT_TYPE, key.public_key()).unwrap()).unwrap();
    assert_eq!((cp["count"].as_u64(), cp["hash"].as_str()), (Some(head.count), Some(head.hash.as_str())));
    let mut out = Vec::new();
    for r in doc["receipts"].as_array().unwrap() {
        let seq = r["seq"].as_u64().unwrap();
        let entry = entries.iter().find(|e| e.seq == seq).expect("each receipt is in the proof");
        assert_eq!(entry.event.details["envelope"], r["envelope"], "the receipt is the one the log holds");
        let env: Envelope = serde_json::from_value(r["envelope"].clone()).unwrap();
        let st: Value = serde_json::from_slice(&env.verify(STATEMENT_TYPE, key.public_key()).unwrap()).unwrap();
        assert_eq!(st["predicateType"], RECEIPT_PREDICATE);
        out.push(st["predicate"].clone());
    }
    out
}

#[tokio::test]
async fn each_replica_placed_and_ended_gets_a_signed_receipt_in_the_chain() {
    let key = generate_receipt_key().unwrap();
    let s = scheduler(&key, None);
    let id = submit(&s, "train", "fr-health", 2).await;
    set(&s, id, "running").await;
    set(&s, id, "succeeded").await;
    let doc = document(&s, id).await;
    let p = verify(&doc, &key);
    let events: Vec<(&str, u64, &str)> = p
        .iter()
        .map(|p| (p["event"].as_str().unwrap(), p["replica"].as_u64().unwrap(), p["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        events,
        vec![("placed", 0, ""), ("placed", 1, ""), ("ended", 0, "succeeded"), ("ended", 1, "succeeded")]
    );
    let c = cluster();
    for p in &p {
        assert_eq!(p["job"], id);
        assert_eq!(p["zone"]["id"], "fr-par-secnum", "fr-health runs only in the HDS + SecNumCloud zone");
        assert_eq!(p["satisfiesClass"], true);
        let class = c.class("fr-health").unwrap();
        assert_eq!(p["residencyClass"]["digest"], sovra_audit::digest_of(class).unwrap(), "recomputable digest");
        assert_eq!(p["residencyClass"]["definition"], serde_json::to_value(class).unwrap());
        let zone = c.zone("fr-par-secnum").unwrap();
        assert_eq!(p["zone"]["digest"], sovra_audit::digest_of(zone).unwrap());
        assert_eq!(p["policyDigest"], sovra_scheduler::service::receipts::policy_digest(&c).unwrap());
        assert!(p["node"].as_str().unwrap().starts_with("fr-par-h100"), "{p}");
        assert!(p["startedAt"].as_u64().unwrap() > 0);
    }
    assert!(p[2]["endedAt"].as_u64().unwrap() >= p[2]["startedAt"].as_u64().unwrap());
    // Another key does not verify them.
    let other = generate_receipt_key().unwrap();
    let env: Envelope = serde_json::from_value(doc["receipts"][0]["envelope"].clone()).unwrap();
    assert!(env.verify(STATEMENT_TYPE, other.public_key()).is_err());
}

#[tokio::test]
async fn a_cancel_ends_every_replica_and_a_job_never_placed_has_no_receipts() {
    let key = generate_receipt_key().unwrap();
    let s = scheduler(&key, None);
    let a = submit(&s, "a", "eu-any", 1).await;
    s.cancel(Request::new(CancelRequest { id: a })).await.unwrap();
    let p = verify(&document(&s, a).await, &key);
    assert_eq!(
        p.iter().map(|p| p["outcome"].as_str().unwrap_or("placed")).collect::<Vec<_>>(),
        ["placed", "cancelled"]
    );
    // 40 whole H100s are more than the cluster has in any zone: refused, never placed.
    let yaml = "name: big\nkind: training\nresidency: fr-health\nresources: {gpus: 40}\n".to_string();
    let refused = s.submit(Request::new(SubmitRequest { job_yaml: yaml, request_id: String::new() })).await;
    assert!(refused.is_err());
    let e = s.receipts(Request::new(ReceiptsRequest { id: 999 })).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("no job 999"), "{}", e.message());
}

#[tokio::test]
async fn the_log_survives_a_restart_and_exports_whole() {
    let key = generate_receipt_key().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let s = scheduler(&key, Some(Box::new(SledStore::open(dir.path()).unwrap())));
        let id = submit(&s, "t", "eu-any", 1).await;
        set(&s, id, "running").await;
        id
    };
    // sled's flusher may hold the lock a moment after the last handle.
    let store = (0..200)
        .find_map(|_| {
            SledStore::open(dir.path()).ok().or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                None
            })
        })
        .unwrap();
    let s = scheduler(&key, Some(Box::new(store)));
    set(&s, id, "failed").await;
    let p = verify(&document(&s, id).await, &key);
    assert_eq!(p.len(), 2);
    assert_eq!(p[1]["outcome"], "failed");
    assert_eq!(p[1]["startedAt"], p[0]["startedAt"], "the start time is read back from the log after a restart");
    // The whole log, as `sovra audit verify --scheduler` reads it.
    let mut stream = s.audit_export(Request::new(SchedulerAuditRequest { from: 0 })).await.unwrap().into_inner();
    let first: Value = serde_json::from_str(&stream.next().await.unwrap().unwrap().json).unwrap();
    let head: AuditHead = serde_json::from_value(first["head"].clone()).unwrap();
    let mut entries = Vec::new();
    while let Some(line) = stream.next().await {
        entries.push((entries.len() as u64, line.unwrap().json.into_bytes()));
    }
    let raw: Vec<(Vec<u8>, Vec<u8>)> = entries.into_iter().map(|(k, v)| (k.to_be_bytes().to_vec(), v)).collect();
    let report = sovra_audit::verify(raw.into_iter(), head);
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 2);
}
