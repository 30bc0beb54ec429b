//! Patching a topology and the states over it in place, one node at a time: add a node to an existing pool, remove
//! a node, or replace a node's inventory (pool, CPU, memory, GPUs with their models, memory, NVLink and MIG
//! instances, health). Every other node keeps its usage, readiness and health.
//!
//! A patched topology is laid out exactly as [`Topology::from_config`] lays out the configuration with the same
//! change made to its node list — an added node last, a removed node's successors moved down one index, a replaced
//! node in its place — so nodes, devices, pools' node lists, scales and tie-break ranks (which follow node indices)
//! equal those of a fresh build, and the placer decides alike. The one difference: model names stay interned after
//! their last device goes (a model id is never reused), which no decision reads. Each patch gives the topology a
//! new generation id ([`Topology::generation`]), so memos keyed by it are rebuilt.
//!
//! Cost: adding a node is O(its devices + log n) when no other holder shares the topology (else one copy of it);
//! removing or replacing one is O(n + devices), the shifts of the flat vectors.

use super::{ClusterState, DeviceInfo, NodeIdx, NodeInfo, NodeSummary, TAGS, Topology};
use crate::snapshot::BuildError;
use petgraph::unionfind::UnionFind;
use sovra_domain::{GPU_MILLI, Node};
use std::sync::Arc;

