//! Patching the topology in place ([`ClusterState::patch`]) against building it from scratch: after a sequence of
//! adds, removes and replacements, the patched state lays out nodes and devices as a fresh build over the final
//! node list does, and the placer makes the same decisions on both; usage on untouched nodes survives.

use sovra_domain::{ClusterConfig, Gpu, Health, MigInstance, Node, PolicySpec};
use sovra_placement::{ClusterState, DEFAULT_SEED, NodeChange, Placer, synth};

/// Node `n` of `cfg` with different GPUs: four, the last two in MIG mode, one unhealthy; moved to `pool`.
fn reshaped(n: &Node, pool: &str) -> Node {
    let mut gpus: Vec<Gpu> = n.gpus[..4].to_vec();
    gpus[1].health = Health::Unhealthy { reason: "XID 79".into() };
    for g in &mut gpus[2..] {
        g.nvlink_peers.clear();
        g.mig = vec![
            MigInstance { profile: "3g.40gb".into(), memory_mib: 40960, uuid: String::new() },
            MigInstance { profile: "3g.40gb".into(), memory_mib: 40960, uuid: String::new() },
        ];
    }
    for g in &mut gpus[..2] {
        g.nvlink_peers.retain(|&p| p < 2);
    }
    Node { pool: pool.into(), cpu_milli: n.cpu_milli * 2, memory_mib: n.memory_mib / 2, gpus, ..n.clone() }
}

/// A base cluster of 50 nodes, and the same changes applied to its config (by hand) and as patches.
fn scenario() -> (ClusterConfig, ClusterState, ClusterConfig) {
    let all = synth::cluster(70, 3);
    let mut cfg = all.clone();
    cfg.nodes.truncate(50);
    let mut state = ClusterState::from_config(&cfg).unwrap();
    let mut fin = cfg.clone();
    let other_pool = all.pools[5].id.clone();
    for (step, n) in all.nodes[50..].iter().enumerate() {
        state.patch(NodeChange::Add(n)).unwrap();
        fin.nodes.push(n.clone());
        match step {
            3 => {
                let name = fin.nodes[7].name.clone();
                state.patch(NodeChange::Remove(&name)).unwrap();
                fin.nodes.remove(7);
            }
            6 => {
                let new = reshaped(&fin.nodes[20], &other_pool);
                state.patch(NodeChange::Replace(&new)).unwrap();
                fin.nodes[20] = new;
            }
            9 => {
                let name = fin.nodes[0].name.clone();
                state.patch(NodeChange::Remove(&name)).unwrap();
                fin.nodes.remove(0);
            }
            12 => {
                // The node added last goes again.
                let name = fin.nodes.last().unwrap().name.clone();
                state.patch(NodeChange::Remove(&name)).unwrap();
                fin.nodes.pop();
            }
            _ => {}
        }
    }
    (cfg, state, fin)
}

#[test]
fn patched_topology_is_laid_out_as_a_fresh_build() {
    let (_, patched, fin) = scenario();
    let fresh = ClusterState::from_config(&fin).unwrap();
    let (a, b) = (patched.topology(), fresh.topology());
    assert_eq!(a.nodes.len(), b.nodes.len());
    assert_eq!(a.devices.len(), b.devices.len());
    for (x, y) in a.nodes.iter().zip(&b.nodes) {
        assert_eq!(
            (&x.name, x.pool, x.cpu_milli, x.memory_mib, x.dev_start, x.dev_count),
            (&y.name, y.pool, y.cpu_milli, y.memory_mib, y.dev_start, y.dev_count)
        );
        assert_eq!(x.uniform_model.map(|m| &a.models[m as usize]), y.uniform_model.map(|m| &b.models[m as usize]));
    }
    for (x, y) in a.devices.iter().zip(&b.devices) {
        assert_eq!(
            (x.node, x.gpu, &x.mig_profile, &a.models[x.model as usize], x.memory_mib, x.island, &x.uuid),
            (y.node, y.gpu, &y.mig_profile, &b.models[y.model as usize], y.memory_mib, y.island, &y.uuid)
        );
    }
    assert_eq!(a.pool_nodes, b.pool_nodes);
    assert_eq!((a.max_node_cpu, a.max_node_gpu_milli), (b.max_node_cpu, b.max_node_gpu_milli));
    for n in &fin.nodes {
        assert_eq!(a.node_index(&n.name), b.node_index(&n.name), "{}", n.name);
    }
    for i in 0..a.nodes.len() as u32 {
        assert_eq!(patched.summary(i), fresh.summary(i), "node {i}");
    }
    for d in 0..a.devices.len() {
        assert_eq!(patched.device_healthy(d), fresh.device_healthy(d), "device {d}");
    }
    assert_ne!(a.generation(), b.generation());
}

