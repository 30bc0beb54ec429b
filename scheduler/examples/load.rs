//! Load benchmark of the scheduler service over gRPC on loopback.
//!
//! `cargo run --release -p sovra-scheduler --example load -- [NODES] [CLIENTS] [SUBMITS_PER_CLIENT] [--durable]`
//! (defaults 1000 nodes, 8 clients, 500 submits each). The cluster is `sovra_placement::synth::cluster(NODES)`
//! (8 GPUs per node, 24 zones); jobs are `synth::jobs`. Every submit runs a scheduling cycle before it is answered.
//! With `--durable` the state is in sled (flushed before every answer); without, in memory.
//! Prints submissions/s, placed jobs/s and submit latency percentiles.

use sovra_api::v1::SubmitRequest;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_domain::PolicySpec;
use sovra_placement::synth;
use sovra_scheduler::service::{Scheduler, serve};
use sovra_scheduler::store::Store;
use std::time::{Duration, Instant};
use tonic::Request;

fn yaml(j: &sovra_domain::Job) -> String {
    let r = &j.resources;
    let models =
        if r.gpu_models.is_empty() { String::new() } else { format!(", gpu_models: [{}]", r.gpu_models.join(", ")) };
    let milli = if r.gpus == 0 { String::new() } else { format!(", gpu_milli: {}", r.gpu_milli) };
    // The synthetic jobs' queue `bench` is not declared in the cluster: they go to `default`.
    format!(
        "name: {}\nkind: {}\nresidency: {}\nresources: {{gpus: {}{milli}{models}, cpu_milli: {}, memory_mib: {}}}\n",
        j.name, j.kind, j.residency, r.gpus, r.cpu_milli, r.memory_mib
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let durable = args.iter().any(|a| a == "--durable");
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (nodes, clients, per_client) =
        (nums.first().copied().unwrap_or(1000), nums.get(1).copied().unwrap_or(8), nums.get(2).copied().unwrap_or(500));
    let cluster = synth::cluster(nodes, 1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = durable.then(|| Store::open(dir.path()).expect("sled opens"));
    let scheduler = Scheduler::new(cluster.clone(), PolicySpec::default(), 42, store).expect("scheduler starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(serve(listener, scheduler, "load".into(), std::future::pending()));
    let jobs = synth::jobs(clients * per_client, 7);
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let addr = addr.clone();
        let mine: Vec<String> = jobs[c * per_client..(c + 1) * per_client].iter().map(yaml).collect();
        handles.push(tokio::spawn(async move {
            let mut client = JobsClient::connect(addr).await.expect("connect");
            let mut lat = Vec::with_capacity(mine.len());
            let mut placed = 0usize;
            let mut errors = 0usize;
            let mut first_error = None;
            for (i, y) in mine.into_iter().enumerate() {
                let mut req = Request::new(SubmitRequest { job_yaml: y, request_id: format!("{c}-{i}") });
                req.metadata_mut().insert("authorization", "Bearer load".parse().expect("header"));
                let t0 = Instant::now();
                let r = client.submit(req).await;
                lat.push(t0.elapsed());
                match r {
                    Ok(r) if r.get_ref().state == "placed" => placed += 1,
                    Ok(_) => {}
                    // Refusals (no permitted pool could ever hold it) are answers, not failures.
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
                    Err(s) => {
                        errors += 1;
                        first_error.get_or_insert(s.message().to_string());
                    }
                }
            }
            (lat, placed, errors, first_error)
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    let mut placed = 0;
    for h in handles {
        let (l, p, errors, first) = h.await.expect("client task");
        assert_eq!(errors, 0, "submits failed: {first:?}");
        lat.extend(l);
        placed += p;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |q: f64| lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1].as_secs_f64() * 1e3;
    println!(
        "{nodes} nodes ({} GPUs), {clients} clients × {per_client} submits, {}: {:.0} submissions/s, {:.0} placed jobs/s \
         ({placed} placed), submit latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        nodes * 8,
        if durable { "state in sled, flushed per submit" } else { "state in memory" },
        lat.len() as f64 / secs,
        placed as f64 / secs,
        pct(0.5),
        pct(0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
}
