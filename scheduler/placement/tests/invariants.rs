//! Property tests of docs/design.md's placement invariants over random clusters and job sequences:
//! 1 (residency and purpose), 3 (no over-commit), 4 (gangs atomic), 5 (determinism, memos included).
//!
//! Every check here recomputes what it asserts from the raw inputs (the configuration and the decisions) instead
//! of trusting the core's own bookkeeping. Cases: `PROPTEST_CASES` (default 10,000 per property).

use proptest::prelude::*;
use sovra_domain::{
    ClusterConfig, Gpu, Health, Job, MigInstance, Node, NvlinkWish, PolicySpec, Pool, Purpose, ResidencyClass,
    Resources, ScorerKind, WorkloadShare, Zone, satisfies,
};
use sovra_placement::{ClusterState, Decision, Placer};
use std::collections::BTreeMap;

const MODELS: [&str; 3] = ["H100", "A100", "L4"];

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

fn zone_strategy() -> impl Strategy<Value = (String, String, Vec<&'static str>)> {
    (
        prop::sample::select(vec!["FR", "DE", "NL", "US", "CH"]),
        prop::sample::select(vec!["FR", "DE", "US"]),
        prop::sample::subsequence(vec!["SecNumCloud", "HDS", "C5", "ISO27001"], 0..=4),
    )
        .prop_map(|(c, hq, certs)| (c.to_string(), hq.to_string(), certs))
}

fn gpu_strategy() -> impl Strategy<Value = (usize, bool, bool)> {
    // (model index, healthy, MIG with 2 instances)
    (0..MODELS.len(), prop::bool::weighted(0.9), prop::bool::weighted(0.1))
}

/// A generated node: (pool, CPU, memory, GPUs as (model index, healthy, MIG), NVLink across all GPUs).
type GenNode = (usize, u64, u64, Vec<(usize, bool, bool)>, bool);

fn node_strategy(pools: usize) -> impl Strategy<Value = GenNode> {
    (
        0..pools,
        prop::sample::select(vec![8_000u64, 32_000, 64_000, 128_000]),
        prop::sample::select(vec![16_384u64, 65_536, 262_144]),
        prop::collection::vec(gpu_strategy(), 0..=8),
        any::<bool>(), // NVLink across all GPUs
    )
}

fn cluster_strategy() -> impl Strategy<Value = ClusterConfig> {
    (prop::collection::vec(zone_strategy(), 1..=4), 1usize..=6).prop_flat_map(|(zones, npools)| {
        let nz = zones.len();
        (
            Just(zones),
            prop::collection::vec((0..nz, any::<bool>()), npools),
            prop::collection::vec(node_strategy(npools), 1..=12),
        )
            .prop_map(|(zones, pools, nodes)| build_cluster(zones, pools, nodes))
    })
}

