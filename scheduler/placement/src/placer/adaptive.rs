//! The caller-given tie order ([`Placer::with_tie_order`]) and `adaptive-first-fit`'s weight factor.

use super::{ADAPTIVE_HIGH, ADAPTIVE_LOW, Placer};
use crate::score;
use crate::snapshot::NodeIdx;
use sovra_domain::{GPU_MILLI, Job};

impl Placer {
    /// Breaks ties (and orders `first-fit`) by `order` — node indices, first preferred — instead of the seeded
    /// node order. Nodes missing from `order` come after those in it, in the cluster's order. The simulator gives
    /// the FGD paper's node order this way (its random node-name prefixes, drawn with Go's `math/rand`).
    pub fn with_tie_order(mut self, order: &[NodeIdx]) -> Placer {
        let len = order.len();
        let mut ranks: Vec<u64> = Vec::new();
        for (pos, &n) in order.iter().enumerate() {
            let i = n as usize;
            if i >= ranks.len() {
                ranks.resize(i + 1, u64::MAX);
            }
            ranks[i] = score::spread_rank(pos, len);
        }
        self.tie_ranks = Some(ranks.into());
        self
    }

    /// The tie-break rank of `node` (lower wins): the caller's order if given, else the seeded one.
    #[inline]
    pub(super) fn tie_rank(&self, node: NodeIdx) -> u64 {
        match &self.tie_ranks {
            Some(r) => r.get(node as usize).copied().unwrap_or(u64::MAX),
            None => score::node_rank(self.seed, node),
        }
    }

    /// The share of the admitted jobs' GPU demand that multi-GPU replicas ask for (0 before any GPU job).
    pub fn multi_gpu_demand_share(&self) -> f64 {
        let (multi, all) = self.demand;
        if all == 0 { 0.0 } else { multi as f64 / all as f64 }
    }

    /// The weight factor, in percent, of `adaptive-first-fit` for a replica of `job`: 100 for CPU-only and sharing
    /// replicas; for whole-GPU replicas 100 while multi-GPU replicas ask at most [`ADAPTIVE_LOW`] of the admitted
    /// GPU demand, falling linearly to 0 at [`ADAPTIVE_HIGH`].
    pub fn adaptive_first_fit_percent(&self, job: &Job) -> u32 {
        let r = &job.resources;
        if r.gpus == 0 || r.gpu_milli < GPU_MILLI {
            return 100;
        }
        let d = self.multi_gpu_demand_share();
        (100.0 * ((ADAPTIVE_HIGH - d) / (ADAPTIVE_HIGH - ADAPTIVE_LOW)).clamp(0.0, 1.0)).round() as u32
    }

    /// Caps the search (`scheduling.max_feasible_nodes`): a replica goes to the best of the first `n` feasible
    /// nodes, in the order of its permitted pools and of each pool's nodes (the cluster file's order), instead of
    /// the best of all — kube-scheduler's `percentageOfNodesToScore` idea, as an absolute count. The cost of a
    /// decision then stops growing with the cluster: a scan ends after `n` feasible nodes (plus the infeasible ones
    /// met on the way), so nodes early in each pool fill first. A job that fits nowhere is still checked against every
    /// node, so its explanation is complete. 0 (the default) scores every candidate: the best placement.
    pub fn with_max_feasible_nodes(mut self, n: u32) -> Placer {
        self.max_feasible = n;
        self
    }
}
