//! Replay and plan on tiny scenarios whose outcome can be computed by hand.

use sovra_simulator::plan::plan;
use sovra_simulator::replay::{Scenario, replay, timeline};
use std::path::PathBuf;

/// Writes a one-zone cluster of `gpus` single-GPU nodes and a scenario into a fresh folder.
fn scenario(name: &str, gpus: usize, streams: &str, plan: &str) -> PathBuf {
    // Under target/tmp (CARGO_TARGET_TMPDIR), not /tmp: nothing is left outside the build folder.
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sovra-replay-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nodes = if gpus == 0 {
        String::new()
    } else {
        format!(
            "  - {{name: n, count: {gpus}, pool: p, cpu_milli: 8000, memory_mib: 8192, gpus: {{model: G, count: 1, memory_mib: 1}}}}\n"
        )
    };
    std::fs::write(
        dir.join("cluster.yaml"),
        format!(
            "zones: [{{id: z, country: FR, region: r, jurisdiction: EU, operator: o, operator_hq: FR}}]\n\
             pools: [{{id: p, zone: z, purpose: training}}, {{id: q, zone: z, purpose: inference}}]\n\
             residency_classes: [{{name: any}}, {{name: de-only, countries: [DE]}}]\nnodes:\n{nodes}"
        ),
    )
    .unwrap();
    let file = dir.join("scenario.yaml");
    std::fs::write(&file, format!("cluster: cluster.yaml\nhorizon_hours: 10\nstreams:\n{streams}{plan}")).unwrap();
    file
}

const EVERY_10_RUNS_30: &str = "  - job: {name: t, kind: training, residency: any, resources: {gpus: 1, cpu_milli: 1000, memory_mib: 1}}\n    count: 6\n    arrival: {every_minutes: 10}\n    duration: {fixed_minutes: 30}\n";

#[test]
fn waits_on_one_gpu_are_as_computed_by_hand() {
    // One GPU; jobs arrive at 0, 10, …, 50 minutes and run 30 minutes each: they run back to back, starting at
    // 0, 30, 60, 90, 120, 150 → waits 0, 20, 40, 60, 80, 100 minutes.
    let s = Scenario::load(&scenario("hand", 1, EVERY_10_RUNS_30, "")).unwrap();
    let r = replay(&s, &s.cluster).unwrap();
    assert_eq!((r.jobs, r.started, r.refused, r.unstarted), (6, 6, 0, 0));
    let w = r.wait_minutes;
    // Nearest rank over [0, 20, 40, 60, 80, 100]: p50 = the ⌈3⌉rd = 40, p95 = the ⌈5.7⌉th = 100.
    assert_eq!((w.p50, w.p95, w.max), (40.0, 100.0, 100.0), "{w:?}");
    assert_eq!(r.residency_violations, 0);
    // With three GPUs nobody waits.
    let s = Scenario::load(&scenario("three", 3, EVERY_10_RUNS_30, "")).unwrap();
    assert_eq!(replay(&s, &s.cluster).unwrap().wait_minutes.max, 0.0);
}

#[test]
fn impossible_jobs_are_refused_not_queued() {
    let streams = format!(
        "{EVERY_10_RUNS_30}  - job: {{name: de, kind: training, residency: de-only, resources: {{gpus: 1, cpu_milli: 1, memory_mib: 1}}}}\n    count: 3\n    arrival: {{every_minutes: 5}}\n    duration: {{fixed_minutes: 5}}\n  - job: {{name: big, kind: training, residency: any, resources: {{gpus: 1, cpu_milli: 9000, memory_mib: 1}}}}\n    count: 2\n    arrival: {{every_minutes: 5}}\n    duration: {{fixed_minutes: 5}}\n"
    );
    let s = Scenario::load(&scenario("refuse", 1, &streams, "")).unwrap();
    let r = replay(&s, &s.cluster).unwrap();
    assert_eq!(r.refused, 5, "3 with no permitted zone, 2 larger than any node");
    assert_eq!(r.refused_by_stream.get("de"), Some(&3));
    assert_eq!(r.refused_by_stream.get("big"), Some(&2));
    assert_eq!(r.unstarted, 0);
}