fn build_cluster(
    zones: Vec<(String, String, Vec<&'static str>)>,
    pools: Vec<(usize, bool)>,
    nodes: Vec<GenNode>,
) -> ClusterConfig {
    let zones: Vec<Zone> = zones
        .into_iter()
        .enumerate()
        .map(|(i, (country, hq, certs))| Zone {
            id: format!("z{i}"),
            jurisdiction: if country == "US" || country == "CH" { country.clone() } else { "EU".into() },
            country,
            region: "r".into(),
            operator: format!("op{i}"),
            operator_hq: hq,
            certifications: certs.into_iter().map(String::from).collect(),
        })
        .collect();
    let pools: Vec<Pool> = pools
        .into_iter()
        .enumerate()
        .map(|(i, (z, training))| Pool {
            id: format!("p{i}"),
            zone: format!("z{z}"),
            purpose: if training { Purpose::Training } else { Purpose::Inference },
        })
        .collect();
    let mut residency_classes = sovra_placement::synth::classes();
    residency_classes.push(ResidencyClass { name: "any".into(), ..Default::default() });
    let nodes = nodes
        .into_iter()
        .enumerate()
        .map(|(i, (pool, cpu, mem, gpus, nvlink))| {
            let n = gpus.len() as u32;
            Node {
                name: format!("n{i}"),
                pool: format!("p{pool}"),
                cpu_milli: cpu,
                memory_mib: mem,
                gpus: gpus
                    .into_iter()
                    .enumerate()
                    .map(|(g, (model, healthy, mig))| Gpu {
                        uuid: format!("GPU-{i}-{g}"),
                        model: MODELS[model].into(),
                        memory_mib: 81920,
                        numa_node: None,
                        nvlink_peers: if nvlink { (0..n).filter(|&p| p != g as u32).collect() } else { vec![] },
                        health: if healthy { Health::Healthy } else { Health::Unhealthy { reason: "XID 79".into() } },
                        mig: if mig {
                            vec![MigInstance { profile: "3g.40gb".into(), memory_mib: 40960, uuid: String::new() }; 2]
                        } else {
                            vec![]
                        },
                    })
                    .collect(),
            }
        })
        .collect();
    ClusterConfig { zones, pools, residency_classes, nodes, ..Default::default() }
}

fn job_strategy() -> impl Strategy<Value = Job> {
    (
        any::<bool>(),
        prop::sample::select(vec!["any", "eu-restricted", "fr-health", "de-c5"]),
        1u32..=4,
        prop_oneof![
            Just((0u32, 0u32)),
            (1u32..=999).prop_map(|m| (1, m)),
            prop::sample::select(vec![1u32, 2, 4, 8]).prop_map(|g| (g, 1000)),
        ],
        prop::collection::vec(prop::sample::select(vec!["H100", "A100", "L4", "A100-MIG-3g.40gb"]), 0..=2),
        prop::sample::select(vec![1_000u64, 4_000, 16_000, 64_000]),
        prop::sample::select(vec![1_024u64, 16_384, 65_536]),
        prop::sample::select(vec![NvlinkWish::None, NvlinkWish::Prefer, NvlinkWish::Require]),
    )
        .prop_map(|(training, class, replicas, (gpus, milli), models, cpu, mem, nvlink)| Job {
            name: String::new(),
            kind: if training { Purpose::Training } else { Purpose::Inference },
            queue: "q".into(),
            priority: 0,
            residency: class.into(),
            replicas,
            resources: Resources {
                gpus,
                gpu_milli: milli,
                gpu_models: if gpus == 0 { vec![] } else { models.into_iter().map(String::from).collect() },
                cpu_milli: cpu,
                memory_mib: mem,
            },
            nvlink: if gpus >= 2 { nvlink } else { NvlinkWish::None },
            run: None,
            model: None,
            exception: None,
        })
}

fn jobs_strategy() -> impl Strategy<Value = Vec<Job>> {
    prop::collection::vec(job_strategy(), 1..=8).prop_map(|mut jobs| {
        for (i, j) in jobs.iter_mut().enumerate() {
            j.name = format!("job{i}");
        }
        jobs
    })
}

fn policy_strategy() -> impl Strategy<Value = PolicySpec> {
    prop::sample::subsequence(ScorerKind::ALL.to_vec(), 1..=3)
        .prop_flat_map(|kinds| {
            let n = kinds.len();
            (Just(kinds), prop::collection::vec(1u32..=3, n))
        })
        .prop_map(|(kinds, weights)| PolicySpec { scorers: kinds.into_iter().zip(weights).collect() })
}

/// Places `jobs` in order, applying each decision; returns the outcomes.
fn run(cfg: &ClusterConfig, jobs: &[Job], placer: &mut Placer) -> (ClusterState, Vec<Option<Decision>>) {
    let mut state = ClusterState::from_config(cfg).expect("generated clusters are valid");
    let mut out = Vec::new();
    for job in jobs {
        let before = (state.used_gpu_milli(), (0..cfg.nodes.len() as u32).map(|n| state.cpu_used(n)).sum::<u64>());
        let outcome = placer.place(&state, job);
        // place() never changes the snapshot.
        assert_eq!(before.0, state.used_gpu_milli());
        match outcome {
            Ok(d) => {
                state.apply(&d).expect("a decision always applies to the snapshot it was made on");
                out.push(Some(d));
            }
            Err(e) => {
                assert!(e.failed_replica.is_none_or(|r| r < job.replicas));
                out.push(None);
            }
        }
    }
    (state, out)
}

/// Invariant 3 from first principles: sum every decision's takings per device and node, compare with the
/// configuration's capacities and health.
fn assert_no_overcommit(cfg: &ClusterConfig, decisions: &[Option<Decision>]) {
    let mut dev: BTreeMap<(String, u16), u32> = BTreeMap::new();
    let mut node: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for d in decisions.iter().flatten() {
        for r in &d.replicas {
            let e = node.entry(r.node_name.clone()).or_default();
            e.0 += r.cpu_milli;
            e.1 += r.memory_mib;
            for a in &r.devices {
                *dev.entry((r.node_name.clone(), a.device)).or_default() += u32::from(a.milli);
            }
        }
    }
    for n in &cfg.nodes {
        let (cpu, mem) = node.get(&n.name).copied().unwrap_or_default();
        assert!(cpu <= n.cpu_milli, "node {} CPU {cpu} > {}", n.name, n.cpu_milli);
        assert!(mem <= n.memory_mib, "node {} memory {mem} > {}", n.name, n.memory_mib);
        // Flatten devices as the core does: MIG instances are devices of their own.
        let healthy: Vec<bool> =
            n.gpus.iter().flat_map(|g| std::iter::repeat_n(g.health.is_healthy(), g.mig.len().max(1))).collect();
        for ((name, d), milli) in &dev {
            if name == &n.name {
                assert!((*d as usize) < healthy.len(), "device {d} does not exist on {name}");
                assert!(*milli <= 1000, "device {d} of {name} holds {milli} milli");
                assert!(healthy[*d as usize], "device {d} of {name} is unhealthy but was given work");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// Invariants 1, 3 and 4 on every decision of random job sequences.
    #[test]
    fn placements_respect_residency_capacity_and_gangs(
        cfg in cluster_strategy(),
        jobs in jobs_strategy(),
        policy in policy_strategy(),
        seed in any::<u64>(),
    ) {
        let mut placer = Placer::new(policy, seed);
        let (_, decisions) = run(&cfg, &jobs, &mut placer);
        for (job, d) in jobs.iter().zip(&decisions) {
            let Some(d) = d else { continue };
            // Invariant 4: all replicas or none.
            prop_assert_eq!(d.replicas.len(), job.replicas as usize);
            let class = cfg.class(&job.residency).unwrap();
            for r in &d.replicas {
                // Invariant 1, recomputed from the configuration.
                let node = cfg.nodes.iter().find(|n| n.name == r.node_name).unwrap();
                let pool = cfg.pools.iter().find(|p| p.id == node.pool).unwrap();
                let zone = cfg.zone(&pool.zone).unwrap();
                prop_assert_eq!(pool.purpose, job.kind);
                prop_assert!(satisfies(zone, class), "zone {} fails {}", zone.id, class.name);
                // Each replica gets exactly what it asked for.
                prop_assert_eq!(r.devices.len(), job.resources.gpus as usize);
                prop_assert!(r.devices.iter().all(|a| u32::from(a.milli) == job.resources.gpu_milli));
                let mut seen: Vec<u16> = r.devices.iter().map(|a| a.device).collect();
                seen.sort_unstable();
                seen.dedup();
                prop_assert_eq!(seen.len(), r.devices.len(), "a replica got the same device twice");
            }
        }
        // Invariant 3.
        assert_no_overcommit(&cfg, &decisions);
    }

    /// Invariant 4, the hard case: a gang whose last replica cannot fit is refused whole, and the snapshot it was
    /// decided on holds nothing of it.
    #[test]
    fn a_gang_too_big_by_one_holds_nothing(cfg in cluster_strategy(), job in job_strategy(), seed in any::<u64>()) {
        let state = ClusterState::from_config(&cfg).unwrap();
        let mut placer = Placer::new(PolicySpec::default(), seed);
        // Find how many replicas fit, then ask for one more.
        let mut probe = job.clone();
        probe.replicas = 1;
        let mut fits = 0;
        while fits < 40 {
            probe.replicas = fits + 1;
            if placer.place(&state, &probe).is_err() { break; }
            fits += 1;
        }
        prop_assume!(fits < 40);
        probe.replicas = fits + 1;
        let err = placer.place(&state, &probe).unwrap_err();
        prop_assert!(err.failed_replica.is_some_and(|r| r <= fits));
        prop_assert_eq!(state.used_gpu_milli(), 0);
        prop_assert!((0..cfg.nodes.len() as u32).all(|n| state.cpu_used(n) == 0 && state.mem_used(n) == 0));
    }

    /// Invariant 5: same snapshot, job order and seed → same decisions; and a placer whose memos were warmed on
    /// other work decides exactly like a fresh one.
    #[test]
    fn placement_is_deterministic_and_memos_are_transparent(
        cfg in cluster_strategy(),
        jobs in jobs_strategy(),
        warmup in jobs_strategy(),
        policy in policy_strategy(),
        seed in any::<u64>(),
    ) {
        let workload: Vec<WorkloadShare> = warmup
            .iter()
            .map(|j| WorkloadShare { resources: j.resources.clone(), weight: 1 })
            .collect();
        let mut a = Placer::new(policy.clone(), seed).with_target_workload(&workload);
        let mut b = Placer::new(policy.clone(), seed).with_target_workload(&workload);
        let (_, da) = run(&cfg, &jobs, &mut a);
        let _ = run(&cfg, &warmup, &mut b);
        let (_, db) = run(&cfg, &jobs, &mut b);
        prop_assert_eq!(&da, &db);
        let mut c = Placer::new(policy, seed).with_target_workload(&workload);
        let (_, dc) = run(&cfg, &jobs, &mut c);
        prop_assert_eq!(&da, &dc);
    }
}
