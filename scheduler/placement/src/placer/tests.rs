//! Unit tests of the placer on hand-checked clusters.

use super::*;
use sovra_domain::{ClusterConfig, Purpose, Resources};

fn cluster(nodes: &str, workload: &str) -> ClusterState {
    let yaml = format!(
        r#"
zones: [{{id: z, country: FR, region: r, jurisdiction: EU, operator: o, operator_hq: FR, certifications: []}}]
pools: [{{id: p, zone: z, purpose: training}}]
residency_classes: [{{name: any}}]
nodes:
{nodes}
scheduling:
  fgd_target_workload:
{workload}
"#
    );
    let cfg = ClusterConfig::from_yaml("t", &yaml).unwrap();
    ClusterState::from_config(&cfg).unwrap()
}

fn job(name: &str, replicas: u32, gpus: u32, milli: u32, cpu: u64) -> Job {
    Job {
        name: name.into(),
        kind: Purpose::Training,
        queue: "q".into(),
        priority: 0,
        residency: "any".into(),
        replicas,
        resources: Resources { gpus, gpu_milli: milli, gpu_models: vec![], cpu_milli: cpu, memory_mib: 1 },
        nvlink: NvlinkWish::None,
        run: None,
        model: None,
        exception: None,
    }
}

fn fgd_placer(state: &ClusterState, workload: &[(u32, u32, u64)]) -> Placer {
    let shares: Vec<WorkloadShare> = workload
        .iter()
        .map(|&(g, m, c)| WorkloadShare {
            resources: Resources { gpus: g, gpu_milli: m, gpu_models: vec![], cpu_milli: c, memory_mib: 1 },
            weight: 1,
        })
        .collect();
    let _ = state;
    Placer::new(PolicySpec::single(ScorerKind::Fgd), 1).with_target_workload(&shares)
}

#[test]
fn fgd_picks_the_gpu_that_grows_fragmentation_least() {
    // One node, 2 GPUs: GPU0 has 700 free, GPU1 is free. Workload: only 500m sharing replicas.
    let mut s = cluster(
        "  - {name: n, pool: p, cpu_milli: 64000, memory_mib: 1024, gpus: {model: G, count: 2, memory_mib: 1}}",
        "    - {gpus: 1, gpu_milli: 500, cpu_milli: 1000, memory_mib: 1, weight: 1}",
    );
    let mut p = fgd_placer(&s, &[(1, 500, 1000)]);
    let pre = p.place(&s, &job("pre", 1, 1, 300, 1000)).unwrap();
    s.apply(&pre).unwrap();
    assert_eq!(pre.replicas[0].devices[0].device, 0, "first share lands on GPU0 (lowest index of equal scores)");
    // Now a 200m replica. F(n) before: usable GPUs (free ≥ 500) are GPU0 (700) and GPU1 (1000): frag = 0.
    // On GPU0: 500 free left, still usable → F(n') = 0, Δ = 0 → score 50.
    // On GPU1: 800 free, GPU0 700: both usable → F(n') = 0 → score 50. Tie → first index: GPU0.
    let d = p.place(&s, &job("a", 1, 1, 200, 1000)).unwrap();
    assert_eq!(d.replicas[0].devices[0].device, 0);
    assert_eq!(d.replicas[0].scores.parts, vec![(ScorerKind::Fgd, 1, 50)]);
    // A 300m replica instead: on GPU0 → 400 free, not usable → F(n') = 400 → Δ = −400 → trunc(100·σ(−0.4)) = 40.
    // On GPU1 → 700 free, usable → F(n') = 0 → 50. FGD picks GPU1.
    let d = p.place(&s, &job("b", 1, 1, 300, 1000)).unwrap();
    assert_eq!(d.replicas[0].devices[0].device, 1);
    assert_eq!(d.replicas[0].scores.total, 50);
}

#[test]
fn fgd_prefers_the_node_it_fragments_least() {
    // Two nodes of 1 GPU. Node a has 500 free, node b is free. Workload: whole-GPU replicas only.
    // A 500m replica on a: free 0 → F: before 500 (a GPU with 500 free cannot take a whole GPU), after 0 →
    // Δ = +500 → trunc(100·σ(0.5)) = 62. On b: before 0, after 500 → Δ = −500 → 37. FGD picks a.
    let mut s = cluster(
        "  - {name: a, pool: p, cpu_milli: 64000, memory_mib: 1024, gpus: {model: G, count: 1, memory_mib: 1}}\n  - {name: b, pool: p, cpu_milli: 64000, memory_mib: 1024, gpus: {model: G, count: 1, memory_mib: 1}}",
        "    - {gpus: 1, cpu_milli: 1000, memory_mib: 1, weight: 1}",
    );
    let half = Decision {
        job: "x".into(),
        replicas: vec![ReplicaPlacement {
            replica: 0,
            node: 0,
            node_name: "a".into(),
            pool: "p".into(),
            zone: "z".into(),
            devices: vec![DeviceAssignment { device: 0, milli: 500 }],
            cpu_milli: 0,
            memory_mib: 0,
            scores: ScoreBreakdown::default(),
            feasible_nodes: 1,
        }],
    };
    s.apply(&half).unwrap();
    let mut p = fgd_placer(&s, &[(1, 1000, 1000)]);
    let d = p.place(&s, &job("j", 1, 1, 500, 1000)).unwrap();
    assert_eq!(d.replicas[0].node_name, "a");
    assert_eq!(d.replicas[0].scores.total, 62);
}

