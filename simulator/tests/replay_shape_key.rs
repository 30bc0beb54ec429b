//! Regression: within a scheduling cycle, a job whose shape already failed is skipped — and the shape must be the
//! whole of what decides placement. `sovra replay` once kept its own key that left out the job's `kind` and NVLink
//! wish (unlike the engine's), so a job that could start was skipped because a job of another kind, or with a
//! stricter NVLink wish, had just failed. The replay is now driven by the engine, whose cycle skips retries by
//! [`sovra_engine::shape_key`] (per queue): these scenarios check, through the replay, that a job of another kind
//! or NVLink wish is still tried after such a failure (and, the failing job holding the backfill reservation, that
//! it is tried on the other nodes).

use sovra_simulator::replay::{Scenario, replay};
use std::path::{Path, PathBuf};

/// Writes `cluster` and a 10-hour scenario of `streams` into a fresh folder.
fn scenario(name: &str, nodes: &str, streams: &str) -> PathBuf {
    // Under target/tmp (CARGO_TARGET_TMPDIR), not /tmp: nothing is left outside the build folder.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sovra-replay-shape-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cluster.yaml"),
        format!(
            "zones: [{{id: z, country: FR, region: r, jurisdiction: EU, operator: o, operator_hq: FR}}]\n\
             pools: [{{id: p, zone: z, purpose: training}}, {{id: q, zone: z, purpose: inference}}]\n\
             residency_classes: [{{name: any}}]\nnodes:\n{nodes}"
        ),
    )
    .unwrap();
    let file = dir.join("scenario.yaml");
    std::fs::write(&file, format!("cluster: cluster.yaml\nhorizon_hours: 10\nstreams:\n{streams}")).unwrap();
    file
}

/// One stream of a single job: `name`, `kind`, extra job fields, start (hours) and duration (minutes).
fn one(name: &str, kind: &str, extra: &str, start_hour: f64, minutes: u32) -> String {
    format!(
        "  - job: {{name: {name}, kind: {kind}, residency: any, resources: {{gpus: 2, cpu_milli: 1000, memory_mib: 1}}{extra}}}\n    \
         count: 1\n    start_hour: {start_hour}\n    arrival: {{every_minutes: 1}}\n    duration: {{fixed_minutes: {minutes}}}\n"
    )
}

/// The wait (minutes) of the single job of stream `name`.
fn wait_of(file: &Path, name: &str) -> f64 {
    let s = Scenario::load(file).unwrap();
    let r = replay(&s, &s.cluster).unwrap();
    assert_eq!((r.jobs, r.refused, r.unstarted), (4, 0, 0), "{r:?}");
    r.wait_minutes_by_stream[name].max
}

#[test]
fn replay_does_not_skip_a_job_of_another_kind_after_a_failure() {
    // One 2-GPU node per pool. At 0: `a` (training, 200 min) and `b` (inference, 100 min) fill both. At 3 and 6
    // min: `c` (training) and `d` (inference, same residency, resources and replicas as `c`) wait. At 100 min `b`
    // ends: `c` still cannot start (the training node is busy until 200), but `d` can — on the inference node,
    // a 94-minute wait. The old key skipped `d` there because `c` had failed, so it waited until 200 (194 min).
    let nodes = "  - {name: t, pool: p, cpu_milli: 8000, memory_mib: 8192, gpus: {model: G, count: 2, memory_mib: 1}}\n  \
                 - {name: i, pool: q, cpu_milli: 8000, memory_mib: 8192, gpus: {model: G, count: 2, memory_mib: 1}}\n";
    let streams = [
        one("a", "training", "", 0.0, 200),
        one("b", "inference", "", 0.0, 100),
        one("c", "training", "", 0.05, 100),
        one("d", "inference", "", 0.1, 100),
    ]
    .concat();
    assert_eq!(wait_of(&scenario("kind", nodes, &streams), "d"), 94.0);
}

#[test]
fn replay_does_not_skip_a_job_with_another_nvlink_wish_after_a_failure() {
    // Two 2-GPU training nodes, only `t1` with NVLink. At 0: `a` (NVLink required, 200 min) takes `t1`, `b` (no
    // wish, 100 min) takes `t2`. At 3 and 6 min: `c` (NVLink required) and `d` (no wish) wait. At 100 min `b` ends:
    // `c` still needs `t1`, but `d` can start on `t2` (94 min). The old key, blind to the wish, skipped `d`.
    let nodes = "  - {name: t1, pool: p, cpu_milli: 8000, memory_mib: 8192, gpus: {model: G, count: 2, memory_mib: 1, nvlink: all}}\n  \
                 - {name: t2, pool: p, cpu_milli: 8000, memory_mib: 8192, gpus: {model: G, count: 2, memory_mib: 1}}\n";
    let (req, none) = (", topology: {nvlink: require}", ", topology: {nvlink: none}");
    let streams = [
        one("a", "training", req, 0.0, 200),
        one("b", "training", none, 0.0, 100),
        one("c", "training", req, 0.05, 100),
        one("d", "training", none, 0.1, 100),
    ]
    .concat();
    assert_eq!(wait_of(&scenario("nvlink", nodes, &streams), "d"), 94.0);
}
