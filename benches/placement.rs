//! Placement throughput of the pure core, one thread.
//!
//! Each benchmark streams jobs through one [`Placer`] onto one cluster state, applying every decision (as the live
//! scheduler does), and resets the state to empty when it is 85% allocated or after 100 consecutive refusals.
//! One iteration = one decision (place + apply). Clusters:
//! - `synthetic-5000`: 5,000 nodes / 40,000 GPUs over 24 zones and 48 pools ([`sovra_placement::synth`]), jobs over
//!   five residency classes;
//! - `alibaba-1213`: the 1,213 GPU nodes of the Alibaba trace, tasks of `openb_pod_list_default.csv` shuffled.
//!
//! `fgd-cold` decides with a fresh placer (empty memo) each time: the cost of one isolated pure call.
//!
//! `enroll-engine` enrolls the synthetic cluster's nodes one by one into an engine with 200 jobs running:
//! [`Engine::upsert_node`] (patches the topology in place) against [`Engine::rebuild`] over the grown cluster after
//! each node (the old path). One iteration = the whole enrollment; throughput = nodes enrolled per second.

use criterion::BatchSize;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sovra_domain::{Job, PolicySpec, Purpose, ScorerKind, WorkloadShare};
use sovra_engine::{Engine, QueueSpec};
use sovra_placement::fgd::{Shape, Workload};
use sovra_placement::synth::DecisionStream;
use sovra_placement::{ClusterState, DEFAULT_SEED, Placer, score::mix, synth};
use sovra_simulator::trace;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

fn config(c: &mut Criterion) -> &mut Criterion {
    c
}

fn synthetic(c: &mut Criterion) {
    let cfg = synth::cluster(5000, 1);
    let jobs = synth::jobs(20_000, 2);
    let workload = synth::workload();
    let mut g = config(c).benchmark_group("synthetic-5000");
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for policy in ["best-fit", "best-fit,topology", "fgd", "fgd,topology"] {
        let p: PolicySpec = policy.parse().unwrap();
        let mut s =
            DecisionStream::new(&cfg, jobs.clone(), Placer::new(p, DEFAULT_SEED).with_target_workload(&workload))
                .expect("the bench's cluster is valid");
        g.bench_function(policy, |b| b.iter(|| black_box(s.step().expect("the core's decisions apply"))));
    }
    // One isolated pure call with an empty memo: what a cold FGD decision costs.
    let state = ClusterState::from_config(&cfg).unwrap();
    let mut i = 0;
    g.bench_function("fgd-cold", |b| {
        b.iter(|| {
            i += 1;
            let mut p = Placer::new(PolicySpec::single(ScorerKind::Fgd), DEFAULT_SEED).with_target_workload(&workload);
            black_box(p.place(&state, &jobs[i % jobs.len()]).is_ok())
        })
    });
    g.finish();
}

fn alibaba(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/alibaba-gpu-v2023");
    let nodes = trace::load_nodes(&dir.join("openb_node_list_gpu_node.csv")).unwrap();
    let tasks = trace::load_tasks(&dir.join("openb_pod_list_default.csv")).unwrap();
    let cfg = trace::cluster_of(&nodes);
    // FGD's target: the trace's typical shapes (95% of tasks), as the FGD paper hands it.
    let mut counts: BTreeMap<Shape, u64> = BTreeMap::new();
    for t in &tasks {
        let j = t.to_job(Purpose::Training, trace::TRACE_CLASS);
        *counts.entry(Shape::of(&j.resources)).or_default() += 1;
    }
    let workload = Workload::from_counts(&counts, 0.95);
    let mut jobs: Vec<Job> = tasks.iter().map(|t| t.to_job(Purpose::Training, trace::TRACE_CLASS)).collect();
    for i in (1..jobs.len()).rev() {
        jobs.swap(i, (mix(42 ^ i as u64) % (i as u64 + 1)) as usize);
    }
    let mut g = c.benchmark_group("alibaba-1213");
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for policy in ["best-fit", "fgd"] {
        let p: PolicySpec = policy.parse().unwrap();
        let placer = Placer::new(p, DEFAULT_SEED).with_workload(workload.clone());
        let mut s = DecisionStream::new(&cfg, jobs.clone(), placer).expect("the bench's cluster is valid");
        g.bench_function(policy, |b| b.iter(|| black_box(s.step().expect("the core's decisions apply"))));
    }
    let _unused: Option<WorkloadShare> = None;
    g.finish();
}

/// An engine over the first 100 nodes of `full` with 200 jobs submitted and scheduled.
fn seeded_engine(full: &sovra_domain::ClusterConfig) -> (Engine, sovra_domain::ClusterConfig) {
    let mut cfg = full.clone();
    cfg.nodes.truncate(100);
    let mut e = Engine::new(&cfg, vec![QueueSpec::new("bench")], PolicySpec::default(), DEFAULT_SEED).unwrap();
    for j in synth::jobs(200, 5) {
        let _ = e.submit(j, None);
    }
    e.schedule();
    (e, cfg)
}

fn enroll(c: &mut Criterion) {
    let mut g = c.benchmark_group("enroll-engine");
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(3));
    for nodes in [1_000usize, 10_000] {
        let full = synth::cluster(nodes + 100, 1);
        g.throughput(Throughput::Elements(nodes as u64));
        g.bench_function(format!("upsert/{nodes}"), |b| {
            b.iter_batched(
                || seeded_engine(&full).0,
                |mut e| {
                    for n in &full.nodes[100..] {
                        black_box(e.upsert_node(n).unwrap());
                    }
                    e
                },
                BatchSize::LargeInput,
            )
        });
        if nodes <= 1_000 {
            g.bench_function(format!("rebuild/{nodes}"), |b| {
                b.iter_batched(
                    || seeded_engine(&full),
                    |(mut e, mut cfg)| {
                        for n in &full.nodes[100..] {
                            cfg.nodes.push(n.clone());
                            black_box(e.rebuild(&cfg, vec![QueueSpec::new("bench")]).unwrap());
                        }
                        e
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, synthetic, alibaba, enroll);
criterion_main!(benches);