/// One change of a cluster's node inventory.
#[derive(Debug, Clone, Copy)]
pub enum NodeChange<'a> {
    /// A new node (its name unused), appended to the node order.
    Add(&'a Node),
    /// Remove the node of this name.
    Remove(&'a str),
    /// The node of this name now has this inventory; its usage is cleared (release its work first).
    Replace(&'a Node),
}

/// Refuses nodes with more devices than a [`NodeInfo`] can count.
pub(super) fn check_devices(node: &Node) -> Result<(), BuildError> {
    let n = node.device_count();
    if n > usize::from(u16::MAX) / 2 {
        return Err(BuildError(format!("node {} has {n} devices; at most 32767", node.name)));
    }
    Ok(())
}

/// Device health of a node as its configuration reports it, one entry per device.
fn configured_health(node: &Node) -> Vec<bool> {
    node.gpus.iter().flat_map(|g| std::iter::repeat_n(g.health.is_healthy(), g.mig.len().max(1))).collect()
}

impl Topology {
    /// The static facts of `node` as node `idx` of pool `pool` with its first device at `dev_start`. Interns model
    /// names and class ids; the caller has checked the device count ([`check_devices`]).
    fn build_node(&mut self, node: &Node, idx: NodeIdx, pool: u32, dev_start: u32) -> (NodeInfo, Vec<DeviceInfo>) {
        // NVLink islands: connected components of the peer graph (petgraph's union-find).
        let mut links = UnionFind::<usize>::new(node.gpus.len());
        for (i, g) in node.gpus.iter().enumerate() {
            for &p in &g.nvlink_peers {
                if (p as usize) < node.gpus.len() {
                    links.union(i, p as usize);
                }
            }
        }
        let labels = links.into_labeling();
        let mut devices = Vec::with_capacity(node.device_count());
        let mut next_mig_island = node.gpus.len() as u16;
        for (gi, g) in node.gpus.iter().enumerate() {
            let mut push = |t: &mut Topology, model: String, memory: u64, profile: Option<String>, island: u16| {
                let model = t.intern(&model);
                devices.push(DeviceInfo {
                    node: idx,
                    gpu: gi as u16,
                    mig_profile: profile,
                    model,
                    memory_mib: memory,
                    island,
                    uuid: g.uuid.clone(),
                });
            };
            if g.mig.is_empty() {
                push(self, g.model.clone(), g.memory_mib, None, labels[gi] as u16);
            } else {
                // MIG instances are isolated devices: no NVLink island spans them.
                for m in &g.mig {
                    push(self, format!("{}-MIG-{}", g.model, m.profile), m.memory_mib, Some(m.profile.clone()), {
                        next_mig_island += 1;
                        next_mig_island - 1
                    });
                }
            }
        }
        let models: Vec<u16> = devices.iter().map(|d| d.model).collect();
        let uniform_model = match models.first() {
            Some(&m) if models.iter().all(|&x| x == m) => Some(m),
            _ => None,
        };
        let next_class = self.class_ids.len() as u32;
        let class = *self.class_ids.entry(models).or_insert(next_class);
        let info = NodeInfo {
            name: node.name.clone(),
            pool,
            cpu_milli: node.cpu_milli,
            memory_mib: node.memory_mib,
            dev_start,
            dev_count: devices.len() as u16,
            uniform_model,
            class,
        };
        (info, devices)
    }

    /// Appends `node` (name unused, devices checked) to pool `pool`.
    pub(super) fn push_node(&mut self, node: &Node, pool: u32) -> NodeIdx {
        let idx = self.nodes.len() as NodeIdx;
        let (info, devices) = self.build_node(node, idx, pool, self.devices.len() as u32);
        self.max_node_cpu = self.max_node_cpu.max(info.cpu_milli);
        self.max_node_gpu_milli = self.max_node_gpu_milli.max(u64::from(info.dev_count) * u64::from(GPU_MILLI));
        self.node_ids.insert(info.name.clone(), idx);
        self.pool_nodes[pool as usize].push(idx);
        self.devices.extend(devices);
        self.nodes.push(info);
        idx
    }

    /// The index of pool `id`.
    fn pool_index(&self, id: &str) -> Option<u32> {
        self.pools.iter().position(|p| p.id == id).map(|i| i as u32)
    }

    /// The CPU and GPU scales over every node, as [`Topology::from_config`] computes them.
    fn rescale(&mut self) {
        self.max_node_cpu = self.nodes.iter().map(|n| n.cpu_milli).fold(1, u64::max);
        self.max_node_gpu_milli =
            self.nodes.iter().map(|n| u64::from(n.dev_count) * u64::from(GPU_MILLI)).fold(1, u64::max);
    }

    /// Removes node `idx`: later nodes and their devices move down one index.
    fn remove_at(&mut self, idx: NodeIdx) {
        let range = self.device_range(idx);
        let count = range.len() as u32;
        self.devices.drain(range.clone());
        for d in &mut self.devices[range.start..] {
            d.node -= 1;
        }
        let info = self.nodes.remove(idx as usize);
        for n in &mut self.nodes[idx as usize..] {
            n.dev_start -= count;
        }
        self.node_ids.remove(&info.name);
        for v in self.node_ids.values_mut() {
            if *v > idx {
                *v -= 1;
            }
        }
        for list in &mut self.pool_nodes {
            list.retain(|&n| n != idx);
            for n in list.iter_mut() {
                if *n > idx {
                    *n -= 1;
                }
            }
        }
        self.rescale();
    }

    /// Gives node `idx` the inventory of `node` in pool `pool` (devices checked).
    fn replace_at(&mut self, idx: NodeIdx, node: &Node, pool: u32) {
        let range = self.device_range(idx);
        let old = self.nodes[idx as usize].clone();
        let (info, devices) = self.build_node(node, idx, pool, old.dev_start);
        let delta = i64::from(info.dev_count) - i64::from(old.dev_count);
        self.devices.splice(range, devices);
        for n in &mut self.nodes[idx as usize + 1..] {
            n.dev_start = (i64::from(n.dev_start) + delta) as u32;
        }
        if old.pool != pool {
            self.pool_nodes[old.pool as usize].retain(|&n| n != idx);
            let list = &mut self.pool_nodes[pool as usize];
            let at = list.partition_point(|&n| n < idx);
            list.insert(at, idx);
        }
        self.nodes[idx as usize] = info;
        self.rescale();
    }

    /// A copy with the same contents (and, until renewed, the same generation id), for copy-on-write patching.
    fn duplicate(&self) -> Topology {
        Topology {
            zones: self.zones.clone(),
            pools: self.pools.clone(),
            classes: self.classes.clone(),
            nodes: self.nodes.clone(),
            devices: self.devices.clone(),
            models: self.models.clone(),
            model_ids: self.model_ids.clone(),
            pool_nodes: self.pool_nodes.clone(),
            max_node_cpu: self.max_node_cpu,
            max_node_gpu_milli: self.max_node_gpu_milli,
            node_ids: self.node_ids.clone(),
            class_ids: self.class_ids.clone(),
            generation: self.generation,
        }
    }

    /// An empty stand-in, held by a state only while its real topology is being patched.
    fn placeholder() -> Topology {
        Topology {
            zones: Vec::new(),
            pools: Vec::new(),
            classes: Vec::new(),
            nodes: Vec::new(),
            devices: Vec::new(),
            models: Vec::new(),
            model_ids: Default::default(),
            pool_nodes: Vec::new(),
            max_node_cpu: 1,
            max_node_gpu_milli: 1,
            node_ids: Default::default(),
            class_ids: Default::default(),
            generation: 0,
        }
    }
}

/// What a validated change does, by index.
enum Resolved<'a> {
    Add(&'a Node, u32),
    Remove(NodeIdx),
    Replace(&'a Node, NodeIdx, u32),
}

fn resolve<'a>(topo: &Topology, change: NodeChange<'a>) -> Result<Resolved<'a>, BuildError> {
    let pool_of = |node: &Node| {
        topo.pool_index(&node.pool)
            .ok_or_else(|| BuildError(format!("node {} names unknown pool {}", node.name, node.pool)))
    };
    let known = |name: &str| topo.node_index(name).ok_or_else(|| BuildError(format!("no node {name}")));
    Ok(match change {
        NodeChange::Add(node) => {
            if topo.node_index(&node.name).is_some() {
                return Err(BuildError(format!("node name {} is used twice", node.name)));
            }
            check_devices(node)?;
            Resolved::Add(node, pool_of(node)?)
        }
        NodeChange::Remove(name) => Resolved::Remove(known(name)?),
        NodeChange::Replace(node) => {
            check_devices(node)?;
            Resolved::Replace(node, known(&node.name)?, pool_of(node)?)
        }
    })
}

impl ClusterState {
    /// Applies one inventory change to this state and its topology; see the module docs. Returns the index of the
    /// added, removed or replaced node. On error nothing changed.
    pub fn patch(&mut self, change: NodeChange<'_>) -> Result<NodeIdx, BuildError> {
        Self::patch_all(&mut [self], change)
    }

    /// Appends a new node (in an existing pool) with nothing in use and its configured health.
    pub fn add_node(&mut self, node: &Node) -> Result<NodeIdx, BuildError> {
        self.patch(NodeChange::Add(node))
    }

    /// Applies one change to several states that share one topology (e.g. a live state and its empty twin), so
    /// that they keep sharing the patched one. The patched node's devices get their configured health in every
    /// state. Fails, changing nothing, when the states do not share a topology or the change does not fit it.
    pub fn patch_all(states: &mut [&mut ClusterState], change: NodeChange<'_>) -> Result<NodeIdx, BuildError> {
        let Some(first) = states.first() else { return Err(BuildError("no state to patch".into())) };
        let shared = first.topo.clone();
        if states.iter().any(|s| !Arc::ptr_eq(&s.topo, &shared)) {
            return Err(BuildError("the states to patch do not share one topology".into()));
        }
        let resolved = resolve(&shared, change)?;
        // Detach every state from the topology, so that it is edited in place when nobody else holds it.
        let stand_in = Arc::new(Topology::placeholder());
        for s in states.iter_mut() {
            s.topo = stand_in.clone();
        }
        let mut topo = shared;
        if Arc::get_mut(&mut topo).is_none() {
            // Another holder (an older snapshot) keeps the unpatched topology; patch a copy.
            topo = Arc::new(topo.duplicate());
        }
        let t = Arc::get_mut(&mut topo).expect("the topology was just made unique");
        let old_range = match &resolved {
            Resolved::Add(..) => 0..0,
            Resolved::Remove(idx) | Resolved::Replace(_, idx, _) => t.device_range(*idx),
        };
        let (idx, health) = match resolved {
            Resolved::Add(node, pool) => (t.push_node(node, pool), configured_health(node)),
            Resolved::Remove(idx) => {
                t.remove_at(idx);
                (idx, Vec::new())
            }
            Resolved::Replace(node, idx, pool) => {
                t.replace_at(idx, node, pool);
                (idx, configured_health(node))
            }
        };
        t.renew_generation();
        for s in states.iter_mut() {
            s.topo = topo.clone();
            s.follow(change, idx, old_range.clone(), &health);
        }
        Ok(idx)
    }

    /// Brings the per-node and per-device vectors in line with a topology patched by `change` at node `idx`
    /// (`old` its former device range, `health` its new devices' health).
    fn follow(&mut self, change: NodeChange<'_>, idx: NodeIdx, old: std::ops::Range<usize>, health: &[bool]) {
        let i = idx as usize;
        match change {
            NodeChange::Add(_) => {
                self.dev_used.extend(std::iter::repeat_n(0, health.len()));
                self.dev_healthy.extend_from_slice(health);
                self.node_ready.push(true);
                self.cpu_used.push(0);
                self.mem_used.push(0);
                self.summary.push(NodeSummary::default());
                self.epoch.push(0);
                self.tags.push([0; TAGS]);
                self.refresh(idx);
            }
            NodeChange::Remove(_) => {
                self.dev_used.drain(old.clone());
                self.dev_healthy.drain(old);
                self.node_ready.remove(i);
                self.cpu_used.remove(i);
                self.mem_used.remove(i);
                self.summary.remove(i);
                self.epoch.remove(i);
                self.tags.remove(i);
            }
            NodeChange::Replace(_) => {
                self.dev_used.splice(old.clone(), std::iter::repeat_n(0, health.len()));
                self.dev_healthy.splice(old, health.iter().copied());
                self.cpu_used[i] = 0;
                self.mem_used[i] = 0;
                self.tags[i] = [0; TAGS];
                self.refresh(idx);
            }
        }
    }
}
