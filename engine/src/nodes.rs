//! Changing the cluster's node inventory in place: a node enrolls, reports a different inventory, or leaves.
//!
//! [`Engine::upsert_node`] and [`Engine::remove_node`] patch the placement core's topology and states
//! ([`ClusterState::patch_all`]) instead of rebuilding the engine ([`Engine::rebuild`], which re-applies every
//! job): enrolling a node costs O(its devices) rather than O(nodes + jobs), so enrolling n nodes is linear, not
//! quadratic. Jobs on other nodes keep their placements; only jobs with a replica on the changed node are touched,
//! and the engine ends up as [`Engine::rebuild`] over the changed configuration would leave it (same nodes in the
//! same order, same usage, same decisions).
//!
//! - A **new** node is appended to the node order; nothing is requeued.
//! - A **changed** node: its jobs are released whole, the node gets its new inventory, and each of them (by id)
//!   is re-applied whole if its placement still fits and is still permitted (same pool and zone, the zone still
//!   satisfying its class) — as a rebuild re-applies placements. The others are requeued (pending) and returned.
//!   Readiness is kept.
//! - A **removed** node: its jobs are released whole, counted as lost and requeued (as [`Engine::node_lost`]);
//!   placements on later nodes are renumbered.
//!
//! Every patch updates the DRF totals, drops the cached submit verdicts that may have changed (all of them when
//! capacity may have shrunk, only the refusals when a node was added) and keeps the empty twin of the state (for
//! "could it ever fit?") and the standing reservation's node mask aligned with the new node order.

use crate::{Engine, JobId, JobState};
use sovra_domain::{GPU_MILLI, Node};
use sovra_placement::{BuildError, ClusterState, NodeChange, NodeIdx};

impl Engine {
    /// Adds `node` when its name is new, else gives the node of that name this inventory (pool, CPU, memory,
    /// GPUs and their health); see the module docs. Returns the jobs requeued. A node naming an unknown pool, or
    /// with more devices than the core can count, is an error and changes nothing.
    pub fn upsert_node(&mut self, node: &Node) -> Result<Vec<JobId>, crate::EngineError> {
        match self.state.topology().node_index(&node.name) {
            None => {
                self.patch(NodeChange::Add(node))?;
                if let Some((.., mask)) = &mut self.reservation {
                    mask.push(false);
                }
                // More capacity: only refusals may change.
                self.verdicts.retain(|_, v| v.is_none());
                self.dirty = true;
                Ok(Vec::new())
            }
            Some(idx) => {
                let topo = self.state.topology().clone();
                let pool_known = topo.pools.iter().any(|p| p.id == node.pool);
                if !pool_known {
                    return Err(BuildError(format!("node {} names unknown pool {}", node.name, node.pool)).into());
                }
                let affected = self.jobs_on(idx);
                for id in &affected {
                    if let Some(d) = self.jobs.get(id).and_then(|r| r.placement.as_ref()) {
                        self.state.release(d);
                    }
                }
                if let Err(e) = self.patch(NodeChange::Replace(node)) {
                    // Nothing was patched: put the released work back as it was.
                    for id in &affected {
                        if let Some(d) = self.jobs.get(id).and_then(|r| r.placement.as_ref()) {
                            let _ = self.state.apply(d);
                        }
                    }
                    return Err(e.into());
                }
                let mut requeued = Vec::new();
                for id in affected {
                    let Some(rec) = self.jobs.get_mut(&id) else { continue };
                    let fits = rec.placement.as_ref().is_some_and(|d| {
                        crate::still_permitted(self.state.topology(), &rec.job, d) && self.state.apply(d).is_ok()
                    });
                    if !fits {
                        if let Some(d) = rec.placement.take() {
                            crate::account(&mut self.held, &rec.job.queue, &d, -1);
                        }
                        rec.state = JobState::Pending;
                        requeued.push(id);
                    }
                }
                self.verdicts.clear();
                self.dirty = true;
                Ok(requeued)
            }
        }
    }

