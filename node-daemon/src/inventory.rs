//! What a node reports: its GPUs, their health, and the state of the backend that read them.

use serde::{Deserialize, Serialize};
use sovra_domain::{Gpu, Health, MigInstance, Node};
use std::collections::BTreeMap;

/// Whether the backend could read the GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BackendState {
    /// GPUs were read.
    Ready,
    /// No GPU information could be read (e.g. NVML missing); the reason says why and what to do.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// One MIG instance of a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigRecord {
    /// MIG device UUID.
    pub uuid: String,
    /// NVML name, e.g. `NVIDIA A100-SXM4-80GB MIG 3g.40gb`.
    pub name: String,
    /// Memory, MiB.
    pub memory_total_mib: u64,
}

/// Whether a GPU may receive work, as the daemon sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum GpuHealth {
    /// Healthy.
    #[default]
    Healthy,
    /// Unhealthy since a critical event.
    Unhealthy {
        /// e.g. `XID 79`.
        reason: String,
    },
}

/// One physical GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRecord {
    /// NVML index.
    pub index: u32,
    /// GPU UUID.
    pub uuid: String,
    /// NVML name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory, MiB.
    pub memory_total_mib: u64,
    /// Used memory, MiB.
    #[serde(default)]
    pub memory_used_mib: u64,
    /// CUDA compute capability (major, minor).
    pub compute_capability: [i32; 2],
    /// PCI bus id.
    #[serde(default)]
    pub pci_bus_id: String,
    /// NUMA node, when known.
    #[serde(default)]
    pub numa_node: Option<u32>,
    /// PCI bus ids of the remote ends of this GPU's active NVLinks (deduplicated): other GPUs of the node, or, on
    /// NVSwitch systems (HGX), the switches.
    #[serde(default)]
    pub nvlink_peers: Vec<String>,
    /// MIG mode enabled.
    #[serde(default)]
    pub mig_enabled: bool,
    /// MIG instances (schedulable devices of their own).
    #[serde(default)]
    pub mig_instances: Vec<MigRecord>,
    /// Degrees C.
    #[serde(default)]
    pub temperature_c: Option<u32>,
    /// Milliwatts.
    #[serde(default)]
    pub power_mw: Option<u32>,
    /// GPU utilisation %.
    #[serde(default)]
    pub utilization_pct: Option<u32>,
    /// Health.
    #[serde(default)]
    pub health: GpuHealth,
}

/// A node's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Which backend read it: `nvml`, or `fake (fixture <path>)` — a fake backend always says so.
    pub backend: String,
    /// Whether the backend could read the GPUs.
    pub state: BackendState,
    /// Driver version, when known.
    pub driver_version: Option<String>,
    /// CUDA driver version, e.g. `12.4`, when known.
    pub cuda_driver_version: Option<String>,
    /// The GPUs.
    pub gpus: Vec<GpuRecord>,
}

/// An XID event on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct XidEvent {
    /// GPU index.
    pub gpu: u32,
    /// The XID.
    pub xid: u64,
}

impl Inventory {
    /// An inventory with no GPUs because the backend could not read them.
    pub fn unavailable(backend: &str, reason: String) -> Inventory {
        Inventory {
            backend: backend.into(),
            state: BackendState::Unavailable { reason },
            driver_version: None,
            cuda_driver_version: None,
            gpus: vec![],
        }
    }

    /// Applies a health verdict to the GPU with `index`; true when its health changed.
    pub fn set_health(&mut self, index: u32, health: GpuHealth) -> bool {
        match self.gpus.iter_mut().find(|g| g.index == index) {
            Some(g) if g.health != health => {
                g.health = health;
                true
            }
            _ => false,
        }
    }
}

/// The model name the scheduler uses for an NVML name: without the `NVIDIA ` prefix, spaces as `-`
/// (`NVIDIA H100 80GB HBM3` → `H100-80GB-HBM3`). Cluster files and job `gpu_models` use these names.
pub fn model_name(nvml_name: &str) -> String {
    nvml_name.trim().trim_start_matches("NVIDIA ").split_whitespace().collect::<Vec<_>>().join("-")
}

/// The scheduler's view of this node: its zone and pool come from the control plane (`pool` here is the one the
/// control plane assigned), never from the inventory. CPU and memory are the node's allocatable amounts.
/// NVLink peers are mapped from PCI bus ids to GPU indices: a remote end that is a GPU of this node is a peer, and
/// a remote end that is not (an NVSwitch: on HGX boards every link ends at a switch, never at a GPU) is a fabric —
/// the GPUs reaching the same one are all peers, so the switched GPUs form one island. (Matching remote ends only
/// against the GPUs' own bus ids forms no island at all there: HAMi's bug, its PR #2103. NVML's own answer,
/// `nvmlDeviceGetNvLinkRemoteDeviceType`, is not usable: nvml-wrapper 0.13's `NvLink::remote_device_type` passes a
/// temporary to NVML and always returns `Unknown`, and this workspace forbids the unsafe code to call it directly.)
/// MIG instances become devices of their own with the profile taken from the NVML MIG name (`… MIG 3g.40gb` →
/// `3g.40gb`).
pub fn to_domain_node(inv: &Inventory, name: &str, pool: &str, cpu_milli: u64, memory_mib: u64) -> Node {
    let by_bus: BTreeMap<&str, u32> = inv.gpus.iter().map(|g| (g.pci_bus_id.as_str(), g.index)).collect();
    let mut fabrics: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for g in &inv.gpus {
        for b in g.nvlink_peers.iter().filter(|b| !by_bus.contains_key(b.as_str())) {
            fabrics.entry(b.as_str()).or_default().push(g.index);
        }
    }
    Node {
        name: name.into(),
        pool: pool.into(),
        cpu_milli,
        memory_mib,
        gpus: inv
            .gpus
            .iter()
            .map(|g| Gpu {
                uuid: g.uuid.clone(),
                model: model_name(&g.name),
                memory_mib: g.memory_total_mib,
                numa_node: g.numa_node,
                nvlink_peers: {
                    let mut peers: Vec<u32> = g
                        .nvlink_peers
                        .iter()
                        .flat_map(|b| match by_bus.get(b.as_str()) {
                            Some(&gpu) => vec![gpu],
                            None => fabrics.get(b.as_str()).cloned().unwrap_or_default(),
                        })
                        .filter(|&p| p != g.index)
                        .collect();
                    peers.sort_unstable();
                    peers.dedup();
                    peers
                },
                health: match &g.health {
                    GpuHealth::Healthy => Health::Healthy,
                    GpuHealth::Unhealthy { reason } => Health::Unhealthy { reason: reason.clone() },
                },
                mig: g
                    .mig_instances
                    .iter()
                    .map(|m| MigInstance {
                        profile: m.name.rsplit(" MIG ").next().unwrap_or(&m.name).trim().to_string(),
                        memory_mib: m.memory_total_mib,
                        uuid: m.uuid.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        assert_eq!(model_name("NVIDIA H100 80GB HBM3"), "H100-80GB-HBM3");
        assert_eq!(model_name("NVIDIA L4"), "L4");
        assert_eq!(model_name("Tesla T4"), "Tesla-T4");
    }
}
