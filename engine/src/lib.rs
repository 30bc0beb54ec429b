//! The scheduling engine: jobs, queues and their lifecycle around the pure placement core. In-memory and
//! deterministic; the service (gRPC, sled, liveness) drives it, and the simulator shares its rules.
//!
//! **Pure.** Like the placement core, this crate does no I/O: no async runtime, RPC, Kubernetes or storage crate
//! is in its dependency tree, and it reads no clock — anything that depends on time gets the time from its caller
//! (the service's wall clock, the simulator's simulated one). `tests/purity.rs` walks `cargo metadata` and scans
//! this crate's source to keep it so.
//!
//! **Lifecycle.** pending → placed → running → succeeded | failed | cancelled; *lost* when a node disappears,
//! then pending again (requeued); *refused* at submit when no permitted pool could ever hold the job.
//!
//! **Order** of a scheduling cycle: priority (higher first), then fair share, then submission order (FIFO). Fair
//! share is DRF — Dominant Resource Fairness (Ghodsi et al., NSDI'11): a queue's dominant share is the largest of
//! its GPU, CPU and memory usage as fractions of the cluster, divided by the queue's weight; among equal
//! priorities the queue with the smallest dominant share goes first, so shares converge to the weights.
//!
//! **Quotas**: a queue may cap the GPU milli it holds per pool; nodes of pools where a job would exceed its queue's
//! quota are excluded for that job.
//!
//! **Gangs** are placed whole by the core or not at all; nothing here ever holds part of a gang.
//!
//! **Preemption** (of whole gangs only): when a job fits nowhere, running gangs of strictly lower priority are
//! considered victims, lowest priority and most recent first; victims are released on a scratch copy of the state
//! until the job fits, then any victim whose release turns out unnecessary is spared. If the job still does not fit
//! with every candidate released, nothing is preempted. Preempted gangs go back to pending.
//!
//! **Backfill with a reservation**: the first job of a cycle that fits nowhere (and cannot preempt) gets a
//! reservation — the nodes it would use if every running job of its priority or lower had finished. Later, lower-
//! ranked jobs of the same cycle may start only on other nodes, so capacity freed on the reserved nodes accumulates
//! for the waiting job instead of being taken by a stream of small ones (no starvation), while idle capacity
//! elsewhere is still used (backfill).
//!
//! **Why a job waits** (`explain.rs`, `blocking.rs`): besides the placement core's [`Explanation`], each time a
//! cycle tries or skips a pending job it sets the job's [`JobRecord::blockers`], structured and with numbers — its
//! queue's [`Blocker::Quota`] in each pool the job may use that the quota closes (or a placement found would
//! overrun), a [`Blocker::Reservation`] only when the job would have started had the reserved nodes not been
//! excluded, and always its [`Blocker::Position`] in its queue. [`Blocker`]'s `Display` is the one wording for
//! people (`sovra job --explain`); everything else reads the fields.
//!
//! **Preemption records**: each preemption leaves a [`PreemptionRecord`] (who, by whom, both priorities, when,
//! GPU milli and devices freed, nodes) on the victim — the last [`MAX_PREEMPTION_RECORDS`] — and in
//! [`Event::Preempted`]. The time is the caller's: [`Engine::set_now`] (or [`Engine::schedule_at`]) sets it,
//! [`Engine::schedule`] stamps the last time set.
//!
//! **Invariants** checked after every step of random lifecycles by `tests/properties.rs`: no device over 1000
//! milli and the state agreeing with the placements, no partial gang, every replica in a zone of its class and a
//! pool of its kind, no acknowledged job lost across rebuilds and restarts.

use sovra_domain::{ClusterConfig, Job, PolicySpec, WorkloadShare};
use sovra_placement::{ClusterState, Decision, Explanation, Placer, Verdict};
use std::collections::BTreeMap;

mod blocking;
mod cycle;
mod exceptions;
pub use exceptions::Expired;
mod explain;
mod models;
mod nodes;
mod retention;
mod types;

