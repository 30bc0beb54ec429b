//! What the core returns: a [`Decision`] (where every replica goes) or an [`Explanation`] (why not). Both are data;
//! formatting happens only when they are shown.

use crate::filter::Reason;
use crate::snapshot::NodeIdx;
use serde::{Deserialize, Serialize};
use sovra_domain::{Purpose, Resources, ScorerKind};
use std::fmt;

/// One device given to a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAssignment {
    /// Index of the device on its node (a GPU, or a MIG instance).
    pub device: u16,
    /// Milli-GPU taken on it.
    pub milli: u16,
}

/// Where one replica goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPlacement {
    /// Replica index within the gang.
    pub replica: u32,
    /// Dense node index in the topology.
    pub node: NodeIdx,
    /// Node name.
    pub node_name: String,
    /// Pool id.
    pub pool: String,
    /// Zone id.
    pub zone: String,
    /// Devices taken.
    pub devices: Vec<DeviceAssignment>,
    /// CPU taken, milli-cores.
    pub cpu_milli: u64,
    /// Memory taken, MiB.
    pub memory_mib: u64,
    /// Each scorer's score (0..=100) of the chosen node, and the weighted total.
    pub scores: ScoreBreakdown,
    /// How many nodes were feasible for this replica.
    pub feasible_nodes: u32,
}

/// Per-scorer scores of one node, as data for "why was it placed here".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreBreakdown {
    /// (scorer, weight, score 0..=100).
    pub parts: Vec<(ScorerKind, u32, u32)>,
    /// Σ weight × score.
    pub total: u64,
}

/// A placement of every replica of a job (a gang is all or nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The job's name.
    pub job: String,
    /// One entry per replica, in replica order.
    pub replicas: Vec<ReplicaPlacement>,
}

/// A filter of the pipeline, in the order they run (cheapest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilterKind {
    /// The pool's purpose must equal the job's kind. Evaluated once per pool.
    Purpose,
    /// The pool's zone must satisfy the job's residency class. Evaluated once per pool.
    Residency,
    /// An inference job naming a model (`model:`): the pool's zone must hold that version for inference
    /// (promoted, not withdrawn), as the model availability fact says. Evaluated once per pool.
    Model,
    /// The node must be ready and have enough healthy devices.
    Health,
    /// The node must have devices of an allowed model.
    GpuModel,
    /// The node must have the CPU and memory free.
    CpuMemory,
    /// The node must have the GPU capacity free (whole GPUs, a share, or an NVLink island).
    GpuCapacity,
}

impl FilterKind {
    /// Every filter, in pipeline order.
    pub const ALL: [FilterKind; 7] = [
        FilterKind::Purpose,
        FilterKind::Residency,
        FilterKind::Model,
        FilterKind::Health,
        FilterKind::GpuModel,
        FilterKind::CpuMemory,
        FilterKind::GpuCapacity,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            FilterKind::Purpose => "purpose",
            FilterKind::Residency => "residency",
            FilterKind::Model => "model",
            FilterKind::Health => "health",
            FilterKind::GpuModel => "gpu-model",
            FilterKind::CpuMemory => "cpu-memory",
            FilterKind::GpuCapacity => "gpu-capacity",
        }
    }

    /// Whether a rejection by this filter can go away as jobs end (capacity) or not (policy, hardware).
    pub fn is_resolvable(self) -> bool {
        matches!(self, FilterKind::Health | FilterKind::Model | FilterKind::CpuMemory | FilterKind::GpuCapacity)
    }
}

impl fmt::Display for FilterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why nodes were rejected, as data: which check, with the numbers it compared. Worded only for display
/// ([`fmt::Display`]), e.g. `fewer than 8 fully free GPUs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
#[non_exhaustive]
pub enum RejectReason {
    /// Pools of the other purpose than the job's kind.
    Purpose {
        /// How many pools.
        pools: u32,
        /// Their purpose.
        pool_purpose: Purpose,
        /// The job's kind.
        job_kind: Purpose,
    },
    /// The pools of a zone that fails the job's residency class.
    Residency {
        /// The zone.
        zone: String,
        /// The residency class.
        class: String,
        /// Which criterion of the class the zone fails, in words (from the residency check).
        failed: String,
    },
    /// The pools of a zone that does not hold the job's model version for inference (or no one can say).
    Model {
        /// The zone.
        zone: String,
        /// The job's model reference.
        model: String,
        /// Why, in words (where the version is available, or why that cannot be known).
        failed: String,
    },
    /// A node-level filter rejected the node for one replica asking `resources`.
    Node {
        /// The check that failed.
        reason: Reason,
        /// What one replica asks.
        resources: Resources,
    },
    /// A reason stored as words only, by a version before reasons were data (read back from old records).
    Worded {
        /// The words.
        text: String,
    },
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Purpose { pools, pool_purpose, job_kind } => {
                write!(f, "{pools} pool(s) are for {pool_purpose}, the job is {job_kind}")
            }
            RejectReason::Residency { failed, .. } | RejectReason::Model { failed, .. } => f.write_str(failed),
            RejectReason::Node { reason, resources } => f.write_str(&reason.describe_resources(resources)),
            RejectReason::Worded { text } => f.write_str(text),
        }
    }
}

