//! One fill run of the FGD paper's protocol on the Alibaba `default` trace (1,213 nodes, ~10.8k tasks after
//! inflation to 1.3 × capacity), one thread, per policy. The target: FGD in ≤ 0.25 s.

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
        ("sovra", "fgd,first-fit", Target::Learned),
    ] {
        let p: PolicySpec = policy.parse().unwrap();
        g.bench_function(name, |b| b.iter(|| black_box(run_fill(&nodes, &tasks, &p, &target, 42, 1.3).failed)));
    }
    g.finish();
}

criterion_group!(benches, fill);
criterion_main!(benches);