pub use explain::*;
pub use types::*;

/// The engine.
pub struct Engine {
    state: ClusterState,
    placer: Placer,
    jobs: BTreeMap<JobId, JobRecord>,
    queues: BTreeMap<String, QueueSpec>,
    requests: BTreeMap<String, JobId>,
    next_id: JobId,
    next_seq: u64,
    /// Cluster totals (GPU milli, CPU milli, memory MiB) for DRF.
    totals: [f64; 3],
    /// The cluster with nothing in use, for "could it ever fit?" at submit.
    empty: ClusterState,
    /// Submit verdicts per job shape: the refusal explanation, or `None` when it can fit some day. Only the
    /// topology (fixed for an engine) and the shape decide it.
    verdicts: BTreeMap<String, Option<Explanation>>,
    /// Something was released since the last full cycle: the next cycle must look at every pending job.
    dirty: bool,
    /// Jobs submitted since the last cycle (never tried yet).
    untried: Vec<JobId>,
    /// The reservation standing since the last cycle: (job, priority, submission, reserved nodes).
    reservation: Option<(JobId, i32, u64, Vec<bool>)>,
    /// The policy and seed the placer was built with (kept for [`Engine::rebuild`]).
    policy: PolicySpec,
    seed: u64,
    /// The caller's time, milliseconds (see [`Engine::set_now`]).
    now_ms: u64,
    /// What each queue holds (GPU milli, CPU, memory; GPU milli per pool), kept up to date as jobs start and are
    /// released, so that a cycle does not add it up from every job again.
    held: Usage,
    /// Where model versions are available for inference (kept across [`Engine::rebuild`]).
    models: std::sync::Arc<sovra_domain::ModelAvailability>,
    /// The jobs holding a placement exception (so that expiry costs those, not every job).
    excepted: std::collections::BTreeSet<JobId>,
}

/// Per queue: (GPU milli, CPU, memory) held, and GPU milli held per pool.
type Usage = BTreeMap<String, ([u64; 3], BTreeMap<String, u64>)>;

/// A job's *shape*: everything about it that decides whether and where the placement core can place it — kind,
/// residency class, replicas, resources and NVLink wish — and nothing that does not (name, queue, priority). Two
/// jobs with equal keys fit or fail alike on a given cluster state, so a scheduler may skip a job whose shape has
/// just failed. The engine caches submit verdicts and skips retries by it; the simulator's replay skips retries by
/// this same function, so the two cannot drift apart.
pub fn shape_key(job: &Job) -> String {
    serde_json::to_string(&(&job.kind, &job.residency, job.replicas, &job.resources, &job.nvlink, &job.model))
        .unwrap_or_default()
}

/// Whether a stored placement may be kept on `topo`: every replica on the same node, still in the same pool and
/// zone, and that zone still satisfies the job's class (a reloaded file or a changed node may have moved a node or
/// changed a zone) — never keep a job outside its zones.
pub(crate) fn still_permitted(topo: &sovra_placement::Topology, job: &Job, d: &Decision) -> bool {
    let class = topo.class(&job.residency);
    d.replicas.iter().all(|p| {
        topo.node_index(&p.node_name) == Some(p.node) && {
            let pool = &topo.pools[topo.nodes[p.node as usize].pool as usize];
            let zone = &topo.zones[pool.zone];
            pool.id == p.pool
                && zone.id == p.zone
                && class.is_some_and(|c| sovra_domain::waiver::permits(zone, c, job.exception.as_ref()))
        }
    })
}

/// The cluster's queues as the engine takes them: its `queues:`, or one `default` queue when it has none (a
/// cluster built in code). The scheduler service and the simulator's replay both build their engine with these.
pub fn queues_of(cluster: &ClusterConfig) -> Vec<QueueSpec> {
    let mut queues: Vec<QueueSpec> = cluster
        .queues
        .iter()
        .map(|q| QueueSpec { name: q.name.clone(), weight: q.weight, quota_milli: q.quota_milli.clone() })
        .collect();
    if queues.is_empty() {
        queues.push(QueueSpec::new("default"));
    }
    queues
}

