//! `sovra console bench`: how long each page takes to render from an in-memory snapshot of a large estate (10,000
//! nodes and 100,000 jobs by default), without the network, so that it measures the console (BENCHMARKS.md).

use super::pages::{self, Query};
use super::snapshot::Snapshot;
use crate::Failure;
use sovra_api::v1::{ClassInfo, JobInfo, NodeInfo, PoolInfo, QueueInfo, Replica, ZoneInfo};
use std::time::Instant;

/// `sovra console bench` options.
#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Nodes in the synthetic estate.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Jobs in the synthetic estate.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Renders of each page (the median is reported).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    runs: u32,
}

/// A synthetic estate: 4 zones (one US-owned), 8 pools, `nodes` nodes of 8 GPUs (one in 50 with an XID), `jobs`
/// jobs in 4 queues (a third pending with an explanation and a quota blocker, the rest placed).
pub(crate) fn estate(nodes: usize, jobs: usize) -> Snapshot {
    let zones: Vec<ZoneInfo> = ["fr-par", "de-fra", "de-fra-us", "nl-ams"]
        .iter()
        .map(|z| ZoneInfo {
            id: z.to_string(),
            country: z[..2].to_uppercase(),
            jurisdiction: "EU".into(),
            operator: format!("{z} operator"),
            operator_hq: if z.ends_with("-us") { "US".into() } else { z[..2].to_uppercase() },
            certifications: vec!["ISO27001".into()],
        })
        .collect();
    let pools: Vec<PoolInfo> = (0..8)
        .map(|i| PoolInfo {
            id: format!("pool-{i}"),
            zone: zones[i % 4].id.clone(),
            purpose: if i < 4 { "training".into() } else { "inference".into() },
            nodes: (nodes / 8) as u32,
            capacity_milli: (nodes / 8) as u64 * 8000,
            used_milli: (nodes / 16) as u64 * 8000,
        })
        .collect();
    let nodes: Vec<NodeInfo> = (0..nodes)
        .map(|i| NodeInfo {
            name: format!("node-{i:05}"),
            pool: pools[i % 8].id.clone(),
            zone: pools[i % 8].zone.clone(),
            ready: i % 97 != 0,
            gpus: 8,
            healthy_gpus: if i % 50 == 0 { 7 } else { 8 },
            used_milli: 4000,
            backend: "nvml".into(),
            connected: true,
            unhealthy: if i % 50 == 0 { vec!["3: XID 79 (GPU has fallen off the bus)".into()] } else { vec![] },
            ..NodeInfo::default()
        })
        .collect();
    let explanation = serde_json::json!({"job": "j", "summary": "no node has 8 free GPUs", "failed_replica": 0,
        "replicas_placed_before_failure": 0, "total_nodes": nodes.len(), "filters": []})
    .to_string();
    let jobs: Vec<JobInfo> = (0..jobs)
        .map(|i| {
            let pending = i % 3 == 0;
            let n = &nodes[i % nodes.len().max(1)];
            JobInfo {
                id: i as u64 + 1,
                name: format!("job-{i}"),
                queue: format!("q{}", i % 4),
                residency: "eu".into(),
                state: if pending { "pending".into() } else { "running".into() },
                replicas: if pending {
                    vec![]
                } else {
                    vec![Replica {
                        node: n.name.clone(),
                        pool: n.pool.clone(),
                        zone: n.zone.clone(),
                        devices: vec![0, 1],
                        milli_per_device: 1000,
                    }]
                },
                explanation_json: if pending { explanation.clone() } else { String::new() },
                explanation_summary: if pending {
                    "waits: no node in a permitted pool has 8 free GPUs".into()
                } else {
                    String::new()
                },
                ..JobInfo::default()
            }
        })
        .collect();
    Snapshot {
        taken_at: "bench".into(),
        classes: vec![ClassInfo {
            name: "eu".into(),
            rules_json: "{}".into(),
            zones: zones.iter().map(|z| z.id.clone()).collect(),
        }],
        queues: (0..4).map(|i| QueueInfo { name: format!("q{i}"), weight: 1, ..QueueInfo::default() }).collect(),
        zones,
        pools,
        nodes,
        jobs,
        ..Snapshot::default()
    }
}

/// A page renderer.
type Page = fn(&Snapshot, &Query) -> String;

/// Runs the bench: prints each page's median and worst render time.
pub fn run(a: BenchArgs) -> Result<u8, Failure> {
    let built = Instant::now();
    let snap = estate(a.nodes, a.jobs);
    println!(
        "estate: {} nodes, {} jobs (built in {:.0} ms)",
        snap.nodes.len(),
        snap.jobs.len(),
        built.elapsed().as_secs_f64() * 1e3
    );
    let q = |pairs: &[(&str, &str)]| Query(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    let last = (a.jobs.div_ceil(pages::PAGE)).to_string();
    let cases: Vec<(&str, Page, Query)> = vec![
        ("/zones", pages::zones, q(&[])),
        ("/nodes", pages::nodes, q(&[])),
        ("/nodes?health=unhealthy", pages::nodes, q(&[("health", "unhealthy")])),
        ("/jobs", pages::jobs, q(&[])),
        ("/jobs?state=pending&page=LAST", pages::jobs, q(&[("state", "pending"), ("page", &last)])),
        ("/models", super::pages_models::models, q(&[])),
        ("/audit", super::pages_models::audit, q(&[])),
    ];
    let mut worst_median = 0.0f64;
    for (name, page, query) in &cases {
        let mut times: Vec<f64> = (0..a.runs)
            .map(|_| {
                let t = Instant::now();
                let html = page(&snap, query);
                std::hint::black_box(html.len());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        worst_median = worst_median.max(median);
        println!("{name:<32} median {median:7.2} ms   max {:7.2} ms   ({} runs)", times[times.len() - 1], a.runs);
    }
    println!("slowest page median: {worst_median:.2} ms (goal < 200 ms)");
    Ok(if worst_median < 200.0 { 0 } else { 1 })
}
