//! Jobs: what users ask the scheduler to place.

use crate::zone::Purpose;
use serde::{Deserialize, Serialize};

/// What a job does; it must match the purpose of the pool it lands in.
pub type JobKind = Purpose;

/// Whether a multi-GPU replica wants its GPUs on one NVLink island.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NvlinkWish {
    /// No wish.
    #[default]
    None,
    /// Prefer nodes where the replica's GPUs share one NVLink island (a scoring preference).
    Prefer,
    /// Only nodes where the replica's GPUs can share one NVLink island (a filter).
    Require,
}

/// Resources of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// Number of GPUs; 0 for a CPU-only replica.
    pub gpus: u32,
    /// Milli-GPU per GPU: 1000 for whole GPUs, less for a sharing request (then `gpus` is 1).
    pub gpu_milli: u32,
    /// Allowed GPU models; empty allows any.
    pub gpu_models: Vec<String>,
    /// CPU in milli-cores.
    pub cpu_milli: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
}

impl Resources {
    /// Total milli-GPU the replica takes (`gpus × gpu_milli`).
    pub fn total_gpu_milli(&self) -> u64 {
        u64::from(self.gpus) * u64::from(self.gpu_milli)
    }

    /// Whether this is a GPU-sharing request (one GPU, less than 1000 milli).
    pub fn is_sharing(&self) -> bool {
        self.gpus == 1 && self.gpu_milli < crate::node::GPU_MILLI
    }
}

/// A validated job: a gang of identical replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Job name, unique per submitter.
    pub name: String,
    /// Training or inference.
    pub kind: JobKind,
    /// The queue it is charged to.
    pub queue: String,
    /// Higher runs first.
    pub priority: i32,
    /// Name of the residency class every replica's zone must satisfy.
    pub residency: String,
    /// Number of replicas; all are placed or none (a gang).
    pub replicas: u32,
    /// Per-replica resources.
    pub resources: Resources,
    /// NVLink wish for multi-GPU replicas (in YAML `topology.nvlink`; `prefer` by default when a replica has 2+
    /// GPUs).
    pub nvlink: NvlinkWish,
    /// What each replica runs (`run:`); `None`: the job is placed and its runner reports with `sovra set-state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Box<crate::run::RunSpec>>,
    /// The model version an inference job serves (`model:`): its replicas go only to zones whose inference data
    /// zone holds that version (the placement core's `model` filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::model_ref::ModelRef>,
    /// A granted placement exception (break-glass): set by the engine from an exception signed by enough
    /// approvers, never by a job file (docs/receipts.md, "Break-glass for placement").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<crate::waiver::Waiver>,
}