/// Three one-GPU jobs of 30 minutes on one GPU: `first` at 0 min, `low` at 5 min, `high` at 6 min, with the
/// priorities given.
fn three_on_one_gpu(first: i32, low: i32, high: i32) -> String {
    [("first", first, 0.0), ("low", low, 5.0 / 60.0), ("high", high, 0.1)]
        .iter()
        .map(|(name, prio, hour)| {
            format!(
                "  - job: {{name: {name}, kind: training, priority: {prio}, residency: any, resources: {{gpus: 1, cpu_milli: 1, memory_mib: 1}}}}\n    \
                 count: 1\n    start_hour: {hour}\n    arrival: {{every_minutes: 1}}\n    duration: {{fixed_minutes: 30}}\n"
            )
        })
        .collect()
}

#[test]
fn higher_priority_starts_first() {
    // One GPU held 0–30 min by `first` (the highest priority: nobody preempts it); at 5 min `low` queues, at 6 min
    // `high` queues: `high` starts at 30, `low` at 60.
    let s = Scenario::load(&scenario("prio", 1, &three_on_one_gpu(10, 1, 9), "")).unwrap();
    let r = replay(&s, &s.cluster).unwrap();
    let high = r.wait_minutes_by_stream["high"].max;
    let low = r.wait_minutes_by_stream["low"].max;
    assert!((high - 24.0).abs() < 0.01, "high waits 30 − 6 = 24 min: {high}");
    assert!((low - 55.0).abs() < 0.01, "low waits 60 − 5 = 55 min: {low}");
    assert_eq!(r.preemptions, 0);
}

#[test]
fn a_preempted_job_restarts_from_scratch() {
    // Priorities 0, 1, 9: at 5 min `low` preempts `first`, at 6 min `high` preempts `low`. `high` runs 6–36; then
    // `low` restarts from scratch (36–66), then `first` (66–96). Waits count every pending stretch: first 0 + 61,
    // low 0 + 30, high 0.
    let s = Scenario::load(&scenario("preempt", 1, &three_on_one_gpu(0, 1, 9), "")).unwrap();
    let (r, trace) = timeline(&s, &s.cluster).unwrap();
    assert_eq!((r.preemptions, r.preempted_jobs, r.requeued_at_horizon, r.unstarted), (2, 2, 0, 0));
    let runs = |name: &str| -> Vec<(f64, Option<f64>, bool)> {
        let t = trace.iter().find(|t| t.name == format!("{name}-0")).unwrap();
        t.runs
            .iter()
            .map(|r| (r.start_s / 60.0, r.end_s.map(|e| (e / 60.0 * 1e6).round() / 1e6), r.preempted))
            .collect()
    };
    assert_eq!(runs("first"), vec![(0.0, Some(5.0), true), (66.0, Some(96.0), false)]);
    let low = runs("low");
    assert_eq!(low.len(), 2, "{low:?}");
    assert!((low[0].0 - 5.0).abs() < 1e-6 && low[0].2 && (low[1].0 - 36.0).abs() < 1e-6 && !low[1].2, "{low:?}");
    assert_eq!(runs("high").len(), 1);
    let wait = |name: &str| r.wait_minutes_by_stream[name].max;
    assert!((wait("first") - 61.0).abs() < 1e-6, "{}", wait("first"));
    assert!((wait("low") - 30.0).abs() < 1e-6, "{}", wait("low"));
    assert_eq!(wait("high"), 0.0);
    // Each run is on the cluster's one GPU.
    assert!(trace.iter().flat_map(|t| &t.runs).all(|r| r.replicas.len() == 1 && r.replicas[0].devices == vec![0]));
}

#[test]
fn replay_is_deterministic_per_seed() {
    let streams = "  - job: {name: t, kind: training, residency: any, resources: {gpus: 1, cpu_milli: 1000, memory_mib: 1}}\n    count: 200\n    arrival: {poisson_per_hour: 20}\n    duration: {exponential_mean_minutes: 20}\n";
    let s = Scenario::load(&scenario("det", 4, streams, "")).unwrap();
    let a = serde_json::to_string(&replay(&s, &s.cluster).unwrap()).unwrap();
    let b = serde_json::to_string(&replay(&s, &s.cluster).unwrap()).unwrap();
    assert_eq!(a, b);
    let mut other = s.clone();
    other.seed = 7;
    assert_ne!(a, serde_json::to_string(&replay(&other, &other.cluster).unwrap()).unwrap());
}

