//! Properties of the engine under random sequences of lifecycle events, checked after every step by recomputing
//! from the job records (never from the engine's own counters):
//!
//! - no device holds more than 1000 milli, and the state's per-device use equals the sum over the placements;
//! - no partial gang: a job holding resources has exactly `replicas` placements, any other job none;
//! - every replica is on a node whose zone satisfies the job's residency class and whose pool's purpose is the
//!   job's kind (looked up in the cluster configuration, not the core's topology);
//! - a job that started keeps no blockers; preemption records name the job as victim, a strictly higher
//!   priority as the preemptor, and stay bounded;
//! - no acknowledged job (submit returned `Ok`) disappears, across rebuilds and restarts; a restart keeps every
//!   job's state, placement included, except the documented requeue (a job whose placement no longer fits goes
//!   back to pending, and is listed as requeued).
//!
//! The cluster is drawn too: three zones (FR EU-owned, DE US-owned, NL EU-owned) with a training and an inference
//! pool each, 3–6 nodes of 2–8 GPUs, some with MIG instances. Three queues, two with per-pool quotas.

use proptest::prelude::*;
use sovra_domain::{
    ClusterConfig, Gpu, Health, Job, MigInstance, Node, NvlinkWish, PolicySpec, Pool, Purpose, ResidencyClass,
    Resources, Zone, satisfies,
};
use sovra_engine::{Engine, Event, JobId, JobRecord, JobState, QueueSpec};
use std::collections::BTreeMap;

/// One node of a drawn cluster: pool index (0..6), GPU count, MIG.
#[derive(Debug, Clone)]
struct NodeSpec {
    pool: usize,
    gpus: u32,
    mig: bool,
}

/// One step of a drawn sequence. Job and node operands are indices taken modulo what exists.
#[derive(Debug, Clone)]
enum Step {
    Submit {
        kind: bool,
        class: usize,
        queue: usize,
        priority: i32,
        replicas: u32,
        gpus: u32,
        milli: u32,
    },
    Cancel(usize),
    Started(usize),
    Finish(usize, bool),
    NodeLost(usize),
    NodeBack(usize),
    /// Node `.0` now reports `.1` GPUs (1..=8): [`Engine::rebuild`].
    Inventory(usize, u32),
    /// [`Engine::restore`] from the records.
    Restart,
}

fn zones() -> Vec<Zone> {
    let zone = |id: &str, country: &str, hq: &str| Zone {
        id: id.into(),
        country: country.into(),
        region: format!("{id}-region"),
        jurisdiction: "EU".into(),
        operator: format!("{id}-operator"),
        operator_hq: hq.into(),
        certifications: Default::default(),
    };
    vec![zone("fr", "FR", "FR"), zone("de", "DE", "US"), zone("nl", "NL", "NL")]
}

fn classes() -> Vec<ResidencyClass> {
    let list = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    vec![
        ResidencyClass { name: "any".into(), ..Default::default() },
        ResidencyClass { name: "fr-only".into(), countries: list(&["FR"]), ..Default::default() },
        ResidencyClass { name: "eu-owned".into(), operator_hq_in: list(&["EU"]), ..Default::default() },
        ResidencyClass { name: "de-only".into(), countries: list(&["DE"]), ..Default::default() },
    ]
}

fn pool_ids() -> Vec<(String, String, Purpose)> {
    ["fr", "de", "nl"]
        .iter()
        .flat_map(|z| {
            [
                (format!("{z}-train"), z.to_string(), Purpose::Training),
                (format!("{z}-infer"), z.to_string(), Purpose::Inference),
            ]
        })
        .collect()
}

