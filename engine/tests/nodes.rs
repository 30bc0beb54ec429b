//! Inventory changes in place ([`Engine::upsert_node`], [`Engine::remove_node`]) against [`Engine::rebuild`] over
//! the same final cluster, and the submit-verdict cache across them.

use sovra_domain::{ClusterConfig, Gpu, Job, Node, NvlinkWish, PolicySpec, Purpose, Resources};
use sovra_engine::{Engine, JobState, QueueSpec, SubmitError};
use sovra_placement::synth;

fn queues() -> Vec<QueueSpec> {
    vec![QueueSpec::new("bench")]
}

fn engine(cfg: &ClusterConfig) -> Engine {
    Engine::new(cfg, queues(), PolicySpec::default(), 42).unwrap()
}

/// An engine over 30 synthetic nodes with 150 jobs submitted and one cycle run.
fn busy(cfg: &ClusterConfig) -> Engine {
    let mut e = engine(cfg);
    for j in synth::jobs(150, 11) {
        let _ = e.submit(j, None);
    }
    e.schedule();
    e
}

/// Every job's (state, placement), by id.
fn jobs(e: &Engine) -> Vec<(u64, JobState, Option<sovra_placement::Decision>)> {
    e.jobs().map(|r| (r.id, r.state, r.placement.clone())).collect()
}

/// The first node (by config order) running something.
fn busy_node(e: &Engine, cfg: &ClusterConfig, skip: usize) -> usize {
    let used: Vec<usize> = (0..cfg.nodes.len())
        .filter(|&i| {
            let t = e.state().topology();
            t.node_index(&cfg.nodes[i].name).is_some_and(|n| e.state().cpu_used(n) > 0)
        })
        .collect();
    used[skip]
}

#[test]
fn patches_leave_the_engine_as_a_rebuild_would() {
    let all = synth::cluster(45, 5);
    let mut cfg = all.clone();
    cfg.nodes.truncate(30);
    let (mut patched, mut rebuilt) = (busy(&cfg), busy(&cfg));
    assert_eq!(jobs(&patched), jobs(&rebuilt));
    let running = jobs(&patched).iter().filter(|j| j.2.is_some()).count();
    assert!(running > 30, "only {running} jobs placed");

    let mut fin = cfg.clone();
    for n in &all.nodes[30..] {
        assert_eq!(patched.upsert_node(n).unwrap(), Vec::<u64>::new(), "a new node requeues nothing");
        fin.nodes.push(n.clone());
    }
    // A busy node loses half its GPUs: some of its jobs no longer fit.
    let shrink = busy_node(&patched, &fin, 0);
    let mut small = fin.nodes[shrink].clone();
    small.gpus.truncate(2);
    for g in &mut small.gpus {
        g.nvlink_peers.retain(|&p| p < 2);
    }
    let requeued = patched.upsert_node(&small).unwrap();
    assert!(!requeued.is_empty());
    fin.nodes[shrink] = small;
    let mut again = rebuilt.rebuild(&fin, queues()).unwrap();
    again.sort();
    assert_eq!(requeued, again, "the same jobs are requeued");
    assert_eq!(jobs(&patched), jobs(&rebuilt));
    let shares = |e: &Engine| e.queue_stats().iter().map(|q| (q.gpu_milli_held, q.share)).collect::<Vec<_>>();
    assert_eq!(shares(&patched), shares(&rebuilt), "DRF totals follow the cluster");
    for i in 0..fin.nodes.len() as u32 {
        assert_eq!(patched.state().summary(i), rebuilt.state().summary(i), "node {i}");
    }
    assert_eq!(patched.schedule(), rebuilt.schedule());
    assert_eq!(jobs(&patched), jobs(&rebuilt));

    // A busy node leaves. `rebuild` would requeue every job on a later node (their indices moved); the patch
    // renumbers them, so the reference is a restore of the patched records over the final cluster, which must
    // accept every placement as it stands.
    let gone = busy_node(&patched, &fin, 3);
    let before = jobs(&patched);
    let lost = patched.remove_node(&fin.nodes[gone].name);
    fin.nodes.remove(gone);
    let expected: Vec<u64> = before
        .iter()
        .filter(|j| j.2.as_ref().is_some_and(|d| d.replicas.iter().any(|p| p.node == gone as u32)))
        .map(|j| j.0)
        .collect();
    assert!(!lost.is_empty());
    assert_eq!(lost, expected, "exactly the jobs with a replica there");
    for id in &lost {
        let r = patched.job(*id).unwrap();
        assert_eq!((r.state, r.losses, r.placement.is_none()), (JobState::Pending, 1, true));
    }
    for ((id, st, d), (_, st2, d2)) in before.iter().zip(jobs(&patched)) {
        if !lost.contains(id) {
            assert_eq!(*st, st2);
            let moved = d.clone().map(|mut d| {
                for p in &mut d.replicas {
                    p.node -= u32::from(p.node > gone as u32);
                }
                d
            });
            assert_eq!(moved, d2, "job {id} keeps its placement, renumbered");
        }
    }
    let records: Vec<_> = patched.jobs().cloned().collect();
    let (mut reference, requeued) = Engine::restore(&fin, queues(), PolicySpec::default(), 42, records).unwrap();
    assert!(requeued.is_empty(), "every kept placement is valid on the final cluster: {requeued:?}");
    assert_eq!(shares(&patched), shares(&reference));
    for i in 0..fin.nodes.len() as u32 {
        assert_eq!(patched.state().summary(i), reference.state().summary(i), "node {i}");
    }
    // From here on both decide alike.
    assert_eq!(patched.schedule(), reference.schedule());
    for j in synth::jobs(60, 12) {
        let j = Job { name: format!("more-{}", j.name), ..j };
        let (a, b) = (patched.submit(j.clone(), None), reference.submit(j, None));
        assert_eq!(a.is_ok(), b.is_ok());
    }
    assert_eq!(patched.schedule(), reference.schedule());
    assert_eq!(jobs(&patched), jobs(&reference));
}

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}
pools:
  - {id: train-fr, zone: fr, purpose: training}
