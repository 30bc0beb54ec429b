//! The cluster as the placement core sees it: a static [`Topology`] (zones, pools, nodes, devices, NVLink islands),
//! and a [`ClusterState`] of what is in use. A `&ClusterState` is the immutable snapshot the core decides on.
//!
//! Layout: nodes and devices are stored in flat vectors (struct-of-arrays for the hot fields) so that the filters
//! of one decision walk contiguous memory. A *device* is a schedulable unit: a whole GPU, or one MIG instance of a
//! GPU in MIG mode. Each device has 1000 milli of capacity.

use crate::decision::Decision;
use sovra_domain::{ClusterConfig, GPU_MILLI, Purpose, ResidencyClass, Zone};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod patch;
pub use patch::NodeChange;

/// Dense index of a node in a [`Topology`].
pub type NodeIdx = u32;

/// A pool: a zone and a purpose.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    /// Pool id.
    pub id: String,
    /// Index into [`Topology::zones`].
    pub zone: usize,
    /// What the pool's nodes are for.
    pub purpose: Purpose,
}

/// Static facts of a node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Index into [`Topology::pools`].
    pub pool: u32,
    /// Allocatable CPU, milli-cores.
    pub cpu_milli: u64,
    /// Allocatable memory, MiB.
    pub memory_mib: u64,
    /// Index of the node's first device in [`Topology::devices`].
    pub dev_start: u32,
    /// Number of devices.
    pub dev_count: u16,
    /// The single model of all the node's devices, if they share one (the common case).
    pub uniform_model: Option<u16>,
    /// Dense id of the node's *class*: nodes with the same device models in the same order share one. Used to
    /// memoise per-class computations (FGD's fragmentation).
    pub class: u32,
}

/// Static facts of a device (a GPU or a MIG instance).
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Owning node.
    pub node: NodeIdx,
    /// Index of the physical GPU on its node.
    pub gpu: u16,
    /// MIG profile when this device is a MIG instance.
    pub mig_profile: Option<String>,
    /// Index into [`Topology::models`].
    pub model: u16,
    /// Device memory, MiB.
    pub memory_mib: u64,
    /// NVLink island id, unique within the node: devices with the same id are connected by NVLink.
    pub island: u16,
    /// UUID of the physical GPU.
    pub uuid: String,
}

/// A problem building a topology from a configuration that passed validation (e.g. too many devices).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// Static cluster facts, shared by every state built from them.
#[derive(Debug)]
pub struct Topology {
    /// Zones, in configuration order.
    pub zones: Vec<Zone>,
    /// Pools, in configuration order.
    pub pools: Vec<PoolInfo>,
    /// Residency classes, in configuration order.
    pub classes: Vec<ResidencyClass>,
    /// Nodes, in configuration order.
    pub nodes: Vec<NodeInfo>,
    /// Devices, grouped by node.
    pub devices: Vec<DeviceInfo>,
    /// Interned model names, in order of first appearance.
    pub models: Vec<String>,
    model_ids: BTreeMap<String, u16>,
    /// Nodes of each pool, ascending.
    pub pool_nodes: Vec<Vec<NodeIdx>>,
    /// Largest node CPU (milli): the CPU scale of best-fit and dot-product scores.
    pub max_node_cpu: u64,
    /// Largest node GPU capacity (milli): the GPU scale of best-fit scores.
    pub max_node_gpu_milli: u64,
    node_ids: BTreeMap<String, NodeIdx>,
    /// Dense node class ids ([`NodeInfo::class`]) by device models, in order of first appearance.
    class_ids: BTreeMap<Vec<u16>, u32>,
    /// See [`Topology::generation`].
    generation: u64,
}

