//! The single-writer service as callers see it: paginated lists, watches that resume from a revision, finished
//! jobs archived after the retention period, a panicking request that does not poison the service, a store that
//! fails closing the service for changes (fail closed), and reads answered while the writer is stuck in a commit.
//! The tonic service methods are called directly (no sockets: what is tested here is the service, not transport).

use sovra_api::v1::cluster_server::Cluster;
use sovra_api::v1::jobs_server::Jobs;
use sovra_api::v1::{GetRequest, JobInfo, ListRequest, NodesRequest, SetStateRequest, SubmitRequest, WatchRequest};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_engine::{JobId, JobRecord};
use sovra_scheduler::service::{Options, Scheduler};
use sovra_scheduler::store::{Batch, Manifest, MemoryStore, NodeRecord, Store, StoreError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn cluster() -> ClusterConfig {
    ClusterConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml")).unwrap()
}

fn job(name: &str) -> String {
    format!(
        "name: {name}\nkind: inference\nresidency: eu-any\nresources: {{gpus: 1, gpu_milli: 250, cpu_milli: 100, \
         memory_mib: 128}}\n"
    )
}

async fn submit(s: &Scheduler, name: &str) -> Result<u64, tonic::Status> {
    let req = SubmitRequest { job_yaml: job(name), request_id: String::new() };
    s.submit(Request::new(req)).await.map(|r| r.into_inner().id)
}

async fn list_all(s: &Scheduler, page_size: u32) -> (Vec<JobInfo>, usize) {
    let (mut out, mut pages, mut page_token) = (Vec::new(), 0, String::new());
    loop {
        let req = ListRequest { page_size, page_token, ..Default::default() };
        let page = s.list(Request::new(req)).await.unwrap().into_inner();
        pages += 1;
        out.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return (out, pages);
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn lists_paginate_and_watches_resume_from_a_revision() {
    let s = Scheduler::new(cluster(), PolicySpec::default(), 42, None).unwrap();
    for i in 0..23 {
        submit(&s, &format!("j{i}")).await.unwrap();
    }
    let (jobs, pages) = list_all(&s, 5).await;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), (1..=23).collect::<Vec<_>>(), "each job once, in order");
    assert_eq!(pages, 5);
    let too_big = s.list(Request::new(ListRequest { page_size: 10_001, ..Default::default() })).await.unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert!(too_big.message().starts_with("page_size:"), "{}", too_big.message());
    let bad = s.list(Request::new(ListRequest { page_token: "x".into(), ..Default::default() })).await.unwrap_err();
    assert!(bad.message().starts_with("page_token:"), "{}", bad.message());

    // Nodes page by name.
    let (mut names, mut token) = (Vec::new(), String::new());
    loop {
        let page = s.nodes(Request::new(NodesRequest { page_size: 2, page_token: token })).await.unwrap().into_inner();
        names.extend(page.nodes.into_iter().map(|n| n.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = cluster().nodes.iter().map(|n| n.name.clone()).collect();
    expected.sort();
    assert_eq!(names, expected);

    // A watcher that stopped at a list's revision gets exactly what changed after it.
    let at = s.list(Request::new(ListRequest::default())).await.unwrap().into_inner().revision;
    let late = submit(&s, "late").await.unwrap();
    s.set_state(Request::new(SetStateRequest { id: 1, state: "running".into() })).await.unwrap();
    let req = WatchRequest { since_revision: at, ..Default::default() };
    let mut stream = s.watch(Request::new(req)).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let j = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        assert!(j.revision > at);
        seen.push(j.id);
    }
    seen.sort();
    assert_eq!(seen, vec![1, late]);
    // Nothing else is pending on the stream: the next change is the next thing it says.
    let next = submit(&s, "next").await.unwrap();
    let j = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(j.id, next);
}

#[tokio::test]
async fn finished_jobs_are_archived_after_the_retention_period() {
    let opts = Options { retain_finished: Some(Duration::from_millis(200)), ..Options::default() };
    let s = Scheduler::with_options(cluster(), PolicySpec::default(), 42, None, opts).unwrap();
    let done = submit(&s, "done").await.unwrap();
    let kept = submit(&s, "kept").await.unwrap();
    s.set_state(Request::new(SetStateRequest { id: done, state: "succeeded".into() })).await.unwrap();
    let before = s.list(Request::new(ListRequest::default())).await.unwrap().into_inner().revision;
    // The writer's own tick (a quarter heartbeat) archives it once the period is over.
    let mut archived = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (jobs, _) = list_all(&s, 0).await;
        if jobs.iter().all(|j| j.id != done) {
            assert!(jobs.iter().any(|j| j.id == kept), "a running or pending job is never archived");
            archived = true;
            break;
        }
    }
    assert!(archived, "the finished job stayed in the hot state");
    let j = s.get(Request::new(GetRequest { id: done })).await.unwrap().into_inner();
    assert_eq!((j.id, j.state.as_str()), (done, "succeeded"), "an archived job is still found by id");
    let old = s.watch(Request::new(WatchRequest { since_revision: before, ..Default::default() })).await;
    assert_eq!(old.err().map(|e| e.code()), Some(Code::OutOfRange), "a watch cannot resume across an archiving");
}

#[tokio::test]
async fn a_panicking_request_does_not_poison_the_service() {
    let s = Scheduler::new(cluster(), PolicySpec::default(), 42, None).unwrap();
    let first = submit(&s, "before").await.unwrap();
    // The panic and innocent requests in flight at once (likely in one group commit).
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { submit(&s, &format!("c{i}")).await }));
    }
    let panicked = s.inject_panic().await.unwrap_err();
    assert_eq!(panicked.code(), Code::Internal);
    assert!(panicked.message().contains("the scheduler goes on"), "{}", panicked.message());
    for t in tasks {
        t.await.unwrap().expect("requests beside the panicking one are answered normally");
    }
    let after = submit(&s, "after").await.unwrap();
    assert_eq!(after, first + 9, "ids continue: nothing was lost or given twice");
    let (jobs, _) = list_all(&s, 0).await;
    assert_eq!(jobs.len(), 10);
    assert!(s.metrics_text().unwrap().contains("sovra_request_panics_total 1"));
}

