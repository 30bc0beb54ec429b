//! Fill mode: the FGD paper's experiment protocol (`docs/fgd-simulator-protocol.md` §0–§5), run on
//! Sovra's placement core.
//!
//! 1. The task list is sorted by name; FGD's target workload is taken from this *untuned* list (95% coverage).
//! 2. The list is shuffled with the seed, then inflated to `inflate` × the cluster's GPU capacity by appending
//!    clones drawn with replacement from the name-sorted list (the stop rule compares the clone's *per-GPU* milli, as
//!    the original does), or deflated by removing random tasks when it is already above.
//! 3. Tasks are placed one at a time; a task that fits nowhere fails and is never retried; nothing departs.
//! 4. After every task — placed or failed — a [`Step`] records arrived and allocated GPU milli and the cluster's
//!    fragmentation (FGD's measure against the target workload).
//!
//! Randomness comes from [`SplitMix`], seeded by the run's seed; node tie-breaks come from the placer's seeded node
//! order. Go's `math/rand` stream is not reproduced (the protocol notes per-seed results cannot be reproduced bit
//! for bit anyway); the statistics over seeds are what is compared.

use crate::bound::Ceiling;
use crate::bound::classes::ClassCeiling;
pub use crate::order::Stream;
use crate::order::order;
use crate::trace::{TRACE_CLASS, TraceNode, TraceTask, cluster_of};
use serde::Serialize;
use sovra_domain::{PolicySpec, Purpose};
use sovra_placement::fgd::{FragMemo, Shape, Workload};
use sovra_placement::{ClusterState, NodeIdx, Placer};
use std::collections::BTreeMap;

/// A small seeded generator (SplitMix64 over a counter). Written here rather than taken from `rand` so that a
/// seed means the same task order on every platform and with every crate version — the simulator's results are
/// meant to be re-run years later.
#[derive(Debug, Clone)]
pub struct SplitMix {
    state: u64,
}

