//! Writes the node each task of one fill run goes to, one `task,node` line per task (`-` for a failed task), for
//! the decision-level comparison with the numpy reference (`scripts/fgd_reference.py --placements`).
//!
//! `cargo run --release -p sovra-simulator --example placements -- TRACE.csv POLICY SEED [go|splitmix] > out.txt`

use sovra_simulator::fill::{Target, run_sequence_ordered, typical_workload};
use sovra_simulator::order::{Stream, order};
use sovra_simulator::trace::{load_nodes, load_tasks};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        eprintln!("usage: placements TRACE.csv POLICY SEED [go|splitmix]");
        std::process::exit(2);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/alibaba-gpu-v2023");
    let nodes = load_nodes(&dir.join("openb_node_list_gpu_node.csv")).unwrap_or_else(|e| fail(&e.to_string()));
    let tasks = load_tasks(Path::new(&args[1])).unwrap_or_else(|e| fail(&e.to_string()));
    let policy = args[2].parse().unwrap_or_else(|e: String| fail(&e));
    let seed: u64 = args[3].parse().unwrap_or_else(|_| fail("SEED: a whole number"));
    let capacity = nodes.iter().map(|n| u64::from(n.gpus)).sum::<u64>() * 1000;
    let stream: Stream = args.get(4).map_or(Ok(Stream::SplitMix), |s| s.parse()).unwrap_or_else(|e| fail(&e));
    let o = order(&nodes, &tasks, capacity, 1.3, seed, stream);
    let typical = typical_workload(&tasks);
    let run =
        run_sequence_ordered(&nodes, &o.workload, &typical, &policy, &Target::Trace, seed, o.tie_order.as_deref());
    for (t, p) in o.workload.iter().zip(&run.placements) {
        match p {
            Some(n) => println!("{},{n}", t.name),
            None => println!("{},-", t.name),
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}