residency_classes:
  - {name: any}
nodes:
  - {name: fr-a, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
  - {name: fr-b, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
"#;

fn job(name: &str, gpus: u32) -> Job {
    Job {
        name: name.into(),
        kind: Purpose::Training,
        queue: "bench".into(),
        priority: 0,
        residency: "any".into(),
        replicas: 1,
        resources: Resources { gpus, gpu_milli: 1000, gpu_models: vec![], cpu_milli: 1000, memory_mib: 1024 },
        nvlink: NvlinkWish::None,
        run: None,
        model: None,
        exception: None,
    }
}

fn wide(cfg: &ClusterConfig, name: &str, gpus: usize) -> Node {
    let mut n = cfg.nodes[0].clone();
    n.name = name.into();
    let g: Gpu = n.gpus[0].clone();
    n.gpus = (0..gpus).map(|i| Gpu { uuid: format!("{name}-{i}"), ..g.clone() }).collect();
    n
}

#[test]
fn submit_verdicts_follow_the_inventory() {
    let cfg = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let mut e = engine(&cfg);
    assert!(matches!(e.submit(job("big-1", 8), None), Err(SubmitError::Refused { .. })), "no 8-GPU node yet");
    assert!(e.upsert_node(&wide(&cfg, "fr-wide", 8)).unwrap().is_empty());
    let id = e.submit(job("big-2", 8), None).unwrap();
    e.schedule();
    assert_eq!(e.job(id).unwrap().placement.as_ref().unwrap().replicas[0].node_name, "fr-wide");
    assert_eq!(e.remove_node("fr-wide"), vec![id]);
    assert_eq!((e.job(id).unwrap().state, e.job(id).unwrap().losses), (JobState::Pending, 1));
    assert!(matches!(e.submit(job("big-3", 8), None), Err(SubmitError::Refused { .. })), "gone again");
    assert!(e.remove_node("fr-wide").is_empty(), "an unknown node changes nothing");
    // A bad node changes nothing either.
    let mut stray = wide(&cfg, "fr-x", 2);
    stray.pool = "nowhere".into();
    assert!(e.upsert_node(&stray).is_err());
    assert!(e.state().topology().node_index("fr-x").is_none());
}

#[test]
fn a_changed_node_keeps_the_jobs_that_still_fit() {
    let cfg = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let mut e = engine(&cfg);
    let ids: Vec<u64> = (0..4).map(|i| e.submit(job(&format!("j{i}"), 2), None).unwrap()).collect();
    e.schedule();
    let on_a: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| e.job(id).unwrap().placement.as_ref().unwrap().replicas[0].node_name == "fr-a")
        .collect();
    assert_eq!(on_a.len(), 2);
    e.started(on_a[0]).unwrap();
    // More memory, same GPUs: both stay, in their states.
    let mut a = cfg.nodes[0].clone();
    a.memory_mib *= 2;
    assert!(e.upsert_node(&a).unwrap().is_empty());
    assert_eq!(e.job(on_a[0]).unwrap().state, JobState::Running);
    assert_eq!(e.job(on_a[1]).unwrap().state, JobState::Placed);
    // Two GPUs left: the job on devices 2-3 goes back to pending, the one on 0-1 stays.
    a.gpus.truncate(2);
    let requeued = e.upsert_node(&a).unwrap();
    assert_eq!(requeued.len(), 1);
    let kept: Vec<u64> = on_a.iter().copied().filter(|id| !requeued.contains(id)).collect();
    assert_eq!(e.job(kept[0]).unwrap().placement.as_ref().unwrap().replicas[0].devices.len(), 2);
    assert_eq!(e.job(requeued[0]).unwrap().state, JobState::Pending);
    let idx = e.state().topology().node_index("fr-a").unwrap();
    assert_eq!(e.state().summary(idx).free_whole, 0, "the kept job holds both remaining GPUs");
}

/// Restore (and so `rebuild`, and a reload) finds nodes by name: a file that gained a node before the others, or
/// lost one, moves every later node's index, and no job on an unchanged node may be requeued for it.
#[test]
fn restore_keeps_placements_on_nodes_whose_index_moved() {
    let all = synth::cluster(31, 5);
    let mut cfg = all.clone();
    cfg.nodes.remove(0);
    let e = busy(&cfg);
    let records: Vec<_> = e.jobs().cloned().collect();
    let held = records.iter().filter(|r| r.placement.is_some()).count();
    assert!(held > 20, "only {held} jobs placed");
    // The first node comes back at the front: every other node's index moves by one.
    let (grown, requeued) = Engine::restore(&all, queues(), PolicySpec::default(), 42, records.clone()).unwrap();
    assert_eq!(requeued, Vec::<u64>::new(), "nothing moved but indices");
    for r in grown.jobs() {
        let before = records.iter().find(|x| x.id == r.id).unwrap();
        let names = |d: &Option<sovra_placement::Decision>| {
            d.as_ref().map(|d| d.replicas.iter().map(|p| p.node_name.clone()).collect::<Vec<_>>())
        };
        assert_eq!(names(&r.placement), names(&before.placement), "job {} kept its nodes", r.id);
    }
    // And the state agrees: the new node is idle, the others hold what they held.
    let t = grown.state().topology();
    assert_eq!(grown.state().cpu_used(t.node_index(&all.nodes[0].name).unwrap()), 0);
    assert_eq!(grown.state().used_gpu_milli(), e.state().used_gpu_milli());
}