/// Adds the nodes of `reserved` to an exclusion mask (creating it if there is none).
fn exclude(mask: &mut Option<Vec<bool>>, reserved: &[bool]) {
    let m = mask.get_or_insert_with(|| vec![false; reserved.len()]);
    for (x, &y) in m.iter_mut().zip(reserved) {
        *x |= y;
    }
}

/// Adds (or, with `sign` < 0, removes) a decision's takings to its queue's usage.
fn account(usage: &mut Usage, queue: &str, d: &Decision, sign: i64) {
    let e = usage.entry(queue.to_string()).or_default();
    let apply = |x: &mut u64, v: u64| *x = if sign > 0 { *x + v } else { x.saturating_sub(v) };
    for p in &d.replicas {
        let milli: u64 = p.devices.iter().map(|a| u64::from(a.milli)).sum();
        apply(&mut e.0[0], milli);
        apply(&mut e.0[1], p.cpu_milli);
        apply(&mut e.0[2], p.memory_mib);
        apply(e.1.entry(p.pool.clone()).or_default(), milli);
    }
}

impl Engine {
    /// An engine over a validated cluster, with its queues.
    pub fn new(
        cluster: &ClusterConfig,
        queues: Vec<QueueSpec>,
        policy: PolicySpec,
        seed: u64,
    ) -> Result<Engine, EngineError> {
        let state = ClusterState::from_config(cluster)?;
        let t = state.topology();
        let totals = [
            t.total_gpu_milli().max(1) as f64,
            t.nodes.iter().map(|n| n.cpu_milli).sum::<u64>().max(1) as f64,
            t.nodes.iter().map(|n| n.memory_mib).sum::<u64>().max(1) as f64,
        ];
        let workload: &[WorkloadShare] = &cluster.scheduling.fgd_target_workload;
        let empty = ClusterState::with_health(state.topology().clone(), vec![true; state.topology().devices.len()]);
        Ok(Engine {
            policy: policy.clone(),
            seed,
            empty,
            verdicts: BTreeMap::new(),
            dirty: true,
            untried: Vec::new(),
            reservation: None,
            state,
            placer: Placer::new(policy, seed)
                .with_target_workload(workload)
                .with_max_feasible_nodes(cluster.scheduling.max_feasible_nodes),
            jobs: BTreeMap::new(),
            queues: queues.into_iter().map(|q| (q.name.clone(), q)).collect(),
            requests: BTreeMap::new(),
            next_id: 1,
            next_seq: 1,
            totals,
            now_ms: 0,
            held: Usage::new(),
            models: std::sync::Arc::default(),
            excepted: std::collections::BTreeSet::new(),
        })
    }