#[test]
fn the_placer_decides_alike_on_patched_and_fresh_states() {
    let (_, mut patched, fin) = scenario();
    let mut fresh = ClusterState::from_config(&fin).unwrap();
    let jobs = synth::jobs(400, 9);
    for policy in ["best-fit", "fgd,topology", "gpu-packing"] {
        let p: PolicySpec = policy.parse().unwrap();
        let (mut pa, mut pb) = (Placer::new(p.clone(), DEFAULT_SEED), Placer::new(p, DEFAULT_SEED));
        let (mut placed, mut s1, mut s2) = (0, patched.clone(), fresh.clone());
        for j in &jobs {
            pa.observe_admitted(j);
            pb.observe_admitted(j);
            let (a, b) = (pa.place(&s1, j), pb.place(&s2, j));
            match (&a, &b) {
                (Ok(x), Ok(y)) => {
                    assert_eq!(x, y, "{policy}: {}", j.name);
                    s1.apply(x).unwrap();
                    s2.apply(y).unwrap();
                    placed += 1;
                }
                (Err(x), Err(y)) => assert_eq!(x.summary, y.summary, "{policy}: {}", j.name),
                _ => panic!("{policy}: {} placed on one state only: {a:?} / {b:?}", j.name),
            }
        }
        assert!(placed > 50, "{policy}: only {placed} placed");
        // The last placer's states carry on into the next policy's run.
        (patched, fresh) = (s1, s2);
    }
}

#[test]
fn usage_on_other_nodes_survives_patches() {
    let (cfg, _, _) = scenario();
    let mut state = ClusterState::from_config(&cfg).unwrap();
    let mut placer = Placer::new(PolicySpec::default(), DEFAULT_SEED);
    for j in synth::jobs(150, 4) {
        if let Ok(d) = placer.place(&state, &j) {
            state.apply(&d).unwrap();
        }
    }
    let usage = |s: &ClusterState, name: &str| {
        let t = s.topology();
        let i = t.node_index(name).unwrap();
        let devs: Vec<u16> = t.device_range(i).map(|d| s.device_used(d)).collect();
        (s.cpu_used(i), s.mem_used(i), *s.node_tags(i), devs, *s.summary(i))
    };
    let before: Vec<_> = cfg.nodes.iter().map(|n| usage(&state, &n.name)).collect();
    assert!(before.iter().filter(|u| u.0 > 0).count() > 10, "the jobs should spread over many nodes");
    let used = |i: usize| before[i].0 > 0;
    let gone = (0..cfg.nodes.len()).find(|&i| used(i)).unwrap();
    let changed = (gone + 1..cfg.nodes.len()).find(|&i| used(i)).unwrap();
    let extra = synth::cluster(51, 3).nodes[50].clone();
    state.patch(NodeChange::Remove(&cfg.nodes[gone].name)).unwrap();
    state.patch(NodeChange::Replace(&reshaped(&cfg.nodes[changed], &cfg.nodes[changed].pool))).unwrap();
    state.add_node(&extra).unwrap();
    for (i, n) in cfg.nodes.iter().enumerate() {
        if i == gone {
            assert_eq!(state.topology().node_index(&n.name), None);
        } else if i == changed {
            let u = usage(&state, &n.name);
            assert_eq!((u.0, u.1, u.2), (0, 0, [0; 10]), "the replaced node starts empty");
            assert!(u.3.iter().all(|&d| d == 0));
        } else {
            assert_eq!(usage(&state, &n.name), before[i], "{}", n.name);
        }
    }
    let u = usage(&state, &extra.name);
    assert_eq!((u.0, u.3.iter().map(|&d| u32::from(d)).sum::<u32>()), (0, 0));
}

#[test]
fn a_bad_patch_changes_nothing() {
    let (cfg, mut state, _) = scenario();
    let generation = state.topology().generation();
    let nodes = state.topology().nodes.len();
    let mut stray = cfg.nodes[3].clone();
    assert!(state.add_node(&stray).is_err(), "a used name");
    stray.name = "new".into();
    stray.pool = "no-such-pool".into();
    assert!(state.add_node(&stray).is_err(), "an unknown pool");
    assert!(state.patch(NodeChange::Remove("no-such-node")).is_err());
    assert!(state.patch(NodeChange::Replace(&stray)).is_err(), "replacing an unknown node");
    assert_eq!((state.topology().generation(), state.topology().nodes.len()), (generation, nodes));
    let mut other = ClusterState::from_config(&cfg).unwrap();
    let extra = synth::cluster(80, 3).nodes[79].clone();
    assert!(ClusterState::patch_all(&mut [&mut state, &mut other], NodeChange::Add(&extra)).is_err(), "two topologies");
}

#[test]
fn states_patched_together_keep_sharing_one_topology() {
    let (cfg, mut live, _) = scenario();
    let mut twin = live.clone();
    let held = live.topology().clone(); // an older snapshot: patched copy-on-write, itself unchanged
    let extra = synth::cluster(80, 3).nodes[79].clone();
    ClusterState::patch_all(&mut [&mut live, &mut twin], NodeChange::Add(&extra)).unwrap();
    assert!(std::sync::Arc::ptr_eq(live.topology(), twin.topology()));
    assert_eq!(live.topology().nodes.len(), held.nodes.len() + 1);
    assert!(held.node_index(&extra.name).is_none());
    assert!(twin.topology().node_index(&cfg.nodes[2].name).is_some());
}