fn cluster(nodes: &[NodeSpec]) -> ClusterConfig {
    let pools = pool_ids();
    ClusterConfig {
        zones: zones(),
        pools: pools
            .iter()
            .map(|(id, zone, purpose)| Pool { id: id.clone(), zone: zone.clone(), purpose: *purpose })
            .collect(),
        residency_classes: classes(),
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Node {
                name: format!("n{i}"),
                pool: pools[n.pool % pools.len()].0.clone(),
                cpu_milli: 64_000,
                memory_mib: 524_288,
                gpus: (0..n.gpus)
                    .map(|g| Gpu {
                        uuid: format!("GPU-{i}-{g}"),
                        model: "H100".into(),
                        memory_mib: 81_920,
                        numa_node: Some(g / 4),
                        nvlink_peers: vec![],
                        health: Health::Healthy,
                        // MIG on the even GPUs of a MIG node: two instances each.
                        mig: if n.mig && g % 2 == 0 {
                            vec![
                                MigInstance { profile: "3g.40gb".into(), memory_mib: 40_960, uuid: String::new() },
                                MigInstance { profile: "3g.40gb".into(), memory_mib: 40_960, uuid: String::new() },
                            ]
                        } else {
                            vec![]
                        },
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

fn queues() -> Vec<QueueSpec> {
    let mut b = QueueSpec::new("b");
    b.weight = 2;
    b.quota_milli.insert("fr-train".into(), 4000);
    b.quota_milli.insert("de-infer".into(), 2000);
    let mut c = QueueSpec::new("c");
    c.quota_milli.insert("nl-train".into(), 3000);
    vec![QueueSpec::new("a"), b, c]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<bool>(), 0..4usize, 0..3usize, 0..4i32, 1..=4u32, 1..=4u32, prop_oneof![Just(250u32), Just(500), Just(1000)])
            .prop_map(|(kind, class, queue, p, replicas, gpus, milli)| Step::Submit {
                kind,
                class,
                queue,
                priority: p * 10,
                replicas,
                // A share of a GPU is one device per replica.
                gpus: if milli < 1000 { 1 } else { gpus },
                milli,
            }),
        1 => any::<usize>().prop_map(Step::Cancel),
        3 => any::<usize>().prop_map(Step::Started),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(j, ok)| Step::Finish(j, ok)),
        1 => any::<usize>().prop_map(Step::NodeLost),
        1 => any::<usize>().prop_map(Step::NodeBack),
        1 => (any::<usize>(), 1..=8u32).prop_map(|(n, g)| Step::Inventory(n, g)),
        1 => Just(Step::Restart),
    ]
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (0..6usize, 2..=8u32, prop::bool::weighted(0.3)).prop_map(|(pool, gpus, mig)| NodeSpec { pool, gpus, mig })
}

/// Every invariant of the module docs that one engine state must satisfy.
fn check(e: &Engine, cfg: &ClusterConfig, acked: &[JobId]) -> Result<(), TestCaseError> {
    // The engine keeps each queue's holdings up to date incrementally: they must equal the sum over placements.
    for q in e.queue_stats() {
        let held: u64 = e
            .jobs()
            .filter(|r| r.job.queue == q.spec.name)
            .filter_map(|r| r.placement.as_ref())
            .flat_map(|d| &d.replicas)
            .flat_map(|p| &p.devices)
            .map(|a| u64::from(a.milli))
            .sum();
        prop_assert_eq!(q.gpu_milli_held, held, "queue {} holdings drifted from its placements", q.spec.name);
    }
    let topo = e.state().topology();
    let mut used = vec![0u64; topo.devices.len()];
    for r in e.jobs() {
        match (&r.placement, r.state.holds_resources()) {
            (Some(d), true) => {
                prop_assert_eq!(d.replicas.len(), r.job.replicas as usize, "job {} holds a partial gang", r.id);
                prop_assert!(r.blockers.is_empty(), "job {} started but keeps blockers {:?}", r.id, r.blockers);
                for p in &d.replicas {
                    let node = cfg.nodes.iter().find(|n| n.name == p.node_name);
                    let node =
                        node.ok_or_else(|| TestCaseError::fail(format!("job {} on unknown {}", r.id, p.node_name)))?;
                    let pool = cfg.pools.iter().find(|x| x.id == node.pool).expect("the test's pools");
                    let zone = cfg.zones.iter().find(|z| z.id == pool.zone).expect("the test's zones");
                    let class = cfg.residency_classes.iter().find(|c| c.name == r.job.residency).expect("drawn class");
                    prop_assert!(satisfies(zone, class), "job {} ({}) in zone {}", r.id, class.name, zone.id);
                    prop_assert_eq!(pool.purpose, r.job.kind, "job {} in pool {}", r.id, pool.id);
                    prop_assert_eq!(p.pool.as_str(), pool.id.as_str());
                    let idx = topo.node_index(&p.node_name).expect("node exists in the topology");
                    prop_assert_eq!(idx, p.node);
                    let range = topo.device_range(idx);
                    for a in &p.devices {
                        let dev = range.start + usize::from(a.device);
                        prop_assert!(dev < range.end, "job {}: device {} outside its node", r.id, a.device);
                        used[dev] += u64::from(a.milli);
                    }
                }
            }
            (None, false) => {}
            (p, holds) => {
                return Err(TestCaseError::fail(format!(
                    "job {} is {:?} (holds: {holds}) with placement {:?}",
                    r.id,
                    r.state,
                    p.is_some()
                )));
            }
        }
    }
    for r in e.jobs() {
        prop_assert!(r.preemption_records.len() <= sovra_engine::MAX_PREEMPTION_RECORDS);
        for p in &r.preemption_records {
            prop_assert!(p.victim == r.id && p.victim_priority < p.by_priority, "job {}: record {:?}", r.id, p);
        }
    }
    for (dev, &u) in used.iter().enumerate() {
        prop_assert!(u <= 1000, "device {dev} holds {u} milli");
        prop_assert_eq!(u, u64::from(e.state().device_used(dev)), "device {}: state disagrees with placements", dev);
    }
    for id in acked {
        prop_assert!(e.job(*id).is_some(), "acknowledged job {} disappeared", id);
    }
    Ok(())
}

/// What a restart must keep of a job.
fn kept(r: &JobRecord) -> (JobState, String, u64, Option<String>) {
    let placement = r.placement.as_ref().map(|d| serde_json::to_string(d).unwrap_or_default());
    (r.state, serde_json::to_string(&r.job).unwrap_or_default(), r.seq, placement)
}

fn run(nodes: Vec<NodeSpec>, steps: Vec<Step>, seed: u64) -> Result<(), TestCaseError> {
    let mut specs = nodes;
    let mut cfg = cluster(&specs);
    let policy = PolicySpec::default();
    let mut e = Engine::new(&cfg, queues(), policy.clone(), seed).expect("the test's cluster builds");
    let mut acked: Vec<JobId> = Vec::new();
    let mut lost: Vec<bool> = vec![false; specs.len()];
    let classes = classes();
    for (i, s) in steps.into_iter().enumerate() {
        let shown = format!("{s:?}");
        let pick = |k: usize| (!acked.is_empty()).then(|| acked[k % acked.len()]);
        match s {
            Step::Submit { kind, class, queue, priority, replicas, gpus, milli } => {
                let job = Job {
                    name: format!("j{i}"),
                    kind: if kind { Purpose::Training } else { Purpose::Inference },
                    queue: ["a", "b", "c"][queue].into(),
                    priority,
                    residency: classes[class].name.clone(),
                    replicas,
                    resources: Resources {
                        gpus,
                        gpu_milli: milli,
                        gpu_models: vec![],
                        cpu_milli: 1000,
                        memory_mib: 1024,
                    },
                    nvlink: NvlinkWish::None,
                    run: None,
                    model: None,
                    exception: None,
                };
                if let Ok(id) = e.submit(job, None) {
                    acked.push(id);
                }
            }
            Step::Cancel(k) => {
                if let Some(id) = pick(k) {
                    let _ = e.cancel(id);
                }
            }
            Step::Started(k) => {
                if let Some(id) = pick(k) {
                    let _ = e.started(id);
                }
            }
            Step::Finish(k, ok) => {
                if let Some(id) = pick(k) {
                    let _ = e.finished(id, ok);
                }
            }
            Step::NodeLost(n) => {
                let n = n % specs.len();
                let on_it: Vec<JobId> = e
                    .jobs()
                    .filter(|r| {
                        r.placement.as_ref().is_some_and(|d| d.replicas.iter().any(|p| p.node_name == format!("n{n}")))
                    })
                    .map(|r| r.id)
                    .collect();
                let mut gone = e.node_lost(&format!("n{n}"));
                gone.sort_unstable();
                prop_assert_eq!(&gone, &on_it, "node_lost releases exactly the jobs with a replica there");
                for id in gone {
                    prop_assert_eq!(e.job(id).map(|r| r.state), Some(JobState::Pending), "lost job {} requeued", id);
                }
                lost[n] = true;
            }
            Step::NodeBack(n) => {
                let n = n % specs.len();
                e.node_ready(&format!("n{n}"));
                lost[n] = false;
            }
            Step::Inventory(n, gpus) => {
                let n = n % specs.len();
                specs[n].gpus = gpus;
                cfg = cluster(&specs);
                let before: BTreeMap<JobId, JobState> = e.jobs().map(|r| (r.id, r.state)).collect();
                // Odd GPU counts patch the node in place (what the service does), even ones rebuild everything.
                let requeued = if gpus % 2 == 1 {
                    let node = cfg.nodes.get(n).expect("the changed node");
                    e.upsert_node(node).expect("the changed node patches")
                } else {
                    e.rebuild(&cfg, queues()).expect("the changed cluster builds")
                };
                for r in e.jobs() {
                    let was = before.get(&r.id).copied();
                    if requeued.contains(&r.id) {
                        prop_assert_eq!(r.state, JobState::Pending, "requeued job {} is pending", r.id);
                    } else {
                        prop_assert_eq!(Some(r.state), was, "job {} kept its state over the rebuild", r.id);
                    }
                }
            }
            Step::Restart => {
                let before: BTreeMap<JobId, _> = e.jobs().map(|r| (r.id, kept(r))).collect();
                let records: Vec<JobRecord> = e.jobs().cloned().collect();
                let (next, requeued) =
                    Engine::restore(&cfg, queues(), policy.clone(), seed, records).expect("the same cluster builds");
                e = next;
                // The service marks nodes it does not hear from as lost again; nothing runs there, so nothing is lost.
                for (n, _) in lost.iter().enumerate().filter(|(_, l)| **l) {
                    prop_assert!(e.node_lost(&format!("n{n}")).is_empty(), "a job ran on lost node n{n}");
                }
                prop_assert!(requeued.is_empty(), "the same cluster: nothing to requeue, got {:?}", requeued);
                let after: BTreeMap<JobId, _> = e.jobs().map(|r| (r.id, kept(r))).collect();
                prop_assert_eq!(before, after, "a restart keeps every job as it was");
            }
        }
        let events = e.schedule();
        for ev in &events {
            if let Event::Preempted { job, by, record } = ev {
                let victim = e.job(*job).expect("the victim exists");
                let by = e.job(*by).expect("the preemptor exists");
                prop_assert!(victim.job.priority < by.job.priority, "only strictly lower priorities are preempted");
                prop_assert_eq!(victim.preemption_records.last(), Some(record));
            }
        }
        check(&e, &cfg, &acked).map_err(|err| TestCaseError::fail(format!("after step {i} ({shown}): {err}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lifecycle_sequences_keep_the_invariants(
        nodes in prop::collection::vec(node_spec(), 3..=6),
        steps in prop::collection::vec(step(), 1..=40),
        seed in any::<u64>(),
    ) {
        run(nodes, steps, seed)?;
    }
}