    /// Rebuilds an engine from persisted records (a restart): placements of jobs that held resources are
    /// re-applied — all replicas or none — and a job whose placement no longer fits the configuration (nodes
    /// removed or changed) is requeued. Ids, submission order and request ids continue where they were.
    pub fn restore(
        cluster: &ClusterConfig,
        queues: Vec<QueueSpec>,
        policy: PolicySpec,
        seed: u64,
        records: Vec<JobRecord>,
    ) -> Result<(Engine, Vec<JobId>), EngineError> {
        let mut e = Engine::new(cluster, queues, policy, seed)?;
        let mut requeued = Vec::new();
        for mut r in records {
            e.next_id = e.next_id.max(r.id + 1);
            e.next_seq = e.next_seq.max(r.seq + 1);
            if let Some(req) = &r.request_id {
                e.requests.insert(req.clone(), r.id);
            }
            if r.state.holds_resources() {
                // Nodes are found by name: a file that gained, lost or reordered nodes moves the others' indices,
                // and a placement on a node that is still there, unchanged, is kept (device indices are per node).
                if let Some(d) = &mut r.placement {
                    for p in &mut d.replicas {
                        if let Some(j) = e.state.topology().node_index(&p.node_name) {
                            p.node = j;
                        }
                    }
                }
                let fits = r
                    .placement
                    .as_ref()
                    .is_some_and(|d| still_permitted(e.state.topology(), &r.job, d) && e.state.apply(d).is_ok());
                if !fits {
                    r.placement = None;
                    r.state = JobState::Pending;
                    requeued.push(r.id);
                } else if let Some(d) = &r.placement {
                    account(&mut e.held, &r.job.queue, d, 1);
                }
            } else {
                r.placement = None;
            }
            if r.state != JobState::Refused {
                e.placer.observe_admitted(&r.job);
            }
            if r.job.exception.is_some() {
                e.excepted.insert(r.id);
            }
            e.jobs.insert(r.id, r);
        }
        // The clock continues from the latest time the records hold (the caller sets it before its next cycle).
        e.now_ms = e.jobs.values().flat_map(|r| &r.preemption_records).map(|p| p.at_ms).max().unwrap_or(0);
        Ok((e, requeued))
    }

    /// Continues job ids after `last_id` and submission numbers after `last_seq` (what the store's manifest
    /// records): ids of jobs a damaged store lost are never given again.
    pub fn continue_after(&mut self, last_id: JobId, last_seq: u64) {
        self.next_id = self.next_id.max(last_id.saturating_add(1));
        self.next_seq = self.next_seq.max(last_seq.saturating_add(1));
    }

    /// Rebuilds the engine over a changed cluster (a node reported different GPUs, or the configuration was
    /// reloaded), keeping every job, the policy, the seed and which nodes are not ready. Placements are re-applied
    /// whole; jobs whose placement no longer fits are requeued and returned. Costs O(nodes + jobs): for one node
    /// enrolling, changing or leaving use [`Engine::upsert_node`] / [`Engine::remove_node`] (O(that node)).
    pub fn rebuild(&mut self, cluster: &ClusterConfig, queues: Vec<QueueSpec>) -> Result<Vec<JobId>, EngineError> {
        let records: Vec<JobRecord> = self.jobs.values().cloned().collect();
        let (mut next, requeued) = Engine::restore(cluster, queues, self.policy.clone(), self.seed, records)?;
        let old = self.state.topology().clone();
        for (i, n) in old.nodes.iter().enumerate() {
            if !self.state.node_ready(i as u32)
                && let Some(j) = next.state.topology().node_index(&n.name)
            {
                next.state.set_node_ready(j, false);
            }
        }
        next.placer.set_models(self.models.clone());
        next.models = self.models.clone();
        next.next_id = next.next_id.max(self.next_id);
        next.next_seq = next.next_seq.max(self.next_seq);
        next.dirty = true;
        *self = next;
        Ok(requeued)
    }

    /// Marks the devices of GPU `gpu` (its MIG instances, or the GPU itself) of `node` healthy or not. Work already
    /// on them stays (the job's own runner reports whether it survived); nothing new is placed on an unhealthy
    /// device. Returns whether any device changed.
    pub fn set_gpu_health(&mut self, node: &str, gpu: u32, healthy: bool) -> bool {
        let Some(idx) = self.state.topology().node_index(node) else { return false };
        let topo = self.state.topology().clone();
        let mut changed = false;
        for d in topo.device_range(idx) {
            if u32::from(topo.devices[d].gpu) == gpu && self.state.device_healthy(d) != healthy {
                self.state.set_device_health(d, healthy);
                changed = true;
            }
        }
        if changed && healthy {
            self.dirty = true;
        }
        changed
    }