impl SplitMix {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n` > 0), by Lemire's multiply-shift with rejection.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The FGD target workload of a task list: shapes of the name-sorted list, most frequent first, 95% coverage.
pub fn typical_workload(tasks: &[TraceTask]) -> Workload {
    let mut counts: BTreeMap<Shape, u64> = BTreeMap::new();
    for t in tasks {
        let j = t.to_job(Purpose::Training, TRACE_CLASS);
        *counts.entry(Shape::of(&j.resources)).or_default() += 1;
    }
    Workload::from_counts(&counts, 0.95)
}

/// Most tasks an inflated workload may hold (see [`check_workload`]).
pub const MAX_WORKLOAD_TASKS: u64 = 4_000_000;

/// Checks, before any run, that inflating `tasks` to `inflate` × `capacity_milli` is possible and stays within
/// [`MAX_WORKLOAD_TASKS`]: some task must ask for a GPU (else inflating never ends), and the expected task count —
/// the list's length scaled by target ÷ the list's GPU demand — must be within the limit. Returns that estimate.
pub fn check_workload(tasks: &[TraceTask], capacity_milli: u64, inflate: f64) -> Result<u64, String> {
    let demand: u64 = tasks.iter().map(TraceTask::total_gpu_milli).sum();
    let target = inflate * capacity_milli as f64;
    if demand == 0 {
        return Err("no task of the trace asks for a GPU: there is nothing to inflate to the cluster's GPUs".into());
    }
    let expected = (tasks.len() as f64 * (target / demand as f64).max(1.0)).ceil();
    if expected > MAX_WORKLOAD_TASKS as f64 {
        return Err(format!(
            "--inflate {inflate}: about {expected:.0} tasks to fill {:.0} GPUs, over the limit of {MAX_WORKLOAD_TASKS}; \
             lower --inflate or use a smaller node list",
            target / 1000.0
        ));
    }
    Ok(expected as u64)
}

/// Step 2 of the protocol: shuffle, then inflate (or deflate) to `inflate` × `capacity_milli`. Inflation stops at
/// [`MAX_WORKLOAD_TASKS`], and does not start when no task asks for a GPU ([`check_workload`] refuses both first).
pub fn build_workload(tasks: &[TraceTask], capacity_milli: u64, inflate: f64, rng: &mut SplitMix) -> Vec<TraceTask> {
    let mut sorted: Vec<TraceTask> = tasks.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut pods = sorted.clone();
    // Fisher–Yates from the end, as Go's rand.Shuffle.
    for i in (1..pods.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        pods.swap(i, j);
    }
    let target = (inflate * capacity_milli as f64) as u64;
    resize(&mut pods, &sorted, target, |n| rng.below(n as u64) as usize);
    pods
}

/// Inflates the shuffled `pods` with clones drawn from the name-sorted `sorted` until the next clone would pass
/// `target` GPU milli (the stop rule compares the clone's per-GPU milli, as the original does), or thins them by
/// random removals down to it. `draw(n)` is the random stream's index below `n`; every stream calls it in the same
/// order, so [`build_workload`] and the Go-ordered workload differ only in the numbers drawn.
pub(crate) fn resize(
    pods: &mut Vec<TraceTask>,
    sorted: &[TraceTask],
    target: u64,
    mut draw: impl FnMut(usize) -> usize,
) {
    let mut total: u64 = pods.iter().map(TraceTask::total_gpu_milli).sum();
    if total < target && sorted.iter().any(|t| t.total_gpu_milli() > 0) {
        let mut k = 0;
        while (pods.len() as u64) < MAX_WORKLOAD_TASKS {
            let clone = &sorted[draw(sorted.len())];
            if total + u64::from(clone.gpu_milli) > target {
                break;
            }
            total += clone.total_gpu_milli();
            pods.push(TraceTask { name: format!("{}-tuned-{k}", clone.name), ..clone.clone() });
            k += 1;
        }
    } else {
        while total > target && !pods.is_empty() {
            total -= pods.remove(draw(pods.len())).total_gpu_milli();
        }
    }
}

/// The state after one task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    /// GPU milli of every task tried so far, this one and failed ones included.
    pub arrived_milli: u64,
    /// GPU milli allocated.
    pub used_milli: u64,
    /// Σ over nodes of F(n), FGD's fragmentation (milli).
    pub frag_milli: f64,
    /// Σ over nodes of free GPU milli.
    pub free_milli: u64,
    /// Whether this task failed.
    pub failed: bool,
}

/// One fill run.
#[derive(Debug, Clone, Serialize)]
pub struct FillRun {
    /// The policy, as written on the command line.
    pub policy: String,
    /// The seed.
    pub seed: u64,
    /// Cluster GPU capacity, milli.
    pub capacity_milli: u64,
    /// Tasks tried.
    pub tasks: usize,
    /// Tasks that failed.
    pub failed: usize,
    /// One step per task, in order.
    pub steps: Vec<Step>,
    /// Placements outside the permitted zones (always 0; asserted).
    pub residency_violations: usize,
    /// The node (index in the node list) each task went to; `None` for failed tasks.
    #[serde(skip)]
    pub placements: Vec<Option<u32>>,
}

/// Per arrived-% bin X = 0..=`max` (rounded as [`bin`] does) of a run's `workload` (its arrival order), the ceiling
/// on allocation % ([`Ceiling`]) at the bin's last step — no policy can allocate more at any step of the bin, since the bound only grows with arrivals.
/// It depends on the seed (the arrival order), not on the policy. The threshold bound is used at every bin,
/// tightened by the configuration LP and the class LP ([`ClassCeiling`]: CPU, memory, GPU models) at the bins in
/// `lp_bins`, and each bin's value is then lowered to the smallest
/// value of the bins after it (valid: the relaxation's optimum only grows with arrivals).
pub fn ceiling_by_bin(nodes: &[TraceNode], workload: &[TraceTask], max: usize, lp_bins: &[usize]) -> Vec<Option<f64>> {
    let devices: u64 = nodes.iter().map(|n| u64::from(n.gpus)).sum();
    let capacity = devices * u64::from(sovra_domain::GPU_MILLI);
    let pct = |milli: u64| milli as f64 * 100.0 / capacity as f64;
    let mut out = vec![None; max + 1];
    let mut ceiling = Ceiling::new(devices);
    let mut classes = ClassCeiling::new(nodes);
    let mut arrived = 0u64;
    let mut record = |x: usize, c: &Ceiling, k: &ClassCeiling| {
        if x <= max {
            let bound = if lp_bins.contains(&x) {
                let size_only = c.tight_bound();
                k.bound().map_or(size_only, |b| b.min(size_only))
            } else {
                c.bound()
            };
            out[x] = Some(pct(bound));
        }
    };
    for (i, task) in workload.iter().enumerate() {
        let (before, after) = (bin_of(arrived, capacity), bin_of(arrived + task.total_gpu_milli(), capacity));
        if after != before && i > 0 {
            record(before, &ceiling, &classes);
        }
        ceiling.add(task.num_gpu, task.gpu_milli);
        classes.add(task);
        arrived += task.total_gpu_milli();
    }
    record(bin_of(arrived, capacity), &ceiling, &classes);
    // The relaxation's optimum only grows as tasks arrive, so a later bin's bound also bounds every earlier step:
    // a suffix minimum is still a valid ceiling, and carries the LP's tightness back to the bins before it.
    let mut best = f64::INFINITY;
    for x in out.iter_mut().rev().flatten() {
        best = best.min(*x);
        *x = best;
    }
    out
}

/// The bin of an arrived amount: its percentage of `capacity`, rounded half to even.
fn bin_of(arrived: u64, capacity: u64) -> usize {
    (arrived as f64 * 100.0 / capacity as f64).round_ties_even() as usize
}

/// How FGD (or a policy of ours) gets its target workload.
#[derive(Debug, Clone)]
pub enum Target {
    /// The trace's typical mix, computed up front (the FGD paper hands FGD the whole trace's mix).
    Trace,
    /// Learned online from the tasks seen so far (the placer's default).
    Learned,
}

/// Runs the protocol for one policy and seed, ordered by Go's `math/rand` as the FGD paper's simulator is
/// ([`Stream::Go`]).
pub fn run_fill(
    nodes: &[TraceNode],
    tasks: &[TraceTask],
    policy: &PolicySpec,
    target: &Target,
    seed: u64,
    inflate: f64,
) -> FillRun {
    run_fill_with(nodes, tasks, &typical_workload(tasks), policy, target, seed, inflate, Stream::Go)
}

/// [`run_fill`] with the target mix `typical` of `tasks` computed by the caller (once per trace) and the random
/// `stream` that orders the run.
#[allow(clippy::too_many_arguments)]
pub fn run_fill_with(
    nodes: &[TraceNode],
    tasks: &[TraceTask],
    typical: &Workload,
    policy: &PolicySpec,
    target: &Target,
    seed: u64,
    inflate: f64,
    stream: Stream,
) -> FillRun {
    let capacity: u64 = nodes.iter().map(|n| u64::from(n.gpus)).sum::<u64>() * u64::from(sovra_domain::GPU_MILLI);
    let o = order(nodes, tasks, capacity, inflate, seed, stream);
    run_sequence_ordered(nodes, &o.workload, typical, policy, target, seed, o.tie_order.as_deref())
}

/// Places `workload` in order on the trace cluster (steps 3–4 of the protocol), ties broken by the placer's seeded
/// node order. FGD measures fragmentation against `typical`, which a [`Target::Trace`] policy is also handed.
pub fn run_sequence(
    nodes: &[TraceNode],
    workload: &[TraceTask],
    typical: &Workload,
    policy: &PolicySpec,
    target: &Target,
    seed: u64,
) -> FillRun {
    run_sequence_ordered(nodes, workload, typical, policy, target, seed, None)
}

/// [`run_sequence`] with ties broken by `tie_order` (node indices, first preferred) when given.
pub fn run_sequence_ordered(
    nodes: &[TraceNode],
    workload: &[TraceTask],
    typical: &Workload,
    policy: &PolicySpec,
    target: &Target,
    seed: u64,
    tie_order: Option<&[NodeIdx]>,
) -> FillRun {
    let cfg = cluster_of(nodes);
    let mut state = ClusterState::from_config(&cfg).expect("a trace cluster is always valid");
    let topo = state.topology().clone();
    let capacity = topo.total_gpu_milli();
    let typical = typical.clone();
    let mut placer = Placer::new(policy.clone(), seed);
    if let Some(order) = tie_order {
        placer = placer.with_tie_order(order);
    }
    if matches!(target, Target::Trace) {
        placer = placer.with_workload(typical.clone());
    }
    // Fragmentation is always measured against the trace's typical mix, whatever the policy.
    let mut frag = FragMemo::new(&typical, &topo);
    let mut node_frag: Vec<f64> = (0..topo.nodes.len() as u32).map(|n| frag.node_frag(&state, n)).collect();
    let mut frag_total: f64 = node_frag.iter().sum();
    let mut free_total = capacity;
    let (mut arrived, mut used) = (0u64, 0u64);
    let mut steps = Vec::with_capacity(workload.len());
    let mut placements = Vec::with_capacity(workload.len());
    let mut failed = 0;
    let mut violations = 0;
    for task in workload {
        let job = task.to_job(Purpose::Training, TRACE_CLASS);
        arrived += task.total_gpu_milli();
        placer.observe_admitted(&job);
        let outcome = placer.place(&state, &job);
        let ok = match outcome {
            Ok(d) => {
                state.apply(&d).expect("a decision applies to the state it was made on");
                for r in &d.replicas {
                    // Sovereignty in simulation: every placement must be in a permitted zone.
                    if topo.pools[topo.nodes[r.node as usize].pool as usize].purpose != job.kind {
                        violations += 1;
                    }
                    let f = frag.node_frag(&state, r.node);
                    frag_total += f - node_frag[r.node as usize];
                    node_frag[r.node as usize] = f;
                }
                used += task.total_gpu_milli();
                free_total -= task.total_gpu_milli();
                placements.push(d.replicas.first().map(|r| r.node));
                true
            }
            Err(_) => {
                failed += 1;
                placements.push(None);
                false
            }
        };
        steps.push(Step {
            arrived_milli: arrived,
            used_milli: used,
            frag_milli: frag_total,
            free_milli: free_total,
            failed: !ok,
        });
    }
    assert_eq!(violations, 0, "placements outside permitted zones");
    FillRun {
        policy: policy.to_string(),
        seed,
        capacity_milli: capacity,
        tasks: workload.len(),
        failed,
        steps,
        residency_violations: violations,
        placements,
    }
}

/// Python's `round(x, 2)` on the value's decimal representation: half to even.
fn round2(x: f64) -> f64 {
    let scaled = x * 100.0;
    let r = scaled.round();
    let r = if (scaled - scaled.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - scaled.signum() } else { r };
    r / 100.0
}

/// The protocol's binning (§5): for X = 0..=`max`, the mean of `value(step)` over the steps whose arrived
/// percentage rounds (half to even) to X; if there are none, over X−1..=X+1; `None` if still none.
pub fn bin(run: &FillRun, max: usize, value: impl Fn(&Step) -> f64) -> Vec<Option<f64>> {
    let cap = run.capacity_milli as f64;
    let mut sums = vec![(0.0f64, 0u32); max + 2];
    for s in &run.steps {
        let pct = s.arrived_milli as f64 * 100.0 / cap;
        let x = pct.round_ties_even();
        if x >= 0.0 && (x as usize) <= max + 1 {
            let e = &mut sums[x as usize];
            e.0 += round2(value(s));
            e.1 += 1;
        }
    }
    (0..=max)
        .map(|x| {
            let mean = |lo: usize, hi: usize| {
                let (s, n) = sums[lo..=hi.min(max + 1)].iter().fold((0.0, 0), |a, e| (a.0 + e.0, a.1 + e.1));
                (n > 0).then(|| round2(s / f64::from(n)))
            };
            mean(x, x).or_else(|| mean(x.saturating_sub(1), x + 1))
        })
        .collect()
}

/// Allocation % of the cluster after a step.
pub fn alloc_pct(run: &FillRun) -> impl Fn(&Step) -> f64 + '_ {
    move |s| s.used_milli as f64 * 100.0 / run.capacity_milli as f64
}

/// FGD's fragmentation ratio % after a step: 100 · Σ F(n) / Σ free.
pub fn frag_ratio_pct(s: &Step) -> f64 {
    if s.free_milli == 0 { 0.0 } else { 100.0 * s.frag_milli / s.free_milli as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_uniform_enough_and_seeded() {
        let mut a = SplitMix::new(42);
        let mut b = SplitMix::new(42);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[a.below(10) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
    }

    #[test]
    fn round2_is_half_even_like_python() {
        assert_eq!(round2(95.234), 95.23);
        assert_eq!(round2(0.125), 0.12);
        assert_eq!(round2(0.375), 0.38);
    }

    fn task(name: &str, gpus: u32, milli: u32) -> TraceTask {
        TraceTask {
            name: name.into(),
            cpu_milli: 1000,
            memory_mib: 1,
            num_gpu: gpus,
            gpu_milli: milli,
            gpu_models: vec![],
        }
    }

    #[test]
    fn inflation_follows_the_protocol_stop_rule() {
        let tasks = vec![task("a", 1, 1000), task("b", 2, 1000), task("c", 0, 0), task("d", 1, 500)];
        let mut rng = SplitMix::new(7);
        let w = build_workload(&tasks, 10_000, 1.3, &mut rng);
        let total: u64 = w.iter().map(|t| t.total_gpu_milli()).sum();
        // Originals first (a permutation of the four), clones after; total ≤ target + one clone's extra GPUs.
        let mut first: Vec<&str> = w[..4].iter().map(|t| t.name.as_str()).collect();
        first.sort();
        assert_eq!(first, ["a", "b", "c", "d"]);
        assert!(w[4..].iter().all(|t| t.name.contains("-tuned-")));
        assert!(total <= 13_000 + 1000, "{total}");
        assert!(total + 1000 > 13_000, "stops only when the next clone would overshoot: {total}");
        // Deflation removes tasks until at or under the target.
        let big: Vec<TraceTask> = (0..40).map(|i| task(&format!("t{i:02}"), 1, 1000)).collect();
        let w = build_workload(&big, 10_000, 1.3, &mut SplitMix::new(1));
        assert_eq!(w.iter().map(|t| t.total_gpu_milli()).sum::<u64>(), 13_000);
    }

    #[test]
    fn binning_averages_steps_per_rounded_percent() {
        let step =
            |a: u64, u: u64| Step { arrived_milli: a, used_milli: u, frag_milli: 0.0, free_milli: 0, failed: false };
        let run = FillRun {
            policy: "x".into(),
            seed: 0,
            capacity_milli: 1000,
            tasks: 3,
            failed: 0,
            // arrived 10.0% → bin 10; 10.5% → bin 10 (half to even); 11.5% → bin 12.
            steps: vec![step(100, 100), step(105, 90), step(115, 115)],
            residency_violations: 0,
            placements: vec![],
        };
        let b = bin(&run, 13, alloc_pct(&run));
        assert_eq!(b[10], Some(9.5)); // mean of 10.0 and 9.0
        assert_eq!(b[12], Some(11.5));
        assert_eq!(b[11], Some(10.17), "empty bin: mean over 10..=12 = (10 + 9 + 11.5) / 3");
        assert_eq!(b[0], None);
    }
}
