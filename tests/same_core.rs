//! The simulator and the live placement path decide alike: the first tasks of the Alibaba trace's shuffled workload,
//! placed by the simulator (`run_sequence`) and by `sovra place` (the trace cluster and the tasks written as the
//! YAML files a user would give it), land on the same node, task for task, for best-fit and for FGD.

use sovra_simulator::fill::{SplitMix, Target, build_workload, run_sequence, typical_workload};
use sovra_simulator::trace::{TraceNode, TraceTask, load_nodes, load_tasks};
use std::fmt::Write;
use std::path::Path;
use std::process::Command;

const TASKS: usize = 600;

fn cluster_yaml(nodes: &[TraceNode], typical: &sovra_placement::Workload) -> String {
    let mut y = String::from(
        "zones: [{id: alibaba, country: CN, region: trace, jurisdiction: CN, operator: Alibaba (trace), operator_hq: CN}]\n\
         pools: [{id: trace, zone: alibaba, purpose: training}]\n\
         residency_classes: [{name: any}]\nnodes:\n",
    );
    for n in nodes {
        write!(y, "  - {{name: {}, pool: trace, cpu_milli: {}, memory_mib: {}", n.name, n.cpu_milli, n.memory_mib)
            .unwrap();
        if n.gpus > 0 {
            // Trace GPUs have no memory figure; any positive value schedules the same.
            write!(y, ", gpus: {{model: {}, count: {}, memory_mib: 1}}", n.model, n.gpus).unwrap();
        }
        y.push_str("}\n");
    }
    // FGD's target: the trace's typical shapes, each weighted by its share (scaled to integers; the shares of a
    // declared mix are renormalised, so only the ratios matter — and they are the counts' ratios).
    y.push_str("scheduling:\n  fgd_target_workload:\n");
    for (shape, share) in &typical.shares {
        let models = if shape.gpu_models.is_empty() {
            String::new()
        } else {
            format!(", gpu_models: [{}]", shape.gpu_models.join(", "))
        };
        let milli = if shape.gpus == 0 { String::new() } else { format!(", gpu_milli: {}", shape.gpu_milli) };
        writeln!(
            y,
            "    - {{gpus: {}{milli}{models}, cpu_milli: {}, memory_mib: 1, weight: {}}}",
            shape.gpus,
            shape.cpu_milli,
            (share * 1e9).round() as u64
        )
        .unwrap();
    }
    y
}

fn jobs_yaml(tasks: &[TraceTask]) -> String {
    let mut y = String::from("jobs:\n");
    for t in tasks {
        let milli = if t.num_gpu == 0 { String::new() } else { format!(", gpu_milli: {}", t.gpu_milli) };
        writeln!(
            y,
            "  - {{name: {}, kind: training, residency: any, resources: {{gpus: {}{milli}, cpu_milli: {}, memory_mib: {}}}}}",
            t.name, t.num_gpu, t.cpu_milli, t.memory_mib
        )
        .unwrap();
    }
    y
}

#[test]
fn simulator_and_sovra_place_decide_alike() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/alibaba-gpu-v2023");
    let nodes = load_nodes(&dir.join("openb_node_list_gpu_node.csv")).unwrap();
    let tasks = load_tasks(&dir.join("openb_pod_list_default.csv")).unwrap();
    let typical = typical_workload(&tasks);
    let capacity = nodes.iter().map(|n| u64::from(n.gpus)).sum::<u64>() * 1000;
    // The job file format asks for at least 1 milli-CPU and 1 MiB; the few trace tasks without are left out of
    // both sides.
    let sequence: Vec<TraceTask> = build_workload(&tasks, capacity, 1.3, &mut SplitMix::new(42))
        .into_iter()
        .filter(|t| t.cpu_milli > 0 && t.memory_mib > 0)
        .take(TASKS)
        .collect();
    let scratch = std::env::temp_dir().join(format!("sovra-same-core-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let (cluster, jobs) = (scratch.join("cluster.yaml"), scratch.join("jobs.yaml"));
    std::fs::write(&cluster, cluster_yaml(&nodes, &typical)).unwrap();
    std::fs::write(&jobs, jobs_yaml(&sequence)).unwrap();

    for policy in ["best-fit", "fgd"] {
        let sim = run_sequence(&nodes, &sequence, &typical, &policy.parse().unwrap(), &Target::Trace, 42);
        let out = Command::new(env!("CARGO_BIN_EXE_sovra"))
            .args(["place", "--seed", "42", "-o", "json", "--policy", policy, "--config"])
            .arg(&cluster)
            .arg("--job")
            .arg(&jobs)
            .output()
            .unwrap();
        assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let live: Vec<Option<String>> = doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["decision"]["replicas"][0]["node_name"].as_str().map(String::from))
            .collect();
        let simulated: Vec<Option<String>> =
            sim.placements.iter().map(|p| p.map(|n| nodes[n as usize].name.clone())).collect();
        assert_eq!(live.len(), simulated.len());
        let differ = live.iter().zip(&simulated).position(|(a, b)| a != b);
        assert_eq!(differ, None, "{policy}: first difference at task {differ:?}");
        assert!(live.iter().flatten().count() > TASKS / 2, "{policy}: the comparison covers real placements");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
