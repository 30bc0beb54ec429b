//! Fragmentation gradient descent (FGD; Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads
//! with Fragmentation Gradient Descent", USENIX ATC'23), exactly as `docs/fgd-simulator-protocol.md`
//! §4 defines it.
//!
//! A node's *fragmentation* against a target workload of replica shapes t with shares p_t is
//! F(n) = Σ_t p_t · frag_t(n), where, with L the node's total free milli:
//! - frag_t = L when t is CPU-only, when t cannot use the node's GPU model, or when t does not fit (too few GPUs
//!   with free ≥ t.milli, or too little CPU);
//! - otherwise frag_t = the free milli of the GPUs t could *not* use (free < t.milli).
//!
//! A placement's score is trunc(100 · σ((F(n) − F(n′)) / 1000)), n′ being the node after placement: the less the
//! placement grows fragmentation, the higher the score. The integer truncation is deliberate (it reproduces the
//! published results; ties fall through to the seeded node order).
//!
//! F depends only on the node's class (its device models), which CPU thresholds of the workload its free CPU
//! clears, and the multiset of free milli per device; [`FragMemo`] memoises it on exactly that key, so a decision
//! costs a hash lookup per candidate instead of |workload| × |devices| arithmetic.

use crate::snapshot::{ClusterState, NodeIdx, Topology};
use rustc_hash::FxHashMap;
use sovra_domain::{GPU_MILLI, Resources};
use std::collections::BTreeMap;

/// One replica shape of a target workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    /// CPU, milli-cores.
    pub cpu_milli: u64,
    /// Milli per GPU (0 for CPU-only).
    pub gpu_milli: u32,
    /// Number of GPUs.
    pub gpus: u32,
    /// Allowed models (empty: any).
    pub gpu_models: Vec<String>,
}

impl Shape {
    /// The shape of a replica.
    pub fn of(r: &Resources) -> Shape {
        Shape { cpu_milli: r.cpu_milli, gpu_milli: r.gpu_milli, gpus: r.gpus, gpu_models: r.gpu_models.clone() }
    }
}

/// A target workload: shapes with shares summing to 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workload {
    /// (shape, share), in a fixed order.
    pub shares: Vec<(Shape, f64)>,
}

impl Workload {
    /// A workload from (shape, count) pairs, keeping — as the FGD simulator's `GetTypicalPods` does — the most
    /// frequent shapes (ties broken by the shape, descending) until they cover at least `coverage` (0.95 there) of
    /// all counts, then renormalising.
    pub fn from_counts(counts: &BTreeMap<Shape, u64>, coverage: f64) -> Workload {
        let total: u64 = counts.values().sum();
        if total == 0 {
            return Workload::default();
        }
        let mut sorted: Vec<(&Shape, u64)> = counts.iter().map(|(s, &c)| (s, c)).collect();
        sorted.sort_by(|a, b| {
            b.1.cmp(&a.1).then_with(|| {
                (b.0.cpu_milli, b.0.gpu_milli, b.0.gpus, &b.0.gpu_models).cmp(&(
                    a.0.cpu_milli,
                    a.0.gpu_milli,
                    a.0.gpus,
                    &a.0.gpu_models,
                ))
            })
        });
        let mut kept = Vec::new();
        let mut cum = 0u64;
        for (s, c) in sorted {
            kept.push((s.clone(), c));
            cum += c;
            if cum as f64 >= coverage * total as f64 {
                break;
            }
        }
        let sum: u64 = kept.iter().map(|(_, c)| c).sum();
        Workload { shares: kept.into_iter().map(|(s, c)| (s, c as f64 / sum as f64)).collect() }
    }
}

/// A workload resolved against a topology's model ids.
#[derive(Debug, Clone)]
struct Compiled {
    cpu: u64,
    milli: u16,
    gpus: u16,
    /// Allowed model ids (by model id), or `None` for any.
    mask: Option<Vec<bool>>,
    p: f64,
}

/// FGD's fragmentation measure over one topology and one workload, with its memo.
#[derive(Debug)]
pub struct FragMemo {
    shapes: Vec<Compiled>,
    cpu_thresholds: Vec<u64>,
    memo: FxHashMap<Key, f64>,
}

