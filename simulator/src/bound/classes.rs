//! A tighter ceiling where CPU, memory or GPU models bind: the **class LP**.
//!
//! Group the nodes into classes j (same GPU model, GPU count, CPU and memory; n_j nodes) and the arrived GPU
//! tasks into types k (same GPU count g, milli m, CPU, memory and allowed models; s_k tasks). Any placement of a
//! subset of the tasks gives y_kj = tasks of type k on nodes of class j, with:
//! - y_kj = 0 unless class j's model is allowed to type k and its nodes have at least g GPUs;
//! - Σ_j y_kj ≤ s_k;
//! - CPU and memory per class: Σ_k cpu_k y_kj ≤ n_j · cpu_j, and the same for memory (a class's nodes together
//!   hold at most their total);
//! - GPUs per class, for every threshold t in {0, 100, …, 500}: Σ_k g · f_t(m) · y_kj ≤ 1000 · n_j · gpus_j, with
//!   f_t the dual feasible function of the module above (each GPU's items have Σ f_t ≤ 1000; t = 0 is the volume).
//!
//! The LP optimum of Σ g · m · y_kj over real y ≥ 0 therefore bounds every policy's allocation. It sees what the
//! size-only relaxation cannot: tasks restricted to a few GPU models compete for those models' GPUs only, and a
//! class runs out of CPU or memory before its GPUs. It does not see node boundaries inside a class, nor that
//! CPU-only tasks take CPU (a subset may leave them out), so on CPU-heavy traces it stays loose.

use crate::trace::{TraceNode, TraceTask};
use std::collections::BTreeMap;

/// The thresholds t of the GPU rows.
const THRESHOLDS: [u64; 6] = [0, 100, 200, 300, 400, 500];

/// f_t(s) of the dual feasible function: 1000 above 1000 − t, 0 below t, s otherwise.
fn f_t(t: u64, s: u64) -> u64 {
    if s + t > 1000 {
        1000
    } else if s < t {
        0
    } else {
        s
    }
}

/// A task type: (GPUs, milli per GPU, CPU, memory, allowed models).
type TypeKey = (u32, u32, u64, u64, Vec<String>);

/// Node classes of a cluster and the arrived GPU tasks by type.
#[derive(Debug, Clone)]
pub struct ClassCeiling {
    /// (model, GPUs, CPU, memory) → node count.
    classes: Vec<((String, u32, u64, u64), u64)>,
    types: BTreeMap<TypeKey, u64>,
}

impl ClassCeiling {
    /// No task arrived yet, over the GPU nodes of `nodes`.
    pub fn new(nodes: &[TraceNode]) -> ClassCeiling {
        let mut classes: BTreeMap<(String, u32, u64, u64), u64> = BTreeMap::new();
        for n in nodes.iter().filter(|n| n.gpus > 0) {
            *classes.entry((n.model.clone(), n.gpus, n.cpu_milli, n.memory_mib)).or_default() += 1;
        }
        ClassCeiling { classes: classes.into_iter().collect(), types: BTreeMap::new() }
    }

    /// Adds an arrived task (CPU-only tasks allocate no GPU and are left out).
    pub fn add(&mut self, t: &TraceTask) {
        if t.num_gpu > 0 && t.gpu_milli > 0 {
            let key = (t.num_gpu, t.gpu_milli.min(1000), t.cpu_milli, t.memory_mib, t.gpu_models.clone());
            *self.types.entry(key).or_default() += 1;
        }
    }

    /// The LP optimum (GPU milli), rounded up; `None` if the solver fails.
    pub fn bound(&self) -> Option<u64> {
        use microlp::{ComparisonOp, OptimizationDirection, Problem, SolveOutcome};
        if self.types.is_empty() {
            return Some(0);
        }
        let mut p = Problem::new(OptimizationDirection::Maximize);
        // vars[k] = (class index, variable) of type k.
        let mut by_class: Vec<Vec<(usize, microlp::Variable)>> = vec![Vec::new(); self.classes.len()];
        let types: Vec<(&TypeKey, u64)> = self.types.iter().map(|(k, &v)| (k, v)).collect();
        for (k, ((g, m, _, _, models), supply)) in types.iter().enumerate() {
            let mut row = Vec::new();
            for (j, ((model, gpus, _, _), _)) in self.classes.iter().enumerate() {
                if *g > *gpus || !(models.is_empty() || models.iter().any(|a| a == model)) {
                    continue;
                }
                let v = p.add_var(f64::from(*g) * f64::from(*m), (0.0, *supply as f64));
                by_class[j].push((k, v));
                row.push((v, 1.0));
            }
            if !row.is_empty() {
                p.add_constraint(row, ComparisonOp::Le, *supply as f64);
            }
        }
        for (j, ((_, gpus, cpu, mem), n)) in self.classes.iter().enumerate() {
            let vars = &by_class[j];
            if vars.is_empty() {
                continue;
            }
            let n = *n as f64;
            let row = |f: &dyn Fn(&TypeKey) -> f64| vars.iter().map(|&(k, v)| (v, f(types[k].0))).collect::<Vec<_>>();
            p.add_constraint(row(&|t| t.2 as f64), ComparisonOp::Le, n * *cpu as f64);
            p.add_constraint(row(&|t| t.3 as f64), ComparisonOp::Le, n * *mem as f64);
            for t in THRESHOLDS {
                let r = row(&|k| f64::from(k.0) * f_t(t, u64::from(k.1)) as f64);
                p.add_constraint(r, ComparisonOp::Le, n * f64::from(*gpus) * 1000.0);
            }
        }
        match p.solve() {
            // Round up, with a margin for the solver's floating point.
            Ok(SolveOutcome::Solution(sol)) => Some((sol.objective() * (1.0 + 1e-9)).ceil() as u64 + 1),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(model: &str, gpus: u32, cpu: u64) -> TraceNode {
        TraceNode {
            name: format!("{model}-{gpus}-{cpu}"),
            cpu_milli: cpu,
            memory_mib: 1 << 20,
            gpus,
            model: model.into(),
        }
    }

    fn task(gpus: u32, milli: u32, cpu: u64, models: &[&str]) -> TraceTask {
        TraceTask {
            name: "t".into(),
            cpu_milli: cpu,
            memory_mib: 1,
            num_gpu: gpus,
            gpu_milli: milli,
            gpu_models: models.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn models_and_cpu_bind() {
        // One 8-GPU A node with 16 cores, one 2-GPU B node. Tasks: 10 whole GPUs restricted to B (only 2 fit), and
        // 8 whole GPUs at 4 cores each on any model (the A node's 16 cores hold 4 of them; B is taken).
        let mut c = ClassCeiling::new(&[node("A", 8, 16_000), node("B", 2, 64_000)]);
        for _ in 0..10 {
            c.add(&task(1, 1000, 1, &["B"]));
        }
        for _ in 0..8 {
            c.add(&task(1, 1000, 4000, &[]));
        }
        let b = c.bound().unwrap();
        // Best: 2 B-tasks on B, 4 any-tasks on A (CPU), so 6000; the LP may split fractionally but not above.
        assert!((6000..=6002).contains(&b), "{b}");
    }

    #[test]
    fn never_below_a_packing_brute_force_would_find() {
        // Two shares of 600 cannot share a GPU: on one 1-GPU node at most one fits (t = 500 row).
        let mut c = ClassCeiling::new(&[node("A", 1, 64_000)]);
        c.add(&task(1, 600, 1, &[]));
        c.add(&task(1, 600, 1, &[]));
        let b = c.bound().unwrap();
        assert!((600..=602).contains(&b), "{b}");
    }
}
