//! The engine's vocabulary: job ids, states and records, queues, submit errors, cycle events, queue figures, and
//! the canonical digest of a job's spec.

use crate::{Blocker, PreemptionRecord};
use sovra_domain::Job;
use sovra_placement::{Decision, Explanation};
use std::collections::BTreeMap;

/// A job's id: assigned at submit, increasing.
pub type JobId = u64;

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in its queue.
    Pending,
    /// Resources assigned; not yet confirmed running.
    Placed,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// A node it ran on disappeared (it is requeued).
    Lost,
    /// Refused at submit: no permitted pool could ever hold it.
    Refused,
}

impl JobState {
    /// Whether the job holds resources in this state.
    pub fn holds_resources(self) -> bool {
        matches!(self, JobState::Placed | JobState::Running)
    }

    /// Whether the job is finished for good.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Refused)
    }
}

/// A job known to the engine.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// Client request id (idempotent submit), if given.
    pub request_id: Option<String>,
    /// The job.
    pub job: Job,
    /// State.
    pub state: JobState,
    /// Submission order (FIFO within a priority).
    pub seq: u64,
    /// Where it runs, while it holds resources.
    pub placement: Option<Decision>,
    /// Why it is pending or was refused (the last explanation).
    pub explanation: Option<Explanation>,
    /// Times it was preempted.
    pub preemptions: u32,
    /// Times it was lost with a node.
    pub losses: u32,
    /// What else kept it pending when a cycle last tried or skipped it: quota, a reservation, its position in its
    /// queue (empty once it starts; records stored before these existed load with none).
    #[serde(default)]
    pub blockers: Vec<Blocker>,
    /// Its most recent preemptions (at most [`MAX_PREEMPTION_RECORDS`](crate::MAX_PREEMPTION_RECORDS), oldest
    /// first).
    #[serde(default)]
    pub preemption_records: Vec<PreemptionRecord>,
    /// Times it has been placed: each placement is a new attempt, so that a node daemon can tell a re-placed job
    /// (after a preemption or a lost node) from the run it still has (records stored before it load with 0).
    #[serde(default)]
    pub attempt: u64,
    /// How it ended, in words, when whoever reported the end said (`replica 1 on gpu-2 failed: exit code 3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_reason: Option<String>,
}

/// A queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueSpec {
    /// Name jobs refer to.
    pub name: String,
    /// Fair-share weight (≥ 1).
    pub weight: u32,
    /// GPU milli the queue may hold per pool; pools not listed are unlimited.
    pub quota_milli: BTreeMap<String, u64>,
}

impl QueueSpec {
    /// An unlimited queue of weight 1.
    pub fn new(name: &str) -> QueueSpec {
        QueueSpec { name: name.into(), weight: 1, quota_milli: BTreeMap::new() }
    }
}

/// Why an engine could not be built (or rebuilt) over a cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The configuration passed validation but the placement core cannot build a topology from it.
    #[error("cluster: {0}; fix the cluster file and reload")]
    Cluster(#[from] sovra_placement::BuildError),
}

/// Why a lifecycle change (cancel, started, finished) of a job was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// No job has this id.
    #[error("id: no job {id}; `sovra jobs` lists the jobs")]
    NoSuchJob {
        /// The id asked for.
        id: JobId,
    },
    /// The job is not in a state the change applies to.
    #[error("state: job {id} is {state:?}, not {expected}")]
    WrongState {
        /// The job.
        id: JobId,
        /// Its state.
        state: JobState,
        /// What the change needs, e.g. `placed`, `running`, `pending, placed or running`.
        expected: &'static str,
    },
}

/// Why a submit was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The job names a queue that does not exist.
    #[error("unknown queue {queue:?}; the scheduler has [{known}]")]
    UnknownQueue {
        /// The queue named.
        queue: String,
        /// The queues that exist, comma-separated.
        known: String,
    },
    /// The request id was used before for a job with different content: resending a request must not hide a
    /// changed job file.
    #[error(
        "request id {request_id:?} was already used for job {id} with different content (its spec digest is \
         {first_digest}, this one's {digest}); resend the same job to get job {id}, or use a new request id"
    )]
    RequestReused {
        /// The request id.
        request_id: String,
        /// The job the request id created.
        id: JobId,
        /// [`spec_digest`] of that job.
        first_digest: String,
        /// [`spec_digest`] of the job in this request.
        digest: String,
    },
    /// No permitted pool could ever hold the job; it was recorded as refused.
    #[error("job refused: {}", .explanation.summary)]
    Refused {
        /// The refused job's id.
        id: JobId,
        /// Why.
        explanation: Box<Explanation>,
    },
}

/// What a scheduling cycle did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Event {
    /// A job was placed.
    Placed {
        /// The job.
        job: JobId,
    },
    /// A running gang was preempted (whole) to make room for another job.
    Preempted {
        /// The victim.
        job: JobId,
        /// The job it made room for.
        by: JobId,
        /// Who, why, when and what was freed (also kept on the victim's record).
        record: PreemptionRecord,
    },
    /// A job could not be placed this cycle and holds a reservation.
    Reserved {
        /// The job.
        job: JobId,
        /// Nodes reserved for it.
        nodes: Vec<String>,
    },
}

/// A queue's figures, for `sovra queues`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueStat {
    /// The queue.
    pub spec: QueueSpec,
    /// Jobs waiting.
    pub pending: u32,
    /// Jobs holding resources (placed or running).
    pub running: u32,
    /// GPU milli held.
    pub gpu_milli_held: u64,
    /// DRF dominant share divided by the weight.
    pub share: f64,
}

/// A canonical digest of a job's spec: SHA-256 (hex) of the validated job as JSON, so that two YAML files that
/// differ only in layout, comments or spelled-out defaults get the same digest and any change of content does not.
pub fn spec_digest(job: &Job) -> String {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(job).unwrap_or_default();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}
