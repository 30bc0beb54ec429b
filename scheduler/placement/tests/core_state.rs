//! Regression tests of the placer's own state (issue 12, "core API cleanup"): memos follow the topology's
//! generation id, not its address; the learned FGD mix counts admitted jobs, not placement attempts; the job hash
//! behind random scores and tie orders is a pinned, toolchain-independent function.

use sovra_domain::{Job, PolicySpec, ScorerKind};
use sovra_placement::score::job_hash;
use sovra_placement::{ClusterState, DEFAULT_SEED, Decision, Placer, Topology, synth};
use std::sync::Arc;

fn fgd() -> PolicySpec {
    PolicySpec::single(ScorerKind::Fgd)
}

/// Places `jobs` in order on `state`, applying each decision; the node names chosen (or `None`).
fn run(placer: &mut Placer, state: &mut ClusterState, jobs: &[Job]) -> Vec<Option<Vec<String>>> {
    jobs.iter()
        .map(|j| {
            let d: Decision = placer.place(state, j).ok()?;
            state.apply(&d).expect("a decision applies to its own state");
            Some(d.replicas.iter().map(|r| r.node_name.clone()).collect())
        })
        .collect()
}

#[test]
fn topology_generation_ids_differ_even_for_equal_configs() {
    let cfg = synth::cluster(20, 1);
    let a = Topology::from_config(&cfg).unwrap();
    let b = Topology::from_config(&cfg).unwrap();
    assert_ne!(a.generation(), b.generation(), "two builds are two topologies");
    assert_ne!(a.generation(), 0);
    let mut c = Topology::from_config(&cfg).unwrap();
    let before = c.generation();
    c.renew_generation();
    assert_ne!(c.generation(), before, "an edited topology gets a new id");
}

/// The old placer keyed its FGD memo (and residency wording) by `Arc::as_ptr` of the topology: once a topology was
/// dropped, the next one allocated at the same address was served the old one's fragmentation memo and scores.
#[test]
fn fgd_memo_of_a_dropped_topology_is_not_served_to_its_successor() {
    let workload = synth::workload();
    let jobs = synth::jobs(40, 5);
    let mut placer = Placer::new(fgd(), DEFAULT_SEED).with_target_workload(&workload);
    let old_generation = {
        let mut first = ClusterState::from_config(&synth::cluster(60, 1)).unwrap();
        let _ = run(&mut placer, &mut first, &jobs);
        let g = first.topology().generation();
        assert_eq!(placer.memo_generation(), Some(g), "the memo is the first topology's");
        g
        // `first` and its topology are dropped here: the allocator may hand the address to the next one.
    };
    // A different cluster of the same size (the same allocation size, so address reuse is likely).
    let topo = Arc::new(Topology::from_config(&synth::cluster(60, 2)).unwrap());
    let cfg = synth::cluster(60, 2);
    let mut second = ClusterState::new(topo.clone(), &cfg);
    let got = run(&mut placer, &mut second, &jobs);
    assert_eq!(placer.memo_generation(), Some(topo.generation()), "the memo follows the new topology");
    assert_ne!(placer.memo_generation(), Some(old_generation));
    // And it decides exactly as a placer that never saw the first topology.
    let mut fresh = Placer::new(fgd(), DEFAULT_SEED).with_target_workload(&workload);
    let mut again = ClusterState::from_config(&cfg).unwrap();
    assert_eq!(got, run(&mut fresh, &mut again, &jobs));
}

/// The old placer learned FGD's mix inside `place`, so a scheduler that retried a job N times counted its shape N
/// times and then decided differently from one that placed it once.
#[test]
fn retrying_a_job_does_not_change_the_learned_fgd_mix() {
    let cfg = synth::cluster(120, 3);
    let jobs = synth::jobs(80, 11);
    let policy: PolicySpec = "fgd=2,best-fit".parse().unwrap();
    // Once: each admitted job is observed, then placed once.
    let mut once = Placer::new(policy.clone(), DEFAULT_SEED);
    let mut s1 = ClusterState::from_config(&cfg).unwrap();
    let mut d1 = Vec::new();
    for j in &jobs {
        once.observe_admitted(j);
        d1.extend(run(&mut once, &mut s1, std::slice::from_ref(j)));
    }
    // Retrying: every job is first tried 0..=4 extra times on a full cluster (where nothing fits) before the
    // attempt on the real state — as a scheduler that retries on every cycle does.
    let mut retry = Placer::new(policy, DEFAULT_SEED);
    let mut full = ClusterState::from_config(&cfg).unwrap();
    for n in 0..full.topology().nodes.len() as u32 {
        full.set_node_ready(n, false);
    }
    let mut s2 = ClusterState::from_config(&cfg).unwrap();
    let mut d2 = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        retry.observe_admitted(j);
        for _ in 0..i % 5 {
            assert!(retry.place(&full, j).is_err(), "nothing fits on a cluster of unready nodes");
        }
        d2.extend(run(&mut retry, &mut s2, std::slice::from_ref(j)));
    }
    assert_eq!(once.workload(), retry.workload(), "the learned mix counts admitted jobs, not attempts");
    assert!(once.workload().is_some_and(|w| !w.shares.is_empty()), "the mix was learned");
    assert_eq!(d1, d2, "same admitted jobs, same decisions, however often each was retried");
}