/// Source of topology generation ids (see [`Topology::generation`]); 0 is never given out.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Topology {
    /// The topology's *generation id*: a number taken from a process-wide counter when the topology is built
    /// ([`Topology::from_config`]) and again whenever it is changed through [`Topology::renew_generation`]. No two
    /// topologies of one process share an id, even when one is dropped and the next is allocated at the same
    /// address, so caches of facts derived from a topology (the placer's fragmentation memo and FGD score cache,
    /// its residency wording) key on it — never on the topology's address, which the allocator may reuse.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Gives the topology a fresh generation id. Code that edits a topology's public fields in place must call it
    /// afterwards, so that no cache keyed on the old id serves facts of the old contents.
    pub fn renew_generation(&mut self) {
        self.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    }

    /// Builds the topology of a validated configuration. Model names of MIG instances are
    /// `<gpu model>-MIG-<profile>`.
    pub fn from_config(cfg: &ClusterConfig) -> Result<Topology, BuildError> {
        let zone_idx: BTreeMap<&str, usize> = cfg.zones.iter().enumerate().map(|(i, z)| (z.id.as_str(), i)).collect();
        let pool_idx: BTreeMap<&str, u32> =
            cfg.pools.iter().enumerate().map(|(i, p)| (p.id.as_str(), i as u32)).collect();
        let pools = cfg
            .pools
            .iter()
            .map(|p| {
                let zone = *zone_idx
                    .get(p.zone.as_str())
                    .ok_or_else(|| BuildError(format!("pool {} names unknown zone {}", p.id, p.zone)))?;
                Ok(PoolInfo { id: p.id.clone(), zone, purpose: p.purpose })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let mut t = Topology {
            zones: cfg.zones.clone(),
            pool_nodes: vec![Vec::new(); pools.len()],
            pools,
            classes: cfg.residency_classes.clone(),
            nodes: Vec::with_capacity(cfg.nodes.len()),
            devices: Vec::new(),
            models: Vec::new(),
            model_ids: BTreeMap::new(),
            max_node_cpu: 1,
            max_node_gpu_milli: 1,
            node_ids: BTreeMap::new(),
            class_ids: BTreeMap::new(),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        };
        for node in &cfg.nodes {
            let pool = *pool_idx
                .get(node.pool.as_str())
                .ok_or_else(|| BuildError(format!("node {} names unknown pool {}", node.name, node.pool)))?;
            if t.node_ids.contains_key(&node.name) {
                return Err(BuildError(format!("node name {} is used twice", node.name)));
            }
            patch::check_devices(node)?;
            t.push_node(node, pool);
        }
        Ok(t)
    }

    fn intern(&mut self, model: &str) -> u16 {
        if let Some(&id) = self.model_ids.get(model) {
            return id;
        }
        let id = self.models.len() as u16;
        self.models.push(model.to_string());
        self.model_ids.insert(model.to_string(), id);
        id
    }

    /// The id of a model name, if any device has it.
    pub fn model_id(&self, model: &str) -> Option<u16> {
        self.model_ids.get(model).copied()
    }

    /// The index of the node named `name`.
    pub fn node_index(&self, name: &str) -> Option<NodeIdx> {
        self.node_ids.get(name).copied()
    }

    /// The residency class named `name`.
    pub fn class(&self, name: &str) -> Option<&ResidencyClass> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// The device range of a node in [`Topology::devices`].
    pub fn device_range(&self, node: NodeIdx) -> std::ops::Range<usize> {
        let n = &self.nodes[node as usize];
        n.dev_start as usize..n.dev_start as usize + n.dev_count as usize
    }

    /// Total schedulable milli-GPU of the cluster.
    pub fn total_gpu_milli(&self) -> u64 {
        self.devices.len() as u64 * u64::from(GPU_MILLI)
    }
}

/// Per-node totals kept up to date on every change, so that filters run in O(1) per node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSummary {
    /// Free CPU, milli-cores.
    pub cpu_free: u64,
    /// Free memory, MiB.
    pub mem_free: u64,
    /// Healthy devices with all 1000 milli free.
    pub free_whole: u16,
    /// Healthy devices.
    pub healthy: u16,
    /// Largest free milli on any healthy device.
    pub max_free: u16,
    /// Sum of free milli over healthy devices.
    pub free_total: u32,
    /// Most fully free healthy devices in one NVLink island.
    pub free_whole_island: u16,
}

/// Source of globally unique epochs: a node's epoch changes on every change of its state, and no two states ever
/// give the same epoch to different contents, so caches may key on (node, epoch).
static EPOCHS: AtomicU64 = AtomicU64::new(1);

fn next_epoch() -> u64 {
    EPOCHS.fetch_add(1, Ordering::Relaxed)
}

/// Why a decision could not be applied to a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The decision would over-commit a device, CPU or memory, or names something that does not exist.
    #[error("cannot apply placement of {job}: {reason}")]
    Conflict {
        /// The job.
        job: String,
        /// What would break.
        reason: String,
    },
}

/// What is in use on a [`Topology`]: the dynamic half of a snapshot.
#[derive(Debug, Clone)]
pub struct ClusterState {
    topo: Arc<Topology>,
    dev_used: Vec<u16>,
    dev_healthy: Vec<bool>,
    node_ready: Vec<bool>,
    cpu_used: Vec<u64>,
    mem_used: Vec<u64>,
    summary: Vec<NodeSummary>,
    epoch: Vec<u64>,
    tags: Vec<[u32; TAGS]>,
}