/// Memo key: node class, CPU rank, free milli per device (sorted when the node's devices share one model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    class: u32,
    cpu_rank: u16,
    len: u8,
    free: [u16; MEMO_MAX_DEVICES],
}

/// Nodes with more devices than this are computed without the memo.
const MEMO_MAX_DEVICES: usize = 16;

/// The memo is cleared when it grows past this many entries (bounded memory on long runs).
const MEMO_MAX_ENTRIES: usize = 1 << 20;

impl FragMemo {
    /// Resolves `workload` against `topo`.
    pub fn new(workload: &Workload, topo: &Topology) -> FragMemo {
        let shapes: Vec<Compiled> = workload
            .shares
            .iter()
            .map(|(s, p)| Compiled {
                cpu: s.cpu_milli,
                milli: s.gpu_milli.min(GPU_MILLI) as u16,
                gpus: s.gpus.min(u32::from(u16::MAX)) as u16,
                mask: (!s.gpu_models.is_empty())
                    .then(|| topo.models.iter().map(|m| s.gpu_models.iter().any(|a| a == m)).collect()),
                p: *p,
            })
            .collect();
        let mut cpu_thresholds: Vec<u64> = shapes.iter().map(|s| s.cpu).collect();
        cpu_thresholds.sort_unstable();
        cpu_thresholds.dedup();
        FragMemo { shapes, cpu_thresholds, memo: FxHashMap::default() }
    }

    /// Whether the workload is empty (FGD then scores every node 50).
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    /// F(n) of a node whose devices have `models` and `free` milli, with `cpu_left` free CPU.
    pub fn frag_of(&self, models: &[u16], free: &[u16], cpu_left: u64) -> f64 {
        let total: u32 = free.iter().map(|&f| u32::from(f)).sum();
        let l = f64::from(total);
        let mut f = 0.0;
        for t in &self.shapes {
            let frag = if t.milli == 0 || cpu_left < t.cpu {
                l
            } else {
                let (mut count, mut usable) = (0u16, 0u32);
                for (&m, &fr) in models.iter().zip(free) {
                    if fr >= t.milli && t.mask.as_ref().is_none_or(|mask| mask[m as usize]) {
                        count += 1;
                        usable += u32::from(fr);
                    }
                }
                if count >= t.gpus { f64::from(total - usable) } else { l }
            };
            f += t.p * frag;
        }
        f
    }

    /// F(n) with the memo: `free` is the node's free milli per device (0 for unhealthy devices).
    pub fn frag(&mut self, topo: &Topology, node: NodeIdx, free: &[u16], cpu_left: u64) -> f64 {
        let info = &topo.nodes[node as usize];
        let models = || topo.devices[topo.device_range(node)].iter().map(|d| d.model).collect::<Vec<_>>();
        if free.len() > MEMO_MAX_DEVICES {
            return self.frag_of(&models(), free, cpu_left);
        }
        let mut key = Key {
            class: info.class,
            cpu_rank: self.cpu_thresholds.partition_point(|&c| c <= cpu_left) as u16,
            len: free.len() as u8,
            free: [0; MEMO_MAX_DEVICES],
        };
        key.free[..free.len()].copy_from_slice(free);
        if info.uniform_model.is_some() {
            key.free[..free.len()].sort_unstable();
        }
        if let Some(&v) = self.memo.get(&key) {
            return v;
        }
        let v = self.frag_of(&models(), free, cpu_left);
        if self.memo.len() >= MEMO_MAX_ENTRIES {
            self.memo.clear();
        }
        self.memo.insert(key, v);
        v
    }

    /// F(n) of a node in `state`.
    pub fn node_frag(&mut self, state: &ClusterState, node: NodeIdx) -> f64 {
        let topo = state.topology().clone();
        let mut buf = [0u16; MEMO_MAX_DEVICES];
        let range = topo.device_range(node);
        let cpu = state.summary(node).cpu_free;
        if range.len() <= MEMO_MAX_DEVICES {
            for (i, d) in range.clone().enumerate() {
                buf[i] = state.device_free(d);
            }
            self.frag(&topo, node, &buf[..range.len()], cpu)
        } else {
            let free: Vec<u16> = range.map(|d| state.device_free(d)).collect();
            self.frag(&topo, node, &free, cpu)
        }
    }
}