    /// Sets the time, in milliseconds of the caller's clock (the service's wall clock since the Unix epoch, the
    /// simulator's simulated time), that the following cycles stamp on what they record (preemption records).
    /// The engine reads no clock: until this is called the time is 0, and after [`Engine::restore`] (and so
    /// [`Engine::rebuild`]) it is the latest time found in the jobs' records, so a caller that cares about the
    /// time sets it before each cycle (or calls [`Engine::schedule_at`]). The value is taken as given.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// The time last set with [`Engine::set_now`] (see there).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Sets the time ([`Engine::set_now`]) and runs one cycle ([`Engine::schedule`]).
    pub fn schedule_at(&mut self, now_ms: u64) -> Vec<Event> {
        self.set_now(now_ms);
        self.schedule()
    }

    /// The queues with their figures, by name.
    pub fn queue_stats(&self) -> Vec<QueueStat> {
        let usage = &self.held;
        // One pass over the jobs: (pending, holding resources) per queue.
        let mut counts: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
        for r in self.jobs.values() {
            let c = counts.entry(r.job.queue.as_str()).or_default();
            c.0 += u32::from(r.state == JobState::Pending);
            c.1 += u32::from(r.state.holds_resources());
        }
        self.queues
            .values()
            .map(|q| {
                let (pending, running) = counts.get(q.name.as_str()).copied().unwrap_or_default();
                QueueStat {
                    spec: q.clone(),
                    pending,
                    running,
                    gpu_milli_held: usage.get(&q.name).map_or(0, |u| u.0[0]),
                    share: self.dominant_share(&q.name, usage),
                }
            })
            .collect()
    }

    /// The cluster state (what is in use).
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// A job.
    pub fn job(&self, id: JobId) -> Option<&JobRecord> {
        self.jobs.get(&id)
    }

    /// All jobs, by id.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    /// Submits a job. With a `request_id` seen before, returns the job submitted then (idempotent). A job that no
    /// permitted pool could ever hold is recorded as refused and reported as an error with the explanation.
    pub fn submit(&mut self, job: Job, request_id: Option<String>) -> Result<JobId, SubmitError> {
        if let Some((r, &id)) = request_id.as_ref().and_then(|r| self.requests.get(r).map(|id| (r, id))) {
            let Some(first) = self.jobs.get(&id) else { return Ok(id) };
            let (first_digest, digest) = (spec_digest(&first.job), spec_digest(&job));
            if first_digest == digest {
                return Ok(id);
            }
            return Err(SubmitError::RequestReused { request_id: r.clone(), id, first_digest, digest });
        }
        if !self.queues.contains_key(&job.queue) {
            let known = self.queues.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(SubmitError::UnknownQueue { queue: job.queue.clone(), known });
        }
        let id = self.next_id;
        self.next_id += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        // Refuse what could never fit: the core's explanation on the empty cluster says so (cached per shape).
        let key = shape_key(&job);
        let verdict = match self.verdicts.get(&key) {
            Some(v) => v.clone(),
            None => {
                let v = match self.placer.verdict(&self.empty, &job) {
                    Verdict::Unresolvable(e) => Some(e),
                    Verdict::Fit(_) | Verdict::Unschedulable(_) => None,
                };
                self.verdicts.insert(key, v.clone());
                v
            }
        };
        let (state, explanation) = match verdict {
            Some(mut e) => {
                e.job = job.name.clone();
                (JobState::Refused, Some(e))
            }
            None => (JobState::Pending, None),
        };
        if let Some(r) = &request_id {
            self.requests.insert(r.clone(), id);
        }
        let refused = explanation.clone();
        if state == JobState::Pending {
            self.untried.push(id);
            // Admitted: the learned FGD mix counts each admitted job once, not each placement attempt.
            self.placer.observe_admitted(&job);
        }
        self.jobs.insert(
            id,
            JobRecord {
                id,
                request_id,
                job,
                state,
                seq,
                placement: None,
                explanation,
                preemptions: 0,
                losses: 0,
                blockers: Vec::new(),
                preemption_records: Vec::new(),
                attempt: 0,
                ended_reason: None,
            },
        );
        match refused {
            Some(e) => Err(SubmitError::Refused { id, explanation: Box::new(e) }),
            None => Ok(id),
        }
    }

