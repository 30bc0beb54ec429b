//! Sovra's packing policy (`learned:fgd,adaptive-first-fit`, FGD's mix learned online) against the FGD paper's FGD
//! (handed the trace's mix) on vendored task files, one seed each — the full comparison (19 files × seeds 42–51)
//! is in docs/simulator.md. Also pins FGD's allocation on default, seed 42, ordered by Go's `math/rand` as the
//! paper's simulator: a change to the stream, the protocol or FGD shows here.

use sovra_simulator::fill::{Target, alloc_pct, bin, run_fill};
use sovra_simulator::trace::{TraceNode, TraceTask, load_nodes, load_tasks};
use std::path::Path;

fn load(trace: &str) -> (Vec<TraceNode>, Vec<TraceTask>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/alibaba-gpu-v2023");
    let nodes = load_nodes(&dir.join("openb_node_list_gpu_node.csv")).unwrap();
    (nodes, load_tasks(&dir.join(format!("openb_pod_list_{trace}.csv"))).unwrap())
}

fn at_100(nodes: &[TraceNode], tasks: &[TraceTask], policy: &str, target: Target, seed: u64) -> f64 {
    let run = run_fill(nodes, tasks, &policy.parse().unwrap(), &target, seed, 1.3);
    bin(&run, 130, alloc_pct(&run))[100].unwrap()
}

#[test]
fn sovra_beats_fgd_on_default_and_multigpu30() {
    // Seeds where the measured margin is typical (default +0.15, multigpu30 +0.19 at seeds 42 and 43).
    for (trace, seed) in [("default", 42), ("multigpu30", 43)] {
        let (nodes, tasks) = load(trace);
        let fgd = at_100(&nodes, &tasks, "fgd", Target::Trace, seed);
        let sovra = at_100(&nodes, &tasks, "fgd,adaptive-first-fit", Target::Learned, seed);
        assert!(sovra > fgd, "{trace} seed {seed}: sovra {sovra} ≤ fgd {fgd}");
        if trace == "default" {
            assert_eq!(fgd, 95.38, "FGD on default, seed 42, Go's stream");
        }
    }
}