/// A store that can be made to fail, or to hang inside a commit until released.
#[derive(Default)]
struct Faulty {
    inner: MemoryStore,
    fail: AtomicBool,
    hold: Mutex<bool>,
    released: Condvar,
}

impl Store for Faulty {
    fn backend(&self) -> &'static str {
        "faulty (test)"
    }
    fn load(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.load()
    }
    fn load_nodes(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        self.inner.load_nodes()
    }
    fn manifest(&self) -> Manifest {
        self.inner.manifest()
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut held = self.hold.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("disk full (test)".into()));
        }
        self.inner.commit(batch)
    }
    fn archived(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.inner.archived(id)
    }
    fn events(&self, n: usize) -> Vec<String> {
        self.inner.events(n)
    }
    fn audit_head(&self) -> Result<sovra_audit::AuditHead, StoreError> {
        self.inner.audit_head()
    }
    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<sovra_audit::AuditEntry>, StoreError> {
        self.inner.audit_entries(from, limit)
    }
    fn job_audit(&self, job: JobId) -> Result<Vec<u64>, StoreError> {
        self.inner.job_audit(job)
    }
}

/// `Box<dyn Store>` over a shared `Faulty`, so the test keeps a handle.
struct Shared(Arc<Faulty>);

impl Store for Shared {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn load(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.0.load()
    }
    fn load_nodes(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        self.0.load_nodes()
    }
    fn manifest(&self) -> Manifest {
        self.0.manifest()
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.0.commit(batch)
    }
    fn archived(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.0.archived(id)
    }
    fn events(&self, n: usize) -> Vec<String> {
        self.0.events(n)
    }
    fn audit_head(&self) -> Result<sovra_audit::AuditHead, StoreError> {
        self.0.audit_head()
    }
    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<sovra_audit::AuditEntry>, StoreError> {
        self.0.audit_entries(from, limit)
    }
    fn job_audit(&self, job: JobId) -> Result<Vec<u64>, StoreError> {
        self.0.job_audit(job)
    }
}

#[tokio::test]
async fn a_failing_store_stops_changes_and_acknowledges_nothing_unwritten() {
    let store = Arc::new(Faulty::default());
    let s = Scheduler::new(cluster(), PolicySpec::default(), 42, Some(Box::new(Shared(store.clone())))).unwrap();
    let ok = submit(&s, "written").await.unwrap();
    store.fail.store(true, Ordering::SeqCst);
    let e = submit(&s, "unwritten").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("disk full (test)") && e.message().contains("restart"), "{}", e.message());
    store.fail.store(false, Ordering::SeqCst);
    let later = submit(&s, "later").await.unwrap_err();
    assert_eq!(later.code(), Code::Unavailable, "fail closed: no change is taken after a failed write");
    // Reads still work, and show only what was written.
    let (jobs, _) = list_all(&s, 0).await;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ok]);
    assert_eq!(store.load().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_answered_while_the_writer_waits_for_the_disk() {
    let store = Arc::new(Faulty::default());
    let s = Scheduler::new(cluster(), PolicySpec::default(), 42, Some(Box::new(Shared(store.clone())))).unwrap();
    let id = submit(&s, "one").await.unwrap();
    *store.hold.lock().unwrap() = true;
    let stuck = {
        let s = s.clone();
        tokio::spawn(async move { submit(&s, "two").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stuck.is_finished(), "the second submit waits for its commit");
    // The writer is inside a commit; reads come from the snapshot and do not wait for it.
    let read = async {
        let j = s.get(Request::new(GetRequest { id })).await.unwrap().into_inner();
        let (jobs, _) = list_all(&s, 0).await;
        let nodes = s.nodes(Request::new(NodesRequest::default())).await.unwrap().into_inner().nodes;
        (j, jobs, nodes)
    };
    let (j, jobs, nodes) = tokio::time::timeout(Duration::from_secs(10), read).await.expect("reads did not wait");
    assert_eq!(j.id, id);
    assert_eq!(jobs.len(), 1, "the uncommitted job is not visible");
    assert!(!nodes.is_empty());
    *store.hold.lock().unwrap() = false;
    store.released.notify_all();
    assert_eq!(stuck.await.unwrap().unwrap(), id + 1);
}