#[test]
fn plan_finds_the_fewest_nodes() {
    // The hand case needs 3 GPUs for zero wait; the cluster has 1: the plan must add exactly 2 one-GPU nodes.
    let plan_yaml = "plan:\n  target: {p95_wait_minutes: 0}\n  offers:\n    - {name: extra, pool: p, max: 10, cpu_milli: 8000, memory_mib: 8192, gpu_model: G, gpu_count: 1, gpu_memory_mib: 1}\n    - {name: wrong-pool, pool: q, max: 5, cpu_milli: 8000, memory_mib: 8192, gpu_model: G, gpu_count: 1, gpu_memory_mib: 1}\n";
    let s = Scenario::load(&scenario("plan", 1, EVERY_10_RUNS_30, plan_yaml)).unwrap();
    let p = plan(&s).unwrap();
    assert_eq!(p.counts, Some(vec![2, 0]), "inference nodes cannot help training jobs");
    assert_eq!(p.metric, 0.0);
    assert!(p.evaluations.iter().any(|e| e.counts == vec![1, 0] && !e.meets), "one node fewer misses the target");
    // Unreachable: at most 1 extra node.
    let tight = plan_yaml.replace("max: 10", "max: 1");
    let s = Scenario::load(&scenario("tight", 1, EVERY_10_RUNS_30, &tight)).unwrap();
    assert_eq!(plan(&s).unwrap().counts, None);
}

#[test]
fn bad_scenarios_name_the_field() {
    let cases = [
        (
            "  - job: {name: t, kind: training, residency: nope, resources: {gpus: 1, cpu_milli: 1, memory_mib: 1}}\n    count: 1\n    arrival: {every_minutes: 1}\n    duration: {fixed_minutes: 1}\n",
            "streams[0].job.residency: unknown residency class \"nope\"",
        ),
        (
            "  - job: {name: t, kind: training, residency: any, resources: {gpus: 1, cpu_milli: 1, memory_mib: 1}}\n    count: 0\n    arrival: {every_minutes: 1}\n    duration: {fixed_minutes: 1}\n",
            "streams[0].count: 0 must be from 1",
        ),
        (
            "  - job: {name: t, kind: training, residency: any, resources: {gpus: 1, cpu_milli: 1, memory_mib: 1}}\n    count: 1\n    arrival: {every_minutes: -3}\n    duration: {fixed_minutes: 1}\n",
            "streams[0].arrival: -3 must be a positive number",
        ),
        (
            "  - job: {name: t, kind: training, residency: any, resources: {gpus: 1, cpu_milli: 1, memory_mib: 1}}\n    count: 1\n    arrival: {hourly: 1}\n    duration: {fixed_minutes: 1}\n",
            "streams[0].arrival: unknown variant `hourly`",
        ),
        (
            "  - job: {name: t, kind: training, residency: any, resources: {gpus: 1, gpu_milli: 2000, cpu_milli: 1, memory_mib: 1}}\n    count: 1\n    arrival: {every_minutes: 1}\n    duration: {uniform_minutes: [5, 1]}\n",
            "streams[0].job.resources.gpu_milli: 2000 is out of range",
        ),
        (
            "  - job: {name: t, kind: training, queue: nope, residency: any, resources: {gpus: 1, cpu_milli: 1, memory_mib: 1}}\n    count: 1\n    arrival: {every_minutes: 1}\n    duration: {fixed_minutes: 1}\n",
            "streams[0].job.queue: unknown queue \"nope\"; the cluster file's queues: are [default]",
        ),
    ];
    for (i, (streams, want)) in cases.iter().enumerate() {
        let e = Scenario::load(&scenario(&format!("bad{i}"), 1, streams, "")).unwrap_err().to_string();
        assert!(e.contains(want), "case {i}: {e}");
        assert!(e.contains("scenario.yaml"), "case {i}: {e}");
    }
}
