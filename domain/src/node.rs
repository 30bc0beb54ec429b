//! Nodes and their GPUs as the control plane knows them.

use serde::{Deserialize, Serialize};

/// Schedulable capacity of one GPU (or one MIG instance), in milli-GPU.
pub const GPU_MILLI: u32 = 1000;

/// Whether a GPU may receive work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Health {
    /// The GPU may receive work.
    #[default]
    Healthy,
    /// The GPU must not receive work (e.g. after a critical XID event).
    Unhealthy {
        /// Why, e.g. `XID 79 (GPU has fallen off the bus)`.
        reason: String,
    },
}

impl Health {
    /// Whether the GPU may receive work.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// One MIG (multi-instance GPU) instance. Each instance is scheduled as a device of its own, with the model name
/// `<gpu model>-MIG-<profile>` (e.g. `A100-80GB-MIG-3g.40gb`) and a capacity of 1000 milli.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigInstance {
    /// The MIG profile, e.g. `3g.40gb`.
    pub profile: String,
    /// Memory of the instance in MiB.
    pub memory_mib: u64,
    /// The instance's UUID (`MIG-…`) as NVML reports it; empty for instances only a cluster file describes. Jobs
    /// given the instance see it in `CUDA_VISIBLE_DEVICES`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
}

/// One physical GPU of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// The GPU's UUID as NVML reports it (or a generated one for configured nodes).
    pub uuid: String,
    /// The model name jobs select with `gpu_models`, e.g. `H100-80GB`.
    pub model: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// NUMA node the GPU is attached to, when known.
    pub numa_node: Option<u32>,
    /// Indices (on the same node) of the GPUs this GPU has an NVLink connection to.
    pub nvlink_peers: Vec<u32>,
    /// Health as last reported.
    pub health: Health,
    /// MIG instances; empty when MIG is disabled. When present, only the instances are schedulable.
    pub mig: Vec<MigInstance>,
}

/// A GPU node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// The pool the node belongs to (from the control plane's configuration, never from the node itself).
    pub pool: String,
    /// Allocatable CPU in milli-cores.
    pub cpu_milli: u64,
    /// Allocatable memory in MiB.
    pub memory_mib: u64,
    /// The node's GPUs, indexed from 0.
    pub gpus: Vec<Gpu>,
}

impl Node {
    /// Number of schedulable devices: MIG instances count one each, other GPUs one each.
    pub fn device_count(&self) -> usize {
        self.gpus.iter().map(|g| g.mig.len().max(1)).sum()
    }
}
