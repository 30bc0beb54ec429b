//! FGD's score of a node for one replica (and the device it picks for a share), through the per-(shape, node)
//! score cache.

use super::{CacheEntry, Placer};
use crate::fgd::score_of_delta;
use crate::filter::JobNeeds;
use crate::snapshot::{ClusterState, NodeIdx, Topology};
use sovra_domain::{GPU_MILLI, NvlinkWish};
use std::sync::Arc;

impl Placer {
    /// [`Placer::fgd`] through the per-(shape, node) cache.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fgd_cached(
        &mut self,
        state: &ClusterState,
        topo: &Arc<Topology>,
        node: NodeIdx,
        needs: &JobNeeds,
        job_hash: u64,
        replica: u32,
        shape: Option<usize>,
    ) -> (u32, Option<u16>) {
        let epoch = state.epoch(node);
        if let Some(sh) = shape {
            let e = self.fgd_cache.entries[sh][node as usize];
            if e.epoch == epoch {
                return (e.score, (e.device != u16::MAX).then_some(e.device));
            }
        }
        let (score, device) = self.fgd(state, topo, node, needs, job_hash, replica);
        if let Some(sh) = shape {
            self.fgd_cache.entries[sh][node as usize] = CacheEntry { epoch, score, device: device.unwrap_or(u16::MAX) };
        }
        (score, device)
    }

    /// FGD's score of `node` (§4 of the protocol) and, for a sharing replica, the device it picks. The memo must
    /// have been prepared for this topology (`memo_for`).
    fn fgd(
        &mut self,
        state: &ClusterState,
        topo: &Arc<Topology>,
        node: NodeIdx,
        needs: &JobNeeds,
        job_hash: u64,
        replica: u32,
    ) -> (u32, Option<u16>) {
        let range = topo.device_range(node);
        let mut stack = [0u16; 16];
        let mut heap = Vec::new();
        let free: &mut [u16] = if range.len() <= stack.len() {
            &mut stack[..range.len()]
        } else {
            heap.resize(range.len(), 0);
            &mut heap
        };
        for (slot, d) in free.iter_mut().zip(range.clone()) {
            *slot = state.device_free(d);
        }
        let cpu_before = state.summary(node).cpu_free;
        let cpu_after = cpu_before - needs.cpu;
        let uniform = topo.nodes[node as usize].uniform_model.is_some();
        let whole_devices = if needs.gpus > 0 && !needs.is_sharing() && !(uniform && needs.nvlink == NvlinkWish::None) {
            // Mixed models or an island choice: take exactly the devices the replica would get.
            Some(self.choose_devices(state, topo, node, needs, None, job_hash, replica))
        } else {
            None
        };
        let memo = &mut self.memo.as_mut().expect("memo_for ran before scoring").2;
        if memo.is_empty() {
            return (50, None);
        }
        let before = memo.frag(topo, node, free, cpu_before);
        if needs.is_sharing() {
            // Each device that can take the share, in index order; the first reaching the best score wins. On a
            // node of one model, devices with equal free milli give equal scores: compute each value once.
            let mut best: Option<(u32, u16)> = None;
            let mut seen: [(u16, u32); 16] = [(u16::MAX, 0); 16];
            let mut nseen = 0;
            for (i, d) in range.enumerate() {
                let f = free[i];
                if f < needs.milli || !needs.model_ok(topo.devices[d].model) {
                    continue;
                }
                let cached = if uniform { seen[..nseen].iter().find(|(v, _)| *v == f).map(|&(_, s)| s) } else { None };
                let s = cached.unwrap_or_else(|| {
                    free[i] = f - needs.milli;
                    let after = memo.frag(topo, node, free, cpu_after);
                    free[i] = f;
                    let s = score_of_delta(before, after);
                    if nseen < seen.len() {
                        seen[nseen] = (f, s);
                        nseen += 1;
                    }
                    s
                });
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, i as u16));
                }
            }
            return best.map_or((0, None), |(s, i)| (s, Some(i)));
        }
        match whole_devices {
            Some(chosen) => {
                for a in chosen {
                    free[a.device as usize] -= a.milli;
                }
            }
            None => {
                // One model, no island wish: the lowest-index fully free devices (FGD protocol §4).
                let mut k = needs.gpus;
                for f in free.iter_mut() {
                    if k == 0 {
                        break;
                    }
                    if u32::from(*f) == GPU_MILLI {
                        *f = 0;
                        k -= 1;
                    }
                }
            }
        }
        let after = memo.frag(topo, node, free, cpu_after);
        (score_of_delta(before, after), None)
    }
}