#[test]
fn gang_rolls_back_and_explains() {
    // Two nodes × 2 GPUs; a gang of 3 replicas × 2 GPUs cannot fit; 2 replicas can.
    let s = cluster(
        "  - {name: a, pool: p, cpu_milli: 64000, memory_mib: 1024, gpus: {model: G, count: 2, memory_mib: 1}}\n  - {name: b, pool: p, cpu_milli: 64000, memory_mib: 1024, gpus: {model: G, count: 2, memory_mib: 1}}",
        "    - {gpus: 1, cpu_milli: 1000, memory_mib: 1, weight: 1}",
    );
    let mut p = Placer::new(PolicySpec::default(), 7);
    let ok = p.place(&s, &job("two", 2, 2, 1000, 1000)).unwrap();
    let nodes: Vec<&str> = ok.replicas.iter().map(|r| r.node_name.as_str()).collect();
    assert_eq!(nodes.len(), 2);
    assert_ne!(nodes[0], nodes[1]);
    let err = p.place(&s, &job("three", 3, 2, 1000, 1000)).unwrap_err();
    assert_eq!(err.failed_replica, Some(2));
    assert!(err.unresolvable, "2 nodes × 2 GPUs can never hold 3 × 2 GPUs");
    assert_eq!(s.used_gpu_milli(), 0);
    let cap = err.filters.iter().find(|f| f.filter == FilterKind::GpuCapacity).unwrap();
    assert_eq!(cap.rejected_nodes, 2);
    assert_eq!(cap.reasons[0].reason.to_string(), "fewer than 2 fully free GPUs");
}

#[test]
fn score_nodes_ranks_as_place_chooses() {
    let cfg = crate::synth::cluster(200, 1);
    let state = ClusterState::from_config(&cfg).unwrap();
    let all: Vec<NodeIdx> = (0..state.topology().nodes.len() as NodeIdx).collect();
    for policy in ["best-fit,topology", "fgd,first-fit", "spread"] {
        let policy: PolicySpec = policy.parse().unwrap();
        let workload = crate::synth::workload();
        let mut scorer = Placer::new(policy.clone(), 5).with_target_workload(&workload);
        let mut placer = Placer::new(policy, 5).with_target_workload(&workload);
        for job in crate::synth::jobs(40, 3) {
            let scores = scorer.score_nodes(&state, &job, &all);
            let best = scores
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.map(|(total, rank)| (total, std::cmp::Reverse(rank), i)))
                .max()
                .map(|(_, _, i)| i as NodeIdx);
            let chosen = placer.place(&state, &job).ok().map(|d| d.replicas[0].node);
            assert_eq!(best, chosen, "job {}", job.name);
        }
    }
}

#[test]
fn unknown_class_is_refused_not_panicked() {
    let s = cluster(
        "  - {name: a, pool: p, cpu_milli: 64000, memory_mib: 1024}",
        "    - {gpus: 1, cpu_milli: 1000, memory_mib: 1, weight: 1}",
    );
    let mut j = job("j", 1, 0, 0, 1);
    j.residency = "nope".into();
    let e = place(&s, &j, &PolicySpec::default(), 0).unwrap_err();
    assert!(e.unresolvable && e.summary.contains("unknown residency class"));
}

#[test]
fn nvlink_prefer_takes_the_fullest_island_that_fits() {
    // Islands {0,1,2,3} and {4,5,6,7}; GPU 0 is taken, so island A has 3 free and island B 4.
    // A 2-GPU replica goes to island A (best fit on islands): GPUs 1 and 2.
    let mut s = cluster(
        "  - {name: n, pool: p, cpu_milli: 64000, memory_mib: 1024, gpus: {model: G, count: 8, memory_mib: 1, nvlink_islands: [[0,1,2,3],[4,5,6,7]]}}",
        "    - {gpus: 1, cpu_milli: 1000, memory_mib: 1, weight: 1}",
    );
    let mut p = Placer::new(PolicySpec::default(), 3);
    let first = p.place(&s, &job("one", 1, 1, 1000, 1)).unwrap();
    s.apply(&first).unwrap();
    let mut j = job("two", 1, 2, 1000, 1);
    j.nvlink = NvlinkWish::Prefer;
    let d = p.place(&s, &j).unwrap();
    let devs: Vec<u16> = d.replicas[0].devices.iter().map(|a| a.device).collect();
    assert_eq!(devs, vec![1, 2]);
    // 4 GPUs with prefer: island A has only 3, island B fits → GPUs 4..8.
    j.resources.gpus = 4;
    let d = p.place(&s, &j).unwrap();
    let devs: Vec<u16> = d.replicas[0].devices.iter().map(|a| a.device).collect();
    assert_eq!(devs, vec![4, 5, 6, 7]);
}