    /// Removes the node named `name` (unknown names change nothing); see the module docs. Returns the jobs that
    /// had a replica on it, now released, counted as lost and pending.
    pub fn remove_node(&mut self, name: &str) -> Vec<JobId> {
        let Some(idx) = self.state.topology().node_index(name) else { return Vec::new() };
        let lost = self.jobs_on(idx);
        for &id in &lost {
            self.release(id);
            if let Some(r) = self.jobs.get_mut(&id) {
                r.losses += 1;
                r.state = JobState::Pending;
            }
        }
        if self.patch(NodeChange::Remove(name)).is_err() {
            // Unreachable: the name was just found. The node is released and stays, not ready.
            self.state.set_node_ready(idx, false);
            return lost;
        }
        for rec in self.jobs.values_mut() {
            for p in rec.placement.iter_mut().flat_map(|d| d.replicas.iter_mut()) {
                if p.node > idx {
                    p.node -= 1;
                }
            }
        }
        if let Some((.., mask)) = &mut self.reservation
            && (idx as usize) < mask.len()
        {
            mask.remove(idx as usize);
        }
        self.verdicts.clear();
        self.dirty = true;
        lost
    }

    /// Jobs with a replica on node `idx`, by id.
    fn jobs_on(&self, idx: NodeIdx) -> Vec<JobId> {
        self.jobs
            .values()
            .filter(|r| r.placement.as_ref().is_some_and(|d| d.replicas.iter().any(|p| p.node == idx)))
            .map(|r| r.id)
            .collect()
    }

    /// Patches the live state and its empty twin together (the twin's devices all healthy), and updates the
    /// DRF totals by the node's old and new figures.
    fn patch(&mut self, change: NodeChange<'_>) -> Result<NodeIdx, BuildError> {
        let before = match change {
            NodeChange::Add(_) => [0; 3],
            NodeChange::Remove(_) | NodeChange::Replace(_) => {
                let name = match change {
                    NodeChange::Replace(n) | NodeChange::Add(n) => n.name.as_str(),
                    NodeChange::Remove(n) => n,
                };
                let t = self.state.topology();
                t.node_index(name).map_or([0; 3], |i| node_totals(t, i))
            }
        };
        if !std::sync::Arc::ptr_eq(self.state.topology(), self.empty.topology()) {
            // The twin always shares the live topology; should it ever not, make it again (O(nodes)).
            let topo = self.state.topology().clone();
            self.empty = ClusterState::with_health(topo.clone(), vec![true; topo.devices.len()]);
        }
        let idx = ClusterState::patch_all(&mut [&mut self.state, &mut self.empty], change)?;
        let after = match change {
            NodeChange::Remove(_) => [0; 3],
            NodeChange::Add(_) | NodeChange::Replace(_) => {
                let topo = self.empty.topology().clone();
                for d in topo.device_range(idx) {
                    if !self.empty.device_healthy(d) {
                        self.empty.set_device_health(d, true);
                    }
                }
                node_totals(&topo, idx)
            }
        };
        for i in 0..3 {
            // Totals are sums clamped to at least 1 (see `Engine::new`); an unclamped one moves by the difference.
            self.totals[i] = if self.totals[i] > 1.0 {
                (self.totals[i] - before[i] as f64 + after[i] as f64).max(1.0)
            } else {
                let t = self.state.topology();
                let sum: u64 = (0..t.nodes.len() as NodeIdx).map(|n| node_totals(t, n)[i]).sum();
                sum.max(1) as f64
            };
        }
        Ok(idx)
    }
}

/// A node's share of the DRF totals: GPU milli, CPU milli, memory MiB.
fn node_totals(t: &sovra_placement::Topology, node: NodeIdx) -> [u64; 3] {
    let n = &t.nodes[node as usize];
    [u64::from(n.dev_count) * u64::from(GPU_MILLI), n.cpu_milli, n.memory_mib]
}