/// FGD's integer score of a fragmentation change: trunc(100 · σ((F(n) − F(n′)) / 1000)).
pub fn score_of_delta(before: f64, after: f64) -> u32 {
    let x = (before - after) / 1000.0;
    let s = 100.0 / (1.0 + (-x).exp());
    s.clamp(0.0, 100.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memo(shapes: &[(u64, u32, u32, f64)]) -> FragMemo {
        let compiled = shapes
            .iter()
            .map(|&(cpu, milli, gpus, p)| Compiled { cpu, milli: milli as u16, gpus: gpus as u16, mask: None, p })
            .collect();
        FragMemo { shapes: compiled, cpu_thresholds: vec![], memo: FxHashMap::default() }
    }

    #[test]
    fn fragmentation_hand_computed() {
        // Workload: half 1×500m sharing replicas, half 2 whole GPUs; all need 4 CPUs.
        let m = memo(&[(4000, 500, 1, 0.5), (4000, 1000, 2, 0.5)]);
        let models = [0u16; 4];
        // Free [1000, 1000, 300, 0], 8 CPUs left. L = 2300.
        // t1 (500m): usable GPUs 0,1 (free ≥ 500) → frag = 2300 − 2000 = 300.
        // t2 (2×1000): 2 fully free GPUs → fits → frag = 2300 − 2000 = 300.
        // F = 0.5·300 + 0.5·300 = 300.
        assert_eq!(m.frag_of(&models, &[1000, 1000, 300, 0], 8000), 300.0);
        // Free [1000, 400, 300, 0]: t1 usable = GPU 0 → 1700 − 1000 = 700; t2 needs 2 whole → L = 1700.
        // F = 0.5·700 + 0.5·1700 = 1200.
        assert_eq!(m.frag_of(&models, &[1000, 400, 300, 0], 8000), 1200.0);
        // Same free GPUs but only 2 CPUs left: neither fits → F = L = 1700.
        assert_eq!(m.frag_of(&models, &[1000, 400, 300, 0], 2000), 1700.0);
    }

    #[test]
    fn cpu_only_shapes_count_all_free_gpu_as_fragmented() {
        let m = memo(&[(1000, 0, 0, 1.0)]);
        assert_eq!(m.frag_of(&[0, 0], &[1000, 250], 64000), 1250.0);
    }

    #[test]
    fn score_table() {
        // Δ = 0 → σ(0) = 0.5 → 50. Δ = +1000 (fragmentation falls by 1000) → σ(1) = 0.731 → 73.
        // Δ = −1000 → σ(−1) = 0.269 → 26. Huge increase → 0; huge decrease → 99 (σ < 1 before truncation).
        for (before, after, want) in
            [(500.0, 500.0, 50), (1500.0, 500.0, 73), (500.0, 1500.0, 26), (0.0, 1e6, 0), (1e4, 0.0, 99)]
        {
            assert_eq!(score_of_delta(before, after), want, "{before} → {after}");
        }
    }

    #[test]
    fn typical_workload_keeps_95_percent_and_renormalises() {
        let shape = |m: u32| Shape { cpu_milli: 1000, gpu_milli: m, gpus: 1, gpu_models: vec![] };
        let counts: BTreeMap<Shape, u64> =
            [(shape(1000), 90), (shape(500), 6), (shape(250), 3), (shape(100), 1)].into();
        let w = Workload::from_counts(&counts, 0.95);
        // 90 < 95, 90+6 = 96 ≥ 95: keep two shapes, shares 90/96 and 6/96.
        assert_eq!(w.shares.len(), 2);
        assert!((w.shares[0].1 - 0.9375).abs() < 1e-12);
        assert_eq!(w.shares[1].0, shape(500));
    }
}
