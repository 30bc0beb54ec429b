//! The single writer: one thread owns the [`Engine`], takes requests from a bounded channel, and runs them in
//! **group commits**.
//!
//! A round takes every request waiting (up to [`MAX_BATCH`]), applies them to the engine in arrival order, runs
//! one scheduling cycle, writes every record the round changed in one [`Batch`] (one fsync, one manifest write),
//! publishes the new [`Snapshot`], and only then answers the requests: an answer always describes a durable
//! state, and a reader that got an answer sees at least that state.
//!
//! **Failures.** A request that panics inside the engine is answered INTERNAL; the writer rebuilds the engine from
//! the store (the last committed state), re-applies the round's other requests, and goes on — one bad request
//! never poisons the service (`scheduler/tests/one_writer.rs` injects one). When the store cannot write a
//! batch, nothing of it is acknowledged and the writer stops taking changes (fail closed): every later change is
//! refused with the store's error until the scheduler is restarted; reads keep working.

use super::apply::Changes;
use super::snapshot::{Clock, LiveMap, Snapshot};
use super::{Options, overlay, queues_of};
use crate::metrics::Metrics;
use crate::store::{Batch, NodeRecord, Store};
use arc_swap::ArcSwap;
use sovra_api::v1::{JobInfo, NodeInventory, Register, Registered, ReloadResponse, SubmitResponse};
use sovra_domain::{ClusterConfig, Job, PolicySpec};
use sovra_engine::{Engine, JobId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;
use tokio::sync::oneshot;
use tonic::Status;

/// The most requests one group commit takes.
pub(crate) const MAX_BATCH: usize = 1024;

/// What a request asks the writer to do.
#[derive(Debug, Clone)]
pub(crate) enum Req {
    /// Submit a validated job.
    Submit { job: Box<Job>, request_id: Option<String> },
    /// A runner reports `running`, `succeeded` or `failed`.
    SetState { id: JobId, state: String },
    /// Cancel a job.
    Cancel { id: JobId },
    /// A daemon registers (identity from its certificate).
    Register { identity: String, reg: Box<Register> },
    /// A daemon reports a GPU's health.
    Health { identity: String, session: u64, gpu: u32, healthy: bool, reason: String },
    /// A daemon reports a new inventory.
    Inventory { identity: String, session: u64, inv: Box<NodeInventory> },
    /// A NotReady node's daemon sent a heartbeat.
    Ready { identity: String },
    /// A daemon reports a replica's state.
    Replica { identity: String, session: u64, status: Box<sovra_api::v1::ReplicaStatus> },
    /// A report stream ended.
    Disconnected { identity: String, session: u64 },
    /// The liveness check at a given instant (tests pass a future one).
    Sweep { now: Instant },
    /// Reload the cluster file.
    Reload,
    /// Write these jobs' records and run a cycle (the first round after a restore).
    Touch { ids: Vec<JobId> },
    /// Where model versions are available for inference (from the promotion service).
    Models { facts: Arc<sovra_domain::ModelAvailability> },
    /// Grant a placement exception (break-glass).
    GrantException { envelope: Box<sovra_oms::dsse::Envelope> },
    /// Test-only: panic inside the writer while applying this request.
    #[cfg(feature = "fault-injection")]
    Panic,
}

/// Where a request's answer goes.
pub(crate) enum ReplyTx {
    /// A submit.
    Submit(oneshot::Sender<Result<SubmitResponse, Status>>),
    /// A change of one job, answered with its view.
    Job(oneshot::Sender<Result<JobInfo, Status>>),
    /// A registration.
    Registered(oneshot::Sender<Result<(u64, Registered), Status>>),
    /// Node names (the liveness check).
    Names(oneshot::Sender<Result<Vec<String>, Status>>),
    /// A reload.
    Reload(oneshot::Sender<Result<ReloadResponse, Status>>),
    /// Nothing to answer beyond success (or nobody waits).
    Unit(Option<oneshot::Sender<Result<(), Status>>>),
}

/// What applying a request produced, answered once the round is durable.
pub(crate) enum Outcome {
    /// A job's id (submit, set-state, cancel).
    Job(JobId),
    /// A registration: the stream's session and the reply.
    Registered(u64, Registered),
    /// Node names.
    Names(Vec<String>),
    /// A reload.
    Reload(ReloadResponse),
    /// Done.
    Unit,
}

/// A request and where its answer goes.
pub(crate) struct Envelope {
    /// The request.
    pub req: Req,
    /// Its answer's channel.
    pub reply: ReplyTx,
}

/// A message to the writer thread.
pub(crate) enum Msg {
    /// Work.
    Work(Envelope),
    /// Finish the current round and end.
    Stop,
}

/// The writer's state (owned by its thread).
pub(crate) struct Writer {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    /// The cluster file as loaded (the enrolment record: which node is in which pool).
    pub base: ClusterConfig,
    /// `base` with the GPUs daemons reported: what the engine runs on.
    pub cluster: ClusterConfig,
    /// What daemons reported, by node.
    pub reported: BTreeMap<String, NodeRecord>,
    /// Each node's position in `base` (and `cluster`).
    pub positions: BTreeMap<String, usize>,
    pub live: Arc<ArcSwap<LiveMap>>,
    pub snap: Arc<ArcSwap<Snapshot>>,
    pub watch: tokio::sync::broadcast::Sender<Arc<JobInfo>>,
    pub metrics: Arc<Metrics>,
    pub opts: Options,
    pub clock: Clock,
    pub policy: PolicySpec,
    pub seed: u64,
    pub next_session: u64,
    /// When each finished job finished (jobs finished before a restart count from the restart).
    pub finished: VecDeque<(Instant, JobId)>,
    pub finished_ids: BTreeSet<JobId>,
    /// Per node index: the state epoch its view was built from.
    pub epochs: Vec<u64>,
    /// The topology generation the node views were built from.
    pub generation: u64,
    /// Why the writer stopped taking changes, once it did.
    pub stopped: Option<Arc<str>>,
    /// Where assignment sets are published for the nodes' report streams.
    pub dispatch: Arc<super::dispatch::Dispatch>,
    /// Each node's assignment set.
    pub assigned: BTreeMap<String, super::assign::NodeSet>,
    /// The nodes each job with a `run:` section is assigned to.
    pub job_nodes: BTreeMap<JobId, BTreeSet<String>>,
    /// What the daemons reported of each job's replicas (the latest attempt's), by replica index. Kept in memory:
    /// after a restart the daemons report them again when they register.
    pub runs: BTreeMap<JobId, BTreeMap<u32, sovra_api::v1::ReplicaStatus>>,
    /// The address each node's gang peers reach it at (from its registration).
    pub addresses: BTreeMap<String, String>,
    /// What each node's daemon enforces on the jobs it runs (from its registration).
    pub isolation: BTreeMap<String, String>,
    /// Why a job's replicas were withdrawn, noted when it happened (preempted by …, node lost) for the next
    /// assignment sets.
    pub stop_why: BTreeMap<JobId, String>,
    /// Every assignment set must be rebuilt (after the engine was reloaded from the store).
    pub redispatch: bool,
    /// The signing key, the audit head and what each placed job was last receipted as.
    pub receipts: super::receipts::Receipts,
}

fn send<T>(tx: oneshot::Sender<Result<T, Status>>, v: Result<T, Status>) {
    let _ = tx.send(v);
}

/// Answers a request with an error.
fn refuse(reply: ReplyTx, status: Status) {
    match reply {
        ReplyTx::Submit(tx) => send(tx, Err(status)),
        ReplyTx::Job(tx) => send(tx, Err(status)),
        ReplyTx::Registered(tx) => send(tx, Err(status)),
        ReplyTx::Names(tx) => send(tx, Err(status)),
        ReplyTx::Reload(tx) => send(tx, Err(status)),
        ReplyTx::Unit(Some(tx)) => send(tx, Err(status)),
        ReplyTx::Unit(None) => {}
    }
}

/// The message of a request that panicked.
fn panicked() -> Status {
    Status::internal(
        "the request failed inside the scheduler (a bug, logged with its details); nothing it asked for was \
         applied and the scheduler goes on; retrying the same request will fail the same way",
    )
}

impl Writer {
    /// Runs rounds until told to stop or every sender is gone; runs the liveness check every quarter interval.
    pub fn run(mut self, rx: Receiver<Msg>) {
        let tick = (self.opts.heartbeat / 4).max(std::time::Duration::from_millis(1));
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut work = Vec::new();
            let mut stop = false;
            match rx.recv_timeout(wait) {
                Ok(Msg::Work(e)) => work.push(e),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            while !stop && work.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Msg::Work(e)) => work.push(e),
                    Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => stop = true,
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            let sweep = now >= next_tick;
            if sweep {
                next_tick = now + tick;
            }
            if !work.is_empty() || sweep {
                // Requests that panic are isolated inside the round; this catches a bug in writing, publishing or
                // answering: the round's callers see the writer gone (UNAVAILABLE), and the writer starts again
                // from the store.
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| self.round(work, sweep.then_some(now))));
                if let Err(p) = r {
                    tracing::error!(panic = %panic_text(&p), "a round panicked outside its requests; reloading");
                    self.metrics.panics.inc();
                    self.reload_from_store();
                }
            }
            if stop {
                return;
            }
        }
    }

    /// One group commit: apply, cycle, write, publish, answer.
    fn round(&mut self, work: Vec<Envelope>, sweep: Option<Instant>) {
        if let Some(why) = self.stopped.clone() {
            for e in work {
                refuse(e.reply, Self::stopped_status(&why));
            }
            return;
        }
        let reqs: Vec<Req> = work.iter().map(|e| e.req.clone()).collect();
        let (outcomes, changes) = self.apply_all(&reqs, sweep);
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let touched = changes.jobs.iter().chain(&changes.archive).copied();
        let receipts = self.receipts.round(&self.engine, &self.base, touched, &changes.audit, now_ms);
        let mut batch = Batch {
            jobs: changes.jobs.iter().filter_map(|id| self.engine.job(*id).cloned()).collect(),
            archive: changes.archive.clone(),
            nodes: changes.nodes.iter().filter_map(|n| self.reported.get(n).map(|r| (n.clone(), r.clone()))).collect(),
            events: changes.events.clone(),
            audit: Vec::new(),
        };
        let receipts = receipts.map(|mut r| {
            batch.audit = std::mem::take(&mut r.entries);
            r
        });
        let written = if let Err(e) = &receipts {
            // Fail closed: a change that cannot be receipted is not made durable.
            Err(crate::store::StoreError::Backend(format!("cannot sign the round's placement receipts: {e}")))
        } else if batch.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let written = self.store.commit(&batch);
            self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.commits.inc();
            self.metrics.commit_requests.observe(work.len() as f64);
            written
        };
        if let Err(e) = written {
            let why: Arc<str> = format!(
                "the {} store failed to write ({e}); nothing since its last successful write was acknowledged. \
                 The scheduler stopped taking changes: fix the disk and restart it",
                self.store.backend()
            )
            .into();
            tracing::error!(error = %e, "store write failed: the scheduler stops taking changes");
            self.stopped = Some(why.clone());
            let mut s = Snapshot::clone(&self.snap.load());
            s.stopped = Some(why.clone());
            self.snap.store(Arc::new(s));
            for e in work {
                refuse(e.reply, Self::stopped_status(&why));
            }
            return;
        }
        if let Ok(r) = receipts {
            self.receipts.commit_written(r, &batch.audit);
        }
        self.publish(&changes);
        let all = std::mem::take(&mut self.redispatch);
        let touched: BTreeSet<JobId> = changes.jobs.iter().chain(&changes.archive).copied().collect();
        self.dispatch(&touched, all);
        for (e, outcome) in work.into_iter().zip(outcomes) {
            self.answer(e.reply, outcome);
        }
    }

    fn stopped_status(why: &str) -> Status {
        Status::unavailable(why.to_string())
    }

    /// Applies a round's requests (then the liveness check, retention and one cycle), isolating panics: a request
    /// that panics is answered INTERNAL, the engine is rebuilt from the store, and the others are applied again.
    fn apply_all(&mut self, reqs: &[Req], sweep: Option<Instant>) -> (Vec<Result<Outcome, Status>>, Changes) {
        let mut poisoned: BTreeSet<usize> = BTreeSet::new();
        let mut recovering = false;
        loop {
            if recovering && let Err(e) = self.recover() {
                // The store cannot be read back: stop taking changes rather than go on from an unknown state.
                self.stopped = Some(format!("after a failed request the state could not be reloaded: {e}").into());
                let why = self.stopped.clone().unwrap_or_else(|| "stopped".into());
                return ((0..reqs.len()).map(|_| Err(Self::stopped_status(&why))).collect(), Changes::default());
            }
            let mut changes = Changes::default();
            let mut outcomes = Vec::with_capacity(reqs.len());
            let mut failed_at = None;
            for (i, req) in reqs.iter().enumerate() {
                if poisoned.contains(&i) {
                    outcomes.push(Err(panicked()));
                    continue;
                }
                match std::panic::catch_unwind(AssertUnwindSafe(|| self.apply(req, &mut changes))) {
                    Ok(o) => outcomes.push(o),
                    Err(p) => {
                        tracing::error!(request = ?req, panic = %panic_text(&p), "a request panicked in the writer");
                        self.metrics.panics.inc();
                        failed_at = Some(i);
                        break;
                    }
                }
            }
            if let Some(i) = failed_at {
                poisoned.insert(i);
                recovering = true;
                continue;
            }
            let rest = std::panic::catch_unwind(AssertUnwindSafe(|| {
                if let Some(now) = sweep {
                    self.sweep(now, &mut changes);
                }
                self.retire(&mut changes);
                self.expire_exceptions(&mut changes);
                if changes.cycle {
                    self.cycle(&mut changes);
                }
            }));
            if let Err(p) = rest {
                tracing::error!(panic = %panic_text(&p), "the scheduling cycle panicked; this round is refused");
                if poisoned.len() == reqs.len() {
                    // Nothing left to try: answer everything as failed, from the last committed state.
                    let _ = self.recover();
                    return ((0..reqs.len()).map(|_| Err(panicked())).collect(), Changes::default());
                }
                poisoned.extend(0..reqs.len());
                recovering = true;
                continue;
            }
            return (outcomes, changes);
        }
    }

    /// Rebuilds the engine and the node inventories from the store: the last committed state.
    fn recover(&mut self) -> Result<(), String> {
        let records = self.store.load().map_err(|e| e.to_string())?;
        let nodes = self.store.load_nodes().map_err(|e| e.to_string())?;
        let enrolled: BTreeSet<&str> = self.base.nodes.iter().map(|n| n.name.as_str()).collect();
        self.reported = nodes.into_iter().filter(|(n, _)| enrolled.contains(n.as_str())).collect();
        self.cluster = overlay(&self.base, &self.reported);
        let (mut engine, _) =
            Engine::restore(&self.cluster, queues_of(&self.base), self.policy.clone(), self.seed, records)
                .map_err(|e| e.to_string())?;
        let m = self.store.manifest();
        engine.continue_after(m.last_id, m.last_seq);
        // Nodes that were NotReady in the committed state stay so.
        let snap = self.snap.load_full();
        engine.nodes_lost(snap.nodes.iter().filter(|(_, v)| !v.info.ready).map(|(name, _)| name.as_str()));
        engine.set_models(self.engine.models().clone());
        let head = self.store.audit_head().map_err(|e| e.to_string())?;
        let store = self.store.clone();
        let key = self.receipts.key().clone();
        self.receipts =
            super::receipts::Receipts::new(key, head, &engine, |id| super::receipts::started_at(store.as_ref(), id));
        self.engine = engine;
        self.generation = 0; // views are rebuilt at the next publish
        self.redispatch = true;
        Ok(())
    }

    /// After a panic outside the requests: the engine from the store, and a snapshot rebuilt from scratch (its
    /// revision continues; watches resume only from after it).
    fn reload_from_store(&mut self) {
        if let Err(e) = self.recover() {
            self.stopped = Some(format!("after a failure the state could not be reloaded: {e}").into());
        }
        let after = self.snap.load().revision + 1;
        let mut s = self.initial_snapshot();
        s.revision = s.revision.max(after);
        s.compacted = s.revision;
        s.stopped = self.stopped.clone();
        self.snap.store(Arc::new(s));
    }

    /// Runs one scheduling cycle, counting what it did.
    fn cycle(&mut self, changes: &mut Changes) {
        let started = Instant::now();
        // The engine reads no clock: preemption records carry the wall clock, in milliseconds since 1970.
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let events = self.engine.schedule_at(now_ms);
        self.metrics.decision_seconds.observe(started.elapsed().as_secs_f64());
        for e in &events {
            match e {
                sovra_engine::Event::Placed { job } => {
                    self.metrics.placements.inc();
                    changes.jobs.insert(*job);
                }
                sovra_engine::Event::Preempted { job, by, record } => {
                    self.metrics.preemptions.inc();
                    self.stop_why.insert(*job, format!("preempted by job {by}"));
                    changes.jobs.insert(*job);
                    changes.events.push(record.to_string());
                }
                sovra_engine::Event::Reserved { job, .. } => {
                    changes.jobs.insert(*job);
                }
            }
        }
    }

    /// Retention: finished jobs older than the retention period leave the hot state (archived by this round).
    fn retire(&mut self, changes: &mut Changes) {
        let now = Instant::now();
        for id in &changes.jobs {
            if self.engine.job(*id).is_some_and(|r| r.state.is_final()) && self.finished_ids.insert(*id) {
                self.finished.push_back((now, *id));
            }
        }
        let Some(retain) = self.opts.retain_finished else { return };
        while let Some(&(at, id)) = self.finished.front() {
            if now.saturating_duration_since(at) < retain || changes.archive.len() >= MAX_BATCH {
                break;
            }
            self.finished.pop_front();
            self.finished_ids.remove(&id);
            if self.engine.job(id).is_some_and(|r| r.state.is_final()) && self.engine.forget(id).is_some() {
                changes.archive.push(id);
            }
        }
    }

    /// Answers one request from the published state.
    fn answer(&self, reply: ReplyTx, outcome: Result<Outcome, Status>) {
        let snap = self.snap.load();
        match (reply, outcome) {
            (reply, Err(s)) => refuse(reply, s),
            (ReplyTx::Submit(tx), Ok(Outcome::Job(id))) => {
                let state = snap.jobs.get(&id).map(|j| j.state.clone()).unwrap_or_default();
                send(tx, Ok(SubmitResponse { id, state }));
            }
            (ReplyTx::Job(tx), Ok(Outcome::Job(id))) => send(
                tx,
                snap.jobs.get(&id).map(|j| JobInfo::clone(j)).ok_or_else(|| Status::not_found(format!("no job {id}"))),
            ),
            (ReplyTx::Registered(tx), Ok(Outcome::Registered(session, r))) => send(tx, Ok((session, r))),
            (ReplyTx::Names(tx), Ok(Outcome::Names(n))) => send(tx, Ok(n)),
            (ReplyTx::Reload(tx), Ok(Outcome::Reload(r))) => send(tx, Ok(r)),
            (ReplyTx::Unit(Some(tx)), Ok(_)) => send(tx, Ok(())),
            (ReplyTx::Unit(None), Ok(_)) => {}
            (reply, Ok(_)) => refuse(reply, Status::internal("the scheduler answered a request with the wrong kind")),
        }
    }
}

/// The text of a caught panic.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
