//! How the cost of one decision grows with the cluster: the synthetic cluster ([`synth::cluster`], 8 GPUs per node,
//! 24 zones, 48 pools) at 1k, 5k, 10k and 100k nodes, best-fit and FGD, one thread.
//!
//! One iteration = one decision (place + apply) in a stream of jobs ([`synth::jobs`]) onto one state, reset to
//! empty at 85% allocation or after 100 consecutive refusals — the measure of `benches/placement.rs` at the
//! repository root (see `BENCHMARKS.md`, "Placement core throughput").
//!
//! `enroll/*` measures topology patching: enrolling nodes one by one into a running state with
//! [`ClusterState::add_node`] (keeps usage, O(1) amortised per node) against rebuilding the state from the grown
//! configuration after each node (the old path, O(n) per node).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sovra_domain::PolicySpec;
use sovra_placement::synth::DecisionStream;
use sovra_placement::{ClusterState, DEFAULT_SEED, Placer, synth};
use std::hint::black_box;
use std::time::Duration;

fn scaling(c: &mut Criterion) {
    let jobs = synth::jobs(20_000, 2);
    let workload = synth::workload();
    let mut g = c.benchmark_group("scaling");
    g.throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for nodes in [1_000, 5_000, 10_000, 100_000] {
        let cfg = synth::cluster(nodes, 1);
        for policy in ["best-fit", "fgd"] {
            // 0: every candidate scored (the default); 256: `scheduling.max_feasible_nodes: 256`.
            for cap in [0u32, 256] {
                let p: PolicySpec = policy.parse().expect("known policy");
                let placer = Placer::new(p, DEFAULT_SEED).with_target_workload(&workload).with_max_feasible_nodes(cap);
                let mut s = DecisionStream::new(&cfg, jobs.clone(), placer).expect("the bench's cluster is valid");
                let name = if cap == 0 { format!("{policy}/{nodes}") } else { format!("{policy}-max{cap}/{nodes}") };
                g.bench_function(name, |b| b.iter(|| black_box(s.step().expect("the core's decisions apply"))));
            }
        }
    }
    g.finish();
}

fn enroll(c: &mut Criterion) {
    let mut g = c.benchmark_group("enroll");
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(2));
    for nodes in [1_000usize, 10_000] {
        let full = synth::cluster(nodes, 1);
        let mut base = full.clone();
        base.nodes.clear();
        g.throughput(Throughput::Elements(nodes as u64));
        g.bench_function(format!("patch/{nodes}"), |b| {
            b.iter_batched(
                || ClusterState::from_config(&base).expect("valid"),
                |mut state| {
                    for n in &full.nodes {
                        state.add_node(n).expect("new node");
                    }
                    state
                },
                BatchSize::LargeInput,
            )
        });
        if nodes <= 1_000 {
            // The old path: a fresh state over the grown configuration after each node, O(n) each.
            g.bench_function(format!("rebuild/{nodes}"), |b| {
                b.iter(|| {
                    let mut cfg = base.clone();
                    let mut state = ClusterState::from_config(&cfg).expect("valid");
                    for n in &full.nodes {
                        cfg.nodes.push(n.clone());
                        state = ClusterState::from_config(&cfg).expect("valid");
                    }
                    state
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, scaling, enroll);
criterion_main!(benches);