/// Number of replica tags counted per node (see [`replica_tag`]).
pub const TAGS: usize = 10;

/// The *tag* of a replica, as the FGD simulator's GPU-clustering policy groups pods: 0 for a share of one GPU,
/// k for k whole GPUs (1 to 8), 9 for more than 8 whole GPUs; `None` for CPU-only replicas (not counted).
pub fn replica_tag(gpus: usize, milli: u32) -> Option<usize> {
    match gpus {
        0 => None,
        1 if milli < GPU_MILLI => Some(0),
        k => Some(k.min(TAGS - 1)),
    }
}

impl ClusterState {
    /// An empty state (nothing in use) over `topo`; device health as configured.
    pub fn new(topo: Arc<Topology>, cfg: &ClusterConfig) -> ClusterState {
        let mut healthy = Vec::with_capacity(topo.devices.len());
        for node in &cfg.nodes {
            for g in &node.gpus {
                for _ in 0..g.mig.len().max(1) {
                    healthy.push(g.health.is_healthy());
                }
            }
        }
        healthy.resize(topo.devices.len(), true);
        Self::with_health(topo, healthy)
    }

    /// An empty state with explicit device health.
    pub fn with_health(topo: Arc<Topology>, dev_healthy: Vec<bool>) -> ClusterState {
        let n = topo.nodes.len();
        let mut s = ClusterState {
            dev_used: vec![0; topo.devices.len()],
            dev_healthy,
            node_ready: vec![true; n],
            cpu_used: vec![0; n],
            mem_used: vec![0; n],
            summary: vec![NodeSummary::default(); n],
            epoch: vec![0; n],
            tags: vec![[0; TAGS]; n],
            topo,
        };
        for i in 0..n as NodeIdx {
            s.refresh(i);
        }
        s
    }

    /// Builds the topology and an empty state of a validated configuration.
    pub fn from_config(cfg: &ClusterConfig) -> Result<ClusterState, BuildError> {
        let topo = Arc::new(Topology::from_config(cfg)?);
        Ok(ClusterState::new(topo, cfg))
    }

