//! The backend-agnostic store suite: every [`Store`] backend must pass the same checks — what a commit writes is
//! what a load reads, a batch is all-or-nothing, the manifest counts what was acknowledged, archived jobs leave the
//! hot state but stay readable, node inventories and events round-trip — and, for a durable backend, everything
//! survives reopening. A new backend (etcd) gets one more `#[test]` calling [`contract`].

use sovra_audit::{AuditEvent, AuditHead, next_entry_at};
use sovra_domain::{ClusterConfig, Gpu, Health};
use sovra_engine::{JobRecord, JobState};
use sovra_scheduler::store::{Batch, MemoryStore, NodeRecord, SledStore, Store};
use std::path::Path;

fn event(subject: &str) -> AuditEvent {
    AuditEvent { kind: "test".into(), subject: subject.into(), actor: "t".into(), details: serde_json::json!({}) }
}

fn record(id: u64, state: JobState, request: Option<&str>) -> JobRecord {
    let cluster = ClusterConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml")).unwrap();
    let yaml = format!(
        "name: j{id}\nkind: inference\nresidency: eu-any\nresources: {{gpus: 1, gpu_milli: 500, cpu_milli: 1000, \
         memory_mib: 1024}}\n"
    );
    let job = cluster.jobs_from_yaml("job", &yaml).unwrap().remove(0);
    JobRecord {
        id,
        request_id: request.map(String::from),
        job,
        state,
        seq: id * 10,
        placement: None,
        explanation: None,
        preemptions: 0,
        losses: 0,
        blockers: vec![],
        preemption_records: vec![],
        attempt: 0,
        ended_reason: None,
    }
}

fn node() -> NodeRecord {
    NodeRecord {
        backend: "fake (test)".into(),
        driver_version: "550.1".into(),
        gpus: vec![Gpu {
            uuid: "GPU-1".into(),
            model: "L4".into(),
            memory_mib: 24_000,
            numa_node: Some(0),
            nvlink_peers: vec![],
            health: Health::Healthy,
            mig: vec![],
        }],
        gpu_error: String::new(),
    }
}

fn ids(records: &[JobRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

/// The contract. `open` gives the store (again, after the previous handle was dropped); `durable`: what was
/// committed must survive that.
fn contract<S: Store>(open: impl Fn() -> S, durable: bool) {
    let s = open();
    assert!(s.load().unwrap().is_empty(), "{}: a new store is empty", s.backend());
    assert_eq!(s.manifest().jobs, 0);

    // A commit writes jobs, nodes and events together.
    let batch = Batch {
        jobs: vec![record(1, JobState::Pending, Some("r1")), record(2, JobState::Pending, None)],
        nodes: vec![("n1".into(), node())],
        events: vec!["first".into(), "second".into()],
        ..Batch::default()
    };
    s.commit(&batch).unwrap();
    assert_eq!(ids(&s.load().unwrap()), vec![1, 2]);
    let m = s.manifest();
    assert_eq!((m.jobs, m.last_id, m.last_seq, m.request_ids), (2, 2, 20, 1), "{}", s.backend());
    assert_eq!(s.load_nodes().unwrap(), vec![("n1".to_string(), node())]);
    assert_eq!(s.events(10), vec!["first".to_string(), "second".to_string()]);
    assert_eq!(s.events(1), vec!["second".to_string()], "the last n, oldest first");

    // A changed record replaces the old one; it is not counted twice.
    s.commit(&Batch { jobs: vec![record(2, JobState::Succeeded, None)], ..Batch::default() }).unwrap();
    let loaded = s.load().unwrap();
    assert_eq!(loaded[1].state, JobState::Succeeded);
    assert_eq!(s.manifest().jobs, 2);

    // Archiving moves a job out of the hot state; it stays readable and counted.
    s.commit(&Batch { jobs: vec![record(3, JobState::Pending, None)], archive: vec![2], ..Batch::default() }).unwrap();
    assert_eq!(ids(&s.load().unwrap()), vec![1, 3]);
    assert_eq!(s.archived(2).unwrap().map(|r| r.state), Some(JobState::Succeeded));
    assert_eq!(s.archived(1).unwrap().map(|r| r.id), None, "a hot job is not in the archive");
    assert_eq!(s.manifest().jobs, 3);
    assert_eq!(s.manifest().last_id, 3);
    // An empty batch changes nothing.
    s.commit(&Batch::default()).unwrap();
    assert_eq!(s.manifest().jobs, 3);

    // Audit entries are appended after the head, indexed by job; one that does not follow the head is refused.
    assert_eq!(s.audit_head().unwrap(), AuditHead::empty());
    let e0 = next_entry_at(&AuditHead::empty(), event("a"), 1).unwrap();
    let e1 = next_entry_at(&AuditHead::after(&e0), event("b"), 2).unwrap();
    let e2 = next_entry_at(&AuditHead::after(&e1), event("c"), 3).unwrap();
    s.commit(&Batch { audit: vec![(Some(1), e0.clone()), (None, e1.clone())], ..Batch::default() }).unwrap();
    s.commit(&Batch { audit: vec![(Some(1), e2.clone())], ..Batch::default() }).unwrap();
    assert_eq!(s.audit_head().unwrap(), AuditHead::after(&e2), "{}", s.backend());
    assert_eq!(s.audit_entries(1, 10).unwrap(), vec![e1.clone(), e2.clone()]);
    assert_eq!(s.job_audit(1).unwrap(), vec![0, 2]);
    assert!(s.job_audit(2).unwrap().is_empty());
    let stale = next_entry_at(&AuditHead::after(&e0), event("d"), 4).unwrap();
    assert!(s.commit(&Batch { audit: vec![(None, stale)], ..Batch::default() }).is_err(), "{}", s.backend());
    drop(s);

    if durable {
        let s = open();
        assert_eq!(ids(&s.load().unwrap()), vec![1, 3], "{}: committed jobs survive reopening", s.backend());
        assert_eq!(s.archived(2).unwrap().map(|r| r.id), Some(2), "and the archive too");
        assert_eq!((s.manifest().jobs, s.manifest().last_id), (3, 3));
        assert_eq!(s.load_nodes().unwrap().len(), 1);
        assert_eq!(s.events(10).len(), 2);
        assert_eq!(s.audit_head().unwrap().count, 3, "the audit log survives reopening");
        assert_eq!(s.job_audit(1).unwrap(), vec![0, 2]);
        let all = s.audit_entries(0, 100).unwrap();
        sovra_audit::verify_segment(&all, &s.audit_head().unwrap()).unwrap();
    }
}

#[test]
fn memory_store_keeps_the_contract() {
    // The memory store keeps nothing across processes: each "open" is a new store.
    contract(MemoryStore::new, false);
}

#[test]
fn sled_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(
        || {
            // sled's background flusher may hold the directory's lock for a moment after the last handle drops.
            for _ in 0..200 {
                match SledStore::open(dir.path()) {
                    Ok(s) => return s,
                    Err(e) if e.contains("in use") => std::thread::sleep(std::time::Duration::from_millis(20)),
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("the state directory stays locked")
        },
        true,
    );
}

#[test]
fn etcd_store_keeps_the_contract() {
    // A real 3-member etcd cluster on loopback; each "open" is a new client on the same prefix.
    let cluster = sovra_etcd_testenv::EtcdCluster::start().unwrap();
    let endpoints = cluster.endpoints();
    contract(|| sovra_scheduler::store::EtcdStore::open(&endpoints, "/contract/").unwrap(), true);
}
