//! One fill run of the FGD paper's protocol on the Alibaba `default` trace (1,213 nodes, ~10.8k tasks after
//! inflation to 1.3 × capacity, ordered by Go's `math/rand` as the paper's simulator), one thread, per policy; and
//! the parsing of the node and task CSVs a whole run starts with (target: under 10 ms).

use criterion::{Criterion, criterion_group, criterion_main};
use sovra_domain::PolicySpec;
use sovra_simulator::fill::{Target, run_fill};
use sovra_simulator::trace::{load_nodes, load_tasks};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

fn fill(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/alibaba-gpu-v2023");
    let nodes = load_nodes(&dir.join("openb_node_list_gpu_node.csv")).unwrap();
    let tasks = load_tasks(&dir.join("openb_pod_list_default.csv")).unwrap();
    let mut g = c.benchmark_group("fill-default");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    for (name, policy, target) in [
        ("best-fit", "best-fit", Target::Trace),
        ("fgd", "fgd", Target::Trace),
        ("sovra", "fgd,adaptive-first-fit", Target::Learned),
    ] {
        let p: PolicySpec = policy.parse().unwrap();
        g.bench_function(name, |b| b.iter(|| black_box(run_fill(&nodes, &tasks, &p, &target, 42, 1.3).failed)));
    }
    g.finish();
    let mut g = c.benchmark_group("parse");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.bench_function("default-tasks-and-nodes", |b| {
        b.iter(|| {
            let n = load_nodes(&dir.join("openb_node_list_gpu_node.csv")).unwrap().len();
            black_box(n + load_tasks(&dir.join("openb_pod_list_default.csv")).unwrap().len())
        })
    });
    g.finish();
}

criterion_group!(benches, fill);
criterion_main!(benches);