    /// The static topology.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topo
    }

    /// The summary of a node.
    #[inline]
    pub fn summary(&self, node: NodeIdx) -> &NodeSummary {
        &self.summary[node as usize]
    }

    /// The node's epoch: changes whenever anything about the node's state changes.
    #[inline]
    pub fn epoch(&self, node: NodeIdx) -> u64 {
        self.epoch[node as usize]
    }

    /// Whether the node is ready (heartbeating).
    #[inline]
    pub fn node_ready(&self, node: NodeIdx) -> bool {
        self.node_ready[node as usize]
    }

    /// Free milli of a device; 0 when unhealthy.
    #[inline]
    pub fn device_free(&self, dev: usize) -> u16 {
        if self.dev_healthy[dev] { GPU_MILLI as u16 - self.dev_used[dev] } else { 0 }
    }

    /// Milli in use on a device.
    pub fn device_used(&self, dev: usize) -> u16 {
        self.dev_used[dev]
    }

    /// Whether a device is healthy.
    pub fn device_healthy(&self, dev: usize) -> bool {
        self.dev_healthy[dev]
    }

    /// CPU in use on a node.
    pub fn cpu_used(&self, node: NodeIdx) -> u64 {
        self.cpu_used[node as usize]
    }

    /// Memory in use on a node.
    pub fn mem_used(&self, node: NodeIdx) -> u64 {
        self.mem_used[node as usize]
    }

    /// How many replicas of each tag ([`replica_tag`]) run on a node.
    #[inline]
    pub fn node_tags(&self, node: NodeIdx) -> &[u32; TAGS] {
        &self.tags[node as usize]
    }

    /// Sum of milli in use over all devices.
    pub fn used_gpu_milli(&self) -> u64 {
        self.dev_used.iter().map(|&u| u64::from(u)).sum()
    }

    /// Marks a device healthy or not. Work already on it stays accounted for.
    pub fn set_device_health(&mut self, dev: usize, healthy: bool) {
        self.dev_healthy[dev] = healthy;
        self.refresh(self.topo.devices[dev].node);
    }

    /// Marks a node ready or not ready (e.g. after missed heartbeats). A node that is not ready receives no work.
    pub fn set_node_ready(&mut self, node: NodeIdx, ready: bool) {
        self.node_ready[node as usize] = ready;
        self.refresh(node);
    }

    /// Recomputes a node's summary and gives it a new epoch.
    fn refresh(&mut self, node: NodeIdx) {
        let info = &self.topo.nodes[node as usize];
        let range = self.topo.device_range(node);
        let mut s = NodeSummary {
            cpu_free: info.cpu_milli.saturating_sub(self.cpu_used[node as usize]),
            mem_free: info.memory_mib.saturating_sub(self.mem_used[node as usize]),
            ..Default::default()
        };
        let mut island_free: [u16; 64] = [0; 64];
        for d in range {
            if !self.dev_healthy[d] {
                continue;
            }
            let free = GPU_MILLI as u16 - self.dev_used[d];
            s.healthy += 1;
            s.free_total += u32::from(free);
            s.max_free = s.max_free.max(free);
            if u32::from(free) == GPU_MILLI {
                s.free_whole += 1;
                let island = self.topo.devices[d].island as usize;
                if island < island_free.len() {
                    island_free[island] += 1;
                    s.free_whole_island = s.free_whole_island.max(island_free[island]);
                } else {
                    s.free_whole_island = s.free_whole_island.max(1);
                }
            }
        }
        self.summary[node as usize] = s;
        self.epoch[node as usize] = next_epoch();
    }

    /// Checks that `decision` fits this state (no device, CPU or memory over-committed; every index valid).
    pub fn check(&self, decision: &Decision) -> Result<(), ApplyError> {
        let conflict = |reason: String| ApplyError::Conflict { job: decision.job.clone(), reason };
        let mut dev_extra: BTreeMap<usize, u32> = BTreeMap::new();
        let mut node_extra: BTreeMap<NodeIdx, (u64, u64)> = BTreeMap::new();
        for r in &decision.replicas {
            let node = self.topo.nodes.get(r.node as usize).ok_or_else(|| conflict(format!("no node {}", r.node)))?;
            let e = node_extra.entry(r.node).or_default();
            e.0 += r.cpu_milli;
            e.1 += r.memory_mib;
            for g in &r.devices {
                if g.device as usize >= node.dev_count as usize {
                    return Err(conflict(format!("node {} has no device {}", node.name, g.device)));
                }
                *dev_extra.entry(node.dev_start as usize + g.device as usize).or_default() += u32::from(g.milli);
            }
        }
        for (dev, extra) in dev_extra {
            if !self.dev_healthy[dev] {
                return Err(conflict(format!("device {dev} is unhealthy")));
            }
            if u32::from(self.dev_used[dev]) + extra > GPU_MILLI {
                return Err(conflict(format!("device {dev} would exceed 1000 milli")));
            }
        }
        for (node, (cpu, mem)) in node_extra {
            let s = &self.summary[node as usize];
            if cpu > s.cpu_free || mem > s.mem_free {
                return Err(conflict(format!(
                    "node {} would exceed its CPU or memory",
                    self.topo.nodes[node as usize].name
                )));
            }
        }
        Ok(())
    }

    /// Applies a decision (all replicas or, on conflict, none).
    pub fn apply(&mut self, decision: &Decision) -> Result<(), ApplyError> {
        self.check(decision)?;
        for r in &decision.replicas {
            let node = r.node as usize;
            self.cpu_used[node] += r.cpu_milli;
            self.mem_used[node] += r.memory_mib;
            let start = self.topo.nodes[node].dev_start as usize;
            for g in &r.devices {
                self.dev_used[start + g.device as usize] += g.milli;
            }
            if let Some(t) = replica_tag(r.devices.len(), r.devices.first().map_or(0, |g| u32::from(g.milli))) {
                self.tags[node][t] += 1;
            }
            self.refresh(r.node);
        }
        Ok(())
    }

    /// Releases a previously applied decision (the job ended).
    pub fn release(&mut self, decision: &Decision) {
        for r in &decision.replicas {
            let node = r.node as usize;
            self.cpu_used[node] = self.cpu_used[node].saturating_sub(r.cpu_milli);
            self.mem_used[node] = self.mem_used[node].saturating_sub(r.memory_mib);
            let start = self.topo.nodes[node].dev_start as usize;
            for g in &r.devices {
                let d = start + g.device as usize;
                self.dev_used[d] = self.dev_used[d].saturating_sub(g.milli);
            }
            if let Some(t) = replica_tag(r.devices.len(), r.devices.first().map_or(0, |g| u32::from(g.milli))) {
                self.tags[node][t] = self.tags[node][t].saturating_sub(1);
            }
            self.refresh(r.node);
        }
    }
}