/// How many nodes one reason rejected.
///
/// Serialised as `{"reason": <the words>, "detail": <the RejectReason>, "nodes": n}`: the words for readers that
/// only display (the remote CLI, people reading JSON), the data for everything else. Reading a record without
/// `detail` (written before reasons were data) keeps its words as [`RejectReason::Worded`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ReasonCountRepr", into = "ReasonCountRepr")]
pub struct ReasonCount {
    /// The reason.
    pub reason: RejectReason,
    /// Nodes rejected for it.
    pub nodes: u32,
}

/// [`ReasonCount`] on the wire and in stores.
#[derive(Serialize, Deserialize)]
struct ReasonCountRepr {
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<RejectReason>,
    nodes: u32,
}

impl From<ReasonCountRepr> for ReasonCount {
    fn from(r: ReasonCountRepr) -> ReasonCount {
        ReasonCount { reason: r.detail.unwrap_or(RejectReason::Worded { text: r.reason }), nodes: r.nodes }
    }
}

impl From<ReasonCount> for ReasonCountRepr {
    fn from(r: ReasonCount) -> ReasonCountRepr {
        ReasonCountRepr { reason: r.reason.to_string(), detail: Some(r.reason), nodes: r.nodes }
    }
}

/// What one filter rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterReport {
    /// The filter.
    pub filter: FilterKind,
    /// Nodes it rejected (each node is counted by the first filter that rejects it).
    pub rejected_nodes: u32,
    /// The reasons, most frequent first.
    pub reasons: Vec<ReasonCount>,
}

/// Why a job could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The job's name.
    pub job: String,
    /// One line: what failed and what would make it fit.
    pub summary: String,
    /// The replica that found no node (the gang was rolled back), or `None` when the job was refused before any
    /// node was looked at (bad request).
    pub failed_replica: Option<u32>,
    /// Replicas that had found a node before the failure (rolled back, holding nothing).
    pub replicas_placed_before_failure: u32,
    /// Nodes considered.
    pub total_nodes: u32,
    /// Per filter, in pipeline order: how many nodes it rejected and why.
    pub filters: Vec<FilterReport>,
    /// True when no change in cluster load could make it fit (only policy or hardware filters rejected nodes):
    /// such a job should be refused, not queued.
    pub unresolvable: bool,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "job {} cannot be placed: {}", self.job, self.summary)?;
        for r in &self.filters {
            if r.rejected_nodes == 0 {
                continue;
            }
            writeln!(f, "  {:<13} rejected {:>6} node(s)", r.filter.name(), r.rejected_nodes)?;
            for reason in &r.reasons {
                writeln!(f, "      {:>6} × {}", reason.nodes, reason.reason)?;
            }
        }
        Ok(())
    }
}

/// The outcome of placing one job.
pub type Outcome = Result<Decision, Explanation>;

/// The one verdict type of Sovra: a job (or one pod on one node) fits, cannot be placed *now* (it may fit when
/// capacity frees up: queue it), or can *never* be placed as configured (refuse it). The placement core decides
/// which; its callers — the scheduler service's engine, the simulator, the Kubernetes extender and `sovra place` —
/// use it as-is and never re-derive resolvability.
///
/// `Verdict` (the default parameters) is a job's verdict: the [`Decision`] or the [`Explanation`]. The extender's
/// per-node verdicts use `Verdict<(), R>` with the reason words kube-scheduler shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict", content = "detail")]
pub enum Verdict<T = Decision, R = Explanation> {
    /// It fits: where.
    Fit(T),
    /// Not now (capacity, readiness): why, and what would make it fit.
    Unschedulable(R),
    /// Never, as configured (policy, residency, hardware): why.
    Unresolvable(R),
}

impl Verdict {
    /// The verdict of a placement outcome: a failure is unresolvable when its explanation says no change in load
    /// could make it fit.
    pub fn of(outcome: Outcome) -> Verdict {
        match outcome {
            Ok(d) => Verdict::Fit(d),
            Err(e) if e.unresolvable => Verdict::Unresolvable(e),
            Err(e) => Verdict::Unschedulable(e),
        }
    }

    /// Back to a `Result` (the decision, or the explanation of either failure).
    pub fn into_outcome(self) -> Outcome {
        match self {
            Verdict::Fit(d) => Ok(d),
            Verdict::Unschedulable(e) | Verdict::Unresolvable(e) => Err(e),
        }
    }
}

impl<T, R> Verdict<T, R> {
    /// Whether it fits.
    pub fn is_fit(&self) -> bool {
        matches!(self, Verdict::Fit(_))
    }

    /// Whether it can never fit as configured.
    pub fn is_unresolvable(&self) -> bool {
        matches!(self, Verdict::Unresolvable(_))
    }

    /// The reason it does not fit, if it does not.
    pub fn reason(&self) -> Option<&R> {
        match self {
            Verdict::Fit(_) => None,
            Verdict::Unschedulable(r) | Verdict::Unresolvable(r) => Some(r),
        }
    }
}