/// The mix is a function of the admitted jobs only: placing between observations does not freeze a partial mix.
#[test]
fn learned_fgd_mix_does_not_depend_on_when_place_is_called() {
    let cfg = synth::cluster(80, 4);
    let state = ClusterState::from_config(&cfg).unwrap();
    let jobs = synth::jobs(60, 2);
    let mut a = Placer::new(fgd(), DEFAULT_SEED);
    let mut b = Placer::new(fgd(), DEFAULT_SEED);
    for j in &jobs {
        a.observe_admitted(j);
        b.observe_admitted(j);
        // `b` places (and so builds its memo) after every observation, `a` never does until the end.
        let _ = b.place(&state, j);
    }
    assert_eq!(a.workload(), b.workload());
    let probes = synth::jobs(120, 9);
    let (mut sa, mut sb) = (state.clone(), state.clone());
    assert_eq!(run(&mut a, &mut sa, &probes), run(&mut b, &mut sb, &probes));
}

/// Ties and random scores hash the job's name. The old code used rustc-hash's `FxHasher` through `Hash for str`,
/// neither of which promises a stable value across toolchains; FNV-1a 64 over the bytes is pinned here.
#[test]
fn job_hash_is_pinned_fnv1a_64() {
    assert_eq!(job_hash(""), 0xcbf2_9ce4_8422_2325, "FNV-1a 64 offset basis");
    assert_eq!(job_hash("a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(job_hash("foobar"), 0x8594_4171_f739_67e8);
}

/// One verdict type: the core says "not now" or "never", its callers act on it as-is. A job that a full cluster
/// cannot take now is `Unschedulable`; one the permitted pools could never hold is `Unresolvable`; per node, a node
/// too small for the replica is `Unresolvable`, a busy one `Unschedulable`.
#[test]
fn core_verdict_separates_not_now_from_never() {
    use sovra_placement::Verdict;
    use sovra_placement::filter::{JobNeeds, Reason, node_verdict};
    let cfg = synth::cluster(30, 6);
    let empty = ClusterState::from_config(&cfg).unwrap();
    let mut job = synth::jobs(1, 1).remove(0);
    job.residency = "eu-any".into();
    job.kind = sovra_domain::Purpose::Training;
    job.resources =
        sovra_domain::Resources { gpus: 8, gpu_milli: 1000, gpu_models: vec![], cpu_milli: 1, memory_mib: 1 };
    let mut placer = Placer::new(PolicySpec::default(), DEFAULT_SEED);
    assert!(placer.verdict(&empty, &job).is_fit());
    // Fill: nothing left now, but it would fit when jobs end.
    let mut full = empty.clone();
    while let Verdict::Fit(d) = placer.verdict(&full, &job) {
        full.apply(&d).unwrap();
    }
    let v = placer.verdict(&full, &job);
    assert!(matches!(v, Verdict::Unschedulable(_)), "{v:?}");
    assert_eq!(v.reason().map(|e| e.unresolvable), Some(false));
    // Nine GPUs per replica: no 8-GPU node can ever hold it.
    let mut big = job.clone();
    big.resources.gpus = 9;
    assert!(placer.verdict(&empty, &big).is_unresolvable());
    let topo = empty.topology();
    // A node the job fits on when empty (all synthetic nodes have 8 GPUs).
    let Verdict::Fit(first) = placer.verdict(&empty, &job) else { panic!("fits when empty") };
    let node = first.replicas[0].node;
    assert_eq!(node_verdict(&empty, node, &JobNeeds::of(&big, topo)), Verdict::Unresolvable(Reason::TooFewHealthyGpus));
    assert_eq!(node_verdict(&full, node, &JobNeeds::of(&job, topo)), Verdict::Unschedulable(Reason::TooFewFreeGpus));
    assert_eq!(node_verdict(&empty, node, &JobNeeds::of(&job, topo)), Verdict::Fit(()));
}

/// Explanations carry reasons as data (which check, with the numbers it compared), worded only for display; their
/// JSON keeps the words under `reason` (what the remote CLI prints) beside the data under `detail`, and a record
/// stored before reasons were data (words only) still reads back.
#[test]
fn explanation_reasons_are_data_worded_only_for_display() {
    use sovra_placement::filter::Reason;
    use sovra_placement::{ReasonCount, RejectReason};
    let cfg = synth::cluster(200, 1);
    let state = ClusterState::from_config(&cfg).unwrap();
    let mut job = synth::jobs(1, 1).remove(0);
    job.kind = sovra_domain::Purpose::Training;
    job.residency = "fr-health".into();
    job.resources =
        sovra_domain::Resources { gpus: 9, gpu_milli: 1000, gpu_models: vec![], cpu_milli: 1, memory_mib: 1 };
    let e = Placer::new(PolicySpec::default(), DEFAULT_SEED).place(&state, &job).unwrap_err();
    let reasons: Vec<&ReasonCount> = e.filters.iter().flat_map(|f| &f.reasons).collect();
    assert!(
        reasons.iter().any(|r| matches!(&r.reason, RejectReason::Node { reason: Reason::TooFewHealthyGpus, resources }
            if resources.gpus == 9)),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| matches!(&r.reason, RejectReason::Residency { class, .. } if class == "fr-health")));
    assert!(reasons.iter().any(|r| matches!(r.reason, RejectReason::Purpose { .. })));
    let node = reasons.iter().find(|r| matches!(r.reason, RejectReason::Node { .. })).unwrap();
    assert_eq!(node.reason.to_string(), "fewer than 9 healthy GPUs");
    // JSON: words and data; and back.
    let json = serde_json::to_value(&e).unwrap();
    let first = &json["filters"].as_array().unwrap().iter().find(|f| f["filter"] == "health").unwrap()["reasons"][0];
    assert_eq!(first["reason"], "fewer than 9 healthy GPUs");
    assert_eq!(first["detail"]["kind"], "node");
    assert_eq!(first["detail"]["reason"], "too-few-healthy-gpus");
    let back: sovra_placement::Explanation = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
    // A reason stored as words only.
    let old: ReasonCount = serde_json::from_str(r#"{"reason": "fewer than 2 fully free GPUs", "nodes": 3}"#).unwrap();
    assert_eq!(old.reason, RejectReason::Worded { text: "fewer than 2 fully free GPUs".into() });
    assert_eq!((old.reason.to_string(), old.nodes), ("fewer than 2 fully free GPUs".to_string(), 3));
}

/// `place_on` makes, on the one node it is given, the placement `place` would make there (the extender accounts
/// bound pods with it), and refuses a node of a pool the job may not use.
#[test]
fn place_on_matches_place_on_the_chosen_node() {
    let cfg = synth::cluster(150, 8);
    let mut state = ClusterState::from_config(&cfg).unwrap();
    let mut placer = Placer::new(PolicySpec::default(), DEFAULT_SEED);
    let mut checked = 0;
    for job in synth::jobs(60, 4) {
        let Ok(d) = placer.place(&state, &job) else { continue };
        let node = d.replicas[0].node;
        let on = placer.place_on(&state, &job, node).unwrap();
        assert_eq!(on.replicas[0].devices, d.replicas[0].devices, "job {}", job.name);
        assert_eq!(on.replicas[0].feasible_nodes, 1);
        let topo = state.topology().clone();
        let elsewhere = (0..topo.nodes.len() as u32)
            .find(|&n| topo.pools[topo.nodes[n as usize].pool as usize].purpose != job.kind);
        if let Some(n) = elsewhere {
            assert!(placer.place_on(&state, &job, n).is_err(), "a pool of the other purpose");
        }
        assert!(placer.place_on(&state, &job, u32::MAX).is_err(), "no such node");
        state.apply(&d).unwrap();
        checked += 1;
    }
    assert!(checked > 20);
}
