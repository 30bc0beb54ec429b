//! Load benchmark of the scheduler service over gRPC on loopback.
//!
//! `cargo run --release -p sovra-scheduler --example load -- [NODES] [CLIENTS] [SUBMITS_PER_CLIENT] [--durable|--etcd]`
//! (defaults 1000 nodes, 8 clients, 500 submits each). The cluster is `sovra_placement::synth::cluster(NODES)`
//! (8 GPUs per node, 24 zones); jobs are `synth::jobs`. Every submit is answered after the scheduling cycle of its group
//! commit. With `--durable` the state is in sled (each group commit flushed before its answers); with `--etcd` in a
//! 3-member etcd cluster started on loopback (each group commit one etcd transaction); without, in memory.
//! With `--daemons` every node is a simulated node: the scheduler serves over mutual TLS with `--require-daemons`,
//! and one node daemon reporter per node (`sovra_node_daemon::report::Reporter`, the daemon's own code, with a
//! fake backend built from the node's description) registers and heartbeats every 0.8 s during the run.
//! With `--readers` two reader clients call `Get` (one job) and `Nodes` (the first page) every 10 ms, first for 2 s
//! with no submissions, then during the burst: the latencies of both are printed for each phase.
//! Prints submissions/s, placed jobs/s and submit latency percentiles.