    pub(crate) fn release(&mut self, id: JobId) {
        if let Some(rec) = self.jobs.get_mut(&id)
            && let Some(d) = rec.placement.take()
        {
            self.state.release(&d);
            account(&mut self.held, &rec.job.queue, &d, -1);
            self.dirty = true;
        }
    }

    /// Cancels a job; its resources are released. Unknown or final jobs are an error.
    pub fn cancel(&mut self, id: JobId) -> Result<(), JobError> {
        let state = self.jobs.get(&id).map(|r| r.state).ok_or(JobError::NoSuchJob { id })?;
        if state.is_final() {
            return Err(JobError::WrongState { id, state, expected: "pending, placed or running" });
        }
        self.release(id);
        self.jobs.get_mut(&id).expect("checked above").state = JobState::Cancelled;
        Ok(())
    }

    /// Confirms a placed job is running.
    pub fn started(&mut self, id: JobId) -> Result<(), JobError> {
        match self.jobs.get_mut(&id) {
            Some(r) if r.state == JobState::Placed => {
                r.state = JobState::Running;
                Ok(())
            }
            Some(r) => Err(JobError::WrongState { id, state: r.state, expected: "placed" }),
            None => Err(JobError::NoSuchJob { id }),
        }
    }

    /// A job finished; its resources are released.
    pub fn finished(&mut self, id: JobId, success: bool) -> Result<(), JobError> {
        self.finished_because(id, success, None)
    }

    /// [`Engine::finished`], recording how it ended (kept on the record as [`JobRecord::ended_reason`]).
    pub fn finished_because(&mut self, id: JobId, success: bool, reason: Option<String>) -> Result<(), JobError> {
        match self.jobs.get(&id).map(|r| r.state) {
            Some(s) if s.holds_resources() => {
                self.release(id);
                let r = self.jobs.get_mut(&id).expect("checked");
                r.state = if success { JobState::Succeeded } else { JobState::Failed };
                r.ended_reason = reason;
                Ok(())
            }
            Some(state) => Err(JobError::WrongState { id, state, expected: "placed or running" }),
            None => Err(JobError::NoSuchJob { id }),
        }
    }

    /// A node disappeared (or stopped heartbeating): it receives no more work, and every job with a replica on it
    /// is released whole, counted as lost and requeued. Returns the lost jobs.
    pub fn node_lost(&mut self, node: &str) -> Vec<JobId> {
        self.nodes_lost([node])
    }

    /// [`Engine::node_lost`] for many nodes at once, with one pass over the jobs (a restart with
    /// `--require-daemons` marks every node lost: one call per node would scan every job once per node).
    pub fn nodes_lost<'a>(&mut self, nodes: impl IntoIterator<Item = &'a str>) -> Vec<JobId> {
        let mut gone = vec![false; self.state.topology().nodes.len()];
        for name in nodes {
            if let Some(idx) = self.state.topology().node_index(name) {
                self.state.set_node_ready(idx, false);
                gone[idx as usize] = true;
            }
        }
        let on_gone = |d: &Decision| d.replicas.iter().any(|p| gone.get(p.node as usize).copied().unwrap_or(false));
        let lost: Vec<JobId> =
            self.jobs.values().filter(|r| r.placement.as_ref().is_some_and(on_gone)).map(|r| r.id).collect();
        for &id in &lost {
            self.release(id);
            if let Some(r) = self.jobs.get_mut(&id) {
                r.losses += 1;
                r.state = JobState::Pending; // requeued: lost → pending
            }
        }
        lost
    }

    /// A node is back: it may receive work again.
    pub fn node_ready(&mut self, node: &str) {
        if let Some(idx) = self.state.topology().node_index(node) {
            self.state.set_node_ready(idx, true);
            self.dirty = true;
        }
    }
}
