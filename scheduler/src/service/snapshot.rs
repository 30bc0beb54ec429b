//! What readers see: an immutable [`Snapshot`] of the committed state, swapped in (`arc-swap`) by the writer after
//! each group commit, and the daemons' liveness cells, which report streams update without the writer.
//!
//! Readers (get, list, watch, nodes, pools, queues, metrics) load the current snapshot — one atomic pointer read —
//! and never wait for a scheduling cycle or a disk flush. Jobs and nodes are persistent maps (`imbl`): the writer
//! changes only what a batch touched, and publishing a snapshot copies nothing else.

use sovra_api::v1::{JobInfo, NodeInfo, PoolInfo, QueueInfo};
use sovra_domain::ClusterConfig;
use sovra_engine::JobId;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A node as readers see it, with the figures the metrics and the pools view add up.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeView {
    /// The view (`connected` and `heartbeat_age_ms` are filled at read time from the liveness cell).
    pub info: NodeInfo,
    /// Index of its pool in [`Snapshot::pools`].
    pub pool: usize,
    /// GPU milli free on ready, healthy devices.
    pub free_milli: u64,
    /// GPU milli not used but not available (unhealthy devices, or the node is not ready).
    pub unavailable_milli: u64,
}

/// The committed state at one revision.
#[derive(Clone)]
pub(crate) struct Snapshot {
    /// Increases with every group commit that changed something.
    pub revision: u64,
    /// Watches cannot resume from revisions below this one: jobs finished before it may have been archived.
    pub compacted: u64,
    /// Jobs in the hot state, by id (each with the revision that last changed it).
    pub jobs: imbl::OrdMap<JobId, Arc<JobInfo>>,
    /// Nodes, by name.
    pub nodes: imbl::OrdMap<String, Arc<NodeView>>,
    /// Pools, in the cluster file's order, with their used milli.
    pub pools: Arc<Vec<PoolInfo>>,
    /// Per pool (same order): GPU milli free, used, unavailable.
    pub pool_milli: Arc<Vec<[u64; 3]>>,
    /// Queues with their figures.
    pub queues: Arc<Vec<QueueInfo>>,
    /// The cluster as loaded (zones, classes, enrolment): what submitted jobs are validated against (a job's
    /// validity depends only on the residency classes, which reported GPUs never change).
    pub base: Arc<ClusterConfig>,
    /// Set when the writer stopped taking changes (the store failed): why. Reads still work; writes are refused.
    pub stopped: Option<Arc<str>>,
}

/// One daemon's liveness, updated by its report stream without the writer.
#[derive(Debug, Default)]
pub(crate) struct LiveCell {
    /// The current report stream (a newer stream replaces an older one).
    pub session: AtomicU64,
    /// A report stream is open.
    pub connected: AtomicBool,
    /// Milliseconds after the service's start of the last message; 0 when none was received.
    pub last_seen_ms: AtomicU64,
}

impl LiveCell {
    /// Records a message at `now`.
    pub fn seen(&self, clock: &Clock, now: Instant) {
        self.last_seen_ms.store(clock.ms(now), Ordering::Relaxed);
    }

    /// Milliseconds since the last message at `now`; `None` when none was received.
    pub fn age_ms(&self, clock: &Clock, now: Instant) -> Option<u64> {
        match self.last_seen_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(clock.ms(now).saturating_sub(t)),
        }
    }
}

/// The daemons' liveness cells, by node name (only nodes a daemon reported for, or all with `require_daemons`).
pub(crate) type LiveMap = imbl::OrdMap<String, Arc<LiveCell>>;

/// Milliseconds since the service started (never 0, so that 0 can mean "never").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock { start: Instant::now() }
    }

    /// `now` in milliseconds since the start, at least 1.
    pub fn ms(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_millis() as u64).max(1)
    }
}

impl Snapshot {
    /// A node's view as a reader gets it: the liveness fields filled from `live` at `now`.
    pub fn node_info(&self, view: &NodeView, live: &LiveMap, clock: &Clock, now: Instant) -> NodeInfo {
        let mut info = view.info.clone();
        if let Some(cell) = live.get(&info.name) {
            info.connected = cell.connected.load(Ordering::Relaxed);
            info.heartbeat_age_ms = cell.age_ms(clock, now).unwrap_or(0);
        }
        info
    }
}