use sovra_api::v1::cluster_client::ClusterClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{GetRequest, NodesRequest, SubmitRequest};
use sovra_domain::PolicySpec;
use sovra_node_daemon::fake::FakeBackend;
use sovra_node_daemon::report::{DaemonMetrics, Reporter};
use sovra_placement::synth;
use sovra_scheduler::service::{Options, Scheduler, serve_with};
use sovra_scheduler::store::{SledStore, Store};
use sovra_scheduler::tls::generate;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Request;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

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
    let etcd = args.iter().any(|a| a == "--etcd");
    let durable = etcd || args.iter().any(|a| a == "--durable");
    let daemons = args.iter().any(|a| a == "--daemons");
    let readers = args.iter().any(|a| a == "--readers");
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (nodes, clients, per_client) =
        (nums.first().copied().unwrap_or(1000), nums.get(1).copied().unwrap_or(8), nums.get(2).copied().unwrap_or(500));
    let cluster = synth::cluster(nodes, 1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    // `--etcd`: a real 3-member etcd cluster on loopback (Debian's etcd-server; testsupport/etcd), kept until the end.
    let etcd_cluster = etcd.then(|| sovra_etcd_testenv::EtcdCluster::start().expect("etcd starts"));
    let store = match &etcd_cluster {
        Some(c) => Some(Box::new(
            sovra_scheduler::store::EtcdStore::open(&c.endpoints(), "/sovra-load/").expect("etcd store opens"),
        ) as Box<dyn Store>),
        None => durable.then(|| Box::new(SledStore::open(dir.path()).expect("sled opens")) as Box<dyn Store>),
    };
    let tls_dir = tempfile::tempdir().expect("a temporary directory");
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let opts = Options { heartbeat: Duration::from_secs(1), require_daemons: daemons, ..Options::default() };
    let scheduler =
        Scheduler::with_options(cluster.clone(), PolicySpec::default(), 42, store, opts).expect("scheduler starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (addr, tls) = if daemons {
        let t = generate(tls_dir.path(), &[], &names).expect("certificates");
        (format!("https://127.0.0.1:{port}"), Some(t))
    } else {
        (format!("http://127.0.0.1:{port}"), None)
    };
    let server_tls = tls.as_ref().map(|t| t.server_config().expect("server TLS"));
    tokio::spawn(serve_with(listener, scheduler.clone(), "load".into(), server_tls, std::future::pending()));
    let mut reporters = Vec::new();
    if let Some(t) = &tls {
        let ca = std::fs::read(t.ca()).expect("CA");
        let t0 = Instant::now();
        for node in &cluster.nodes {
            let (c, k) = t.node(&node.name);
            let r = Reporter {
                server: addr.clone(),
                node: node.name.clone(),
                ca_pem: ca.clone(),
                cert_pem: std::fs::read(c).expect("cert"),
                key_pem: std::fs::read(k).expect("key"),
                claim_zone: None,
                claim_pool: None,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(2),
                runner: None,
                address: String::new(),
            };
            let inv = FakeBackend::of_node(node, "load test").inventory();
            let (_tx, rx) = tokio::sync::mpsc::channel(1);
            reporters.push(tokio::spawn(async move {
                let _keep = _tx;
                let _ = r.run(inv, rx, Arc::new(DaemonMetrics::default())).await;
            }));
        }
        loop {
            let text = scheduler.metrics_text().expect("metrics");
            if text.lines().any(|l| l == format!("sovra_nodes{{state=\"ready\"}} {}", names.len())) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{} node daemons registered in {:.1} s", names.len(), t0.elapsed().as_secs_f64());
    }
    let reports_before = reports(&scheduler);
    let ca_pem = tls.as_ref().map(|t| std::fs::read(t.ca()).expect("CA"));
    let jobs = synth::jobs(clients * per_client, 7);
    let stop_reading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut idle_reads = (Vec::new(), Vec::new());
    let mut read_tasks = Vec::new();
    if readers {
        let ep = Endpoint::from_shared(addr.clone()).expect("address");
        let ch = ep.connect().await.expect("connect");
        let mut req = Request::new(SubmitRequest { job_yaml: yaml(&jobs[0]), request_id: "reader".into() });
        req.metadata_mut().insert("authorization", "Bearer load".parse().expect("header"));
        let id = JobsClient::new(ch.clone()).submit(req).await.expect("a job to read").into_inner().id;
        let idle_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let idle: Vec<_> = (0..2).map(|_| tokio::spawn(read_loop(ch.clone(), id, idle_stop.clone()))).collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        idle_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in idle {
            let (g, n) = t.await.expect("reader");
            idle_reads.0.extend(g);
            idle_reads.1.extend(n);
        }
        read_tasks = (0..2).map(|_| tokio::spawn(read_loop(ch.clone(), id, stop_reading.clone()))).collect();
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let addr = addr.clone();
        let ca_pem = ca_pem.clone();
        let mine: Vec<String> = jobs[c * per_client..(c + 1) * per_client].iter().map(yaml).collect();
        handles.push(tokio::spawn(async move {
            let mut ep = Endpoint::from_shared(addr).expect("address");
            if let Some(ca) = ca_pem {
                ep = ep.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca))).expect("tls");
            }
            let mut client = JobsClient::new(ep.connect().await.expect("connect"));
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
    stop_reading.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut burst_reads = (Vec::new(), Vec::new());
    for t in read_tasks {
        let (g, n) = t.await.expect("reader");
        burst_reads.0.extend(g);
        burst_reads.1.extend(n);
    }
    let node_msgs = reports(&scheduler) - reports_before;
    lat.sort();
    let pct = |q: f64| lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1].as_secs_f64() * 1e3;
    println!(
        "{nodes} nodes ({} GPUs), {clients} clients × {per_client} submits, {}: {:.0} submissions/s, {:.0} placed jobs/s \
         ({placed} placed), submit latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        nodes * 8,
        if etcd {
            "state in etcd (3 members, loopback), committed before each answer"
        } else if durable {
            "state in sled, flushed before each answer"
        } else {
            "state in memory"
        },
        lat.len() as f64 / secs,
        placed as f64 / secs,
        pct(0.5),
        pct(0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    if readers {
        for (what, idle, burst) in
            [("Get", &mut idle_reads.0, &mut burst_reads.0), ("Nodes", &mut idle_reads.1, &mut burst_reads.1)]
        {
            idle.sort();
            burst.sort();
            println!(
                "reads {what}: without submissions {} calls, p50 {:.2} ms, p99 {:.2} ms; during the burst {} calls, \
                 p50 {:.2} ms, p99 {:.2} ms",
                idle.len(),
                pct_of(idle, 0.5),
                pct_of(idle, 0.99),
                burst.len(),
                pct_of(burst, 0.5),
                pct_of(burst, 0.99)
            );
        }
    }
    // Group commits, when the build has them (the metrics exist since the single-writer redesign).
    let text = scheduler.metrics_text().expect("metrics");
    let metric = |name: &str| -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok())
    };
    if let (Some(n), Some(reqs), Some(secs), Some(cycles), Some(cycle_secs)) = (
        metric("sovra_commits_total "),
        metric("sovra_commit_requests_sum "),
        metric("sovra_commit_seconds_sum "),
        metric("sovra_decision_seconds_count "),
        metric("sovra_decision_seconds_sum "),
    ) {
        println!(
            "group commits: {n:.0}, {:.1} requests each, {:.2} ms per store commit; {cycles:.0} cycles, {:.2} ms each",
            reqs / n.max(1.0),
            secs * 1e3 / n.max(1.0),
            cycle_secs * 1e3 / cycles.max(1.0)
        );
    }
    if daemons {
        println!(
            "meanwhile {} node daemons sent {node_msgs} reports over mTLS ({:.0}/s)",
            reporters.len(),
            node_msgs as f64 / secs
        );
    }
}

/// Messages received from node daemons so far (from the metrics).
fn reports(s: &Scheduler) -> u64 {
    let text = s.metrics_text().expect("metrics");
    text.lines().find_map(|l| l.strip_prefix("sovra_node_reports_total ")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The `q` quantile of sorted latencies, milliseconds.
fn pct_of(lat: &[Duration], q: f64) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1].as_secs_f64() * 1e3
}

/// Calls `Get(id)` and `Nodes` alternately until `stop`; returns their latencies.
async fn read_loop(
    ch: tonic::transport::Channel,
    id: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut jobs, mut cluster) = (JobsClient::new(ch.clone()), ClusterClient::new(ch));
    let (mut gets, mut nodes) = (Vec::new(), Vec::new());
    // Paced like a dashboard that polls (100 pairs of calls a second per reader), so that the readers measure
    // waiting, not their own share of the two CPUs.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let mut req = Request::new(GetRequest { id });
        req.metadata_mut().insert("authorization", "Bearer load".parse().expect("header"));
        let t0 = Instant::now();
        jobs.get(req).await.expect("get");
        gets.push(t0.elapsed());
        let mut req = Request::new(NodesRequest::default());
        req.metadata_mut().insert("authorization", "Bearer load".parse().expect("header"));
        let t0 = Instant::now();
        cluster.nodes(req).await.expect("nodes");
        nodes.push(t0.elapsed());
    }
    (gets, nodes)
}
