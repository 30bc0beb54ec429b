//! Every size a scenario or a trace file asks for is bounded, and checked before it is allocated: a file over a
//! limit is refused naming the field and the limit, never an out-of-memory abort (issue 11, item 1).

use sovra_domain::ClusterConfig;
use sovra_simulator::fill::{MAX_WORKLOAD_TASKS, check_workload};
use sovra_simulator::replay::{Scenario, limits};
use sovra_simulator::trace::{limits as trace_limits, read_nodes, read_tasks};
use std::io::Read;

const CLUSTER: &str = "zones: [{id: z, country: FR, region: r, jurisdiction: EU, operator: o, operator_hq: FR}]\n\
pools: [{id: p, zone: z, purpose: training}]\nresidency_classes: [{name: any}]\n\
nodes: [{name: n, pool: p, cpu_milli: 8000, memory_mib: 8192, gpus: {model: G, count: 1, memory_mib: 1}}]\n";

fn stream(count: u64) -> String {
    format!(
        "  - job: {{name: t, kind: training, residency: any, resources: {{gpus: 1, cpu_milli: 1, memory_mib: 1}}}}\n    \
         count: {count}\n    arrival: {{every_minutes: 10}}\n    duration: {{fixed_minutes: 30}}\n"
    )
}

/// The problems of a scenario, as `field: message` lines (panics if it parses).
fn refused(text: &str) -> String {
    let e = Scenario::parse("s.yaml", text, |_| ClusterConfig::from_yaml("cluster.yaml", CLUSTER)).unwrap_err();
    e.problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("\n")
}

fn head(horizon: &str) -> String {
    format!("cluster: c.yaml\nhorizon_hours: {horizon}\nstreams:\n")
}

#[test]
fn a_horizon_of_a_billion_hours_is_refused_naming_the_limit() {
    let e = refused(&format!("{}{}", head("1000000000"), stream(1)));
    assert!(e.contains("horizon_hours: 1000000000 is over the limit of 87600 hours"), "{e}");
}

#[test]
fn a_sample_count_over_the_limit_is_refused_before_sampling() {
    let e = refused(&format!("cluster: c.yaml\nhorizon_hours: 87600\nsample_minutes: 0.0001\nstreams:\n{}", stream(1)));
    assert!(e.contains("sample_minutes: 0.0001 minutes over 87600 hours"), "{e}");
    assert!(e.contains(&format!("over the limit of {}", limits::MAX_SAMPLES)), "{e}");
}

#[test]
fn too_many_jobs_over_all_streams_are_refused() {
    let streams: String = (0..3).map(|_| stream(500_000)).collect();
    let e = refused(&format!("{}{streams}", head("10")));
    assert!(e.contains("streams[].count: 1500000 jobs in all streams together, over the limit of 1000000"), "{e}");
}

#[test]
fn too_many_streams_are_refused() {
    let streams: String = (0..limits::MAX_STREAMS + 1).map(|_| stream(1)).collect();
    let e = refused(&format!("{}{streams}", head("10")));
    assert!(e.contains(&format!("streams: {} streams, over the limit of 1000", limits::MAX_STREAMS + 1)), "{e}");
}

#[test]
fn a_plan_of_too_many_gpus_is_refused() {
    let offer = |name: &str| {
        format!(
            "    - {{name: {name}, pool: p, max: 10000, cpu_milli: 1, memory_mib: 1, gpu_model: G, gpu_count: 8, \
             gpu_memory_mib: 1}}\n"
        )
    };
    let plan = format!("plan:\n  target: {{p95_wait_minutes: 30}}\n  offers:\n{}{}", offer("a"), offer("b"));
    let e = refused(&format!("{}{}{plan}", head("10"), stream(1)));
    assert!(e.contains("plan.offers: 160000 GPUs with every offer at its max, over the limit of 100000"), "{e}");
    let plan = format!("plan:\n  target: {{p95_wait_minutes: 30}}\n  offers:\n{}", offer("a").replace("8,", "65,"));
    let e = refused(&format!("{}{}{plan}", head("10"), stream(1)));
    assert!(e.contains("plan.offers[0].gpu_count: 65 is over the limit of 64 GPUs per node"), "{e}");
}

#[test]
fn a_scenario_file_over_the_size_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.yaml");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(limits::MAX_SCENARIO_BYTES + 1).unwrap();
    let e = Scenario::load(&f).unwrap_err().to_string();
    assert!(e.contains("over the limit of 4194304 bytes for a scenario"), "{e}");
}

#[test]
fn an_endless_trace_stops_at_the_byte_limit() {
    // Before: a reader was read to its end, however long. An endless one now fails once past the limit.
    let header = &b"name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"[..];
    let endless = header.chain(std::io::repeat(b'a'));
    let e = read_tasks("endless.csv", endless).unwrap_err().to_string();
    assert!(e.contains(&format!("over the limit of {} bytes for a trace file", trace_limits::MAX_TRACE_BYTES)), "{e}");
}

#[test]
fn a_trace_with_more_rows_than_the_limit_is_refused_at_the_first_row_over() {
    let mut text = String::from("sn,cpu_milli,memory_mib,gpu,model\n");
    for i in 0..=trace_limits::MAX_NODES {
        text.push_str(&format!("n{i},1,1,1,G\n"));
    }
    let e = read_nodes("nodes.csv", text.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("more than 100000 nodes, the limit of a node list"), "{e}");
    assert!(e.starts_with(&format!("nodes.csv:{}:", trace_limits::MAX_NODES + 2)), "{e}");
}

#[test]
fn inflating_a_trace_is_bounded_before_it_starts() {
    let tasks = read_tasks("t.csv", &b"name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,1,1\n"[..]).unwrap();
    // 1 milli-GPU tasks to fill 100,000 GPUs: 10^8 tasks.
    let e = check_workload(&tasks, 100_000_000, 1.0).unwrap_err();
    assert!(e.contains(&format!("over the limit of {MAX_WORKLOAD_TASKS}")), "{e}");
    let cpu_only = read_tasks("t.csv", &b"name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,0,0\n"[..]).unwrap();
    assert!(check_workload(&cpu_only, 1000, 1.3).unwrap_err().contains("no task of the trace asks for a GPU"));
    assert!(check_workload(&tasks, 1000, 1.3).is_ok());
}
