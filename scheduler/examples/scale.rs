//! Scale benchmark of the scheduler service with many simulated nodes, in-process.
//!
//! `cargo run --release -p sovra-scheduler --example scale -- [NODES] [--durable]` (default 100,000 nodes of
//! `sovra_placement::synth::cluster`, 8 GPUs each). The scheduler runs with `--require-daemons` semantics (every
//! node NotReady until it registers) and a 2 s heartbeat. Each simulated node registers through
//! `Scheduler::register_node` — the path the gRPC `Nodes` API takes after the mutual-TLS check — with the
//! inventory the daemon's fake backend reports for it (`sovra_node_daemon::fake`), from 512 concurrent tasks; the
//! TLS handshakes and HTTP/2 streams of real daemons are not part of this figure (the `load` example measures
//! them, with real daemons' reporters over mTLS). Prints:
//! - the time until every node is registered and ready;
//! - heartbeats sustained: every node beating through `Scheduler::node_heartbeat` for 10 s, as fast as 2 tasks
//!   can, and whether any node fell NotReady meanwhile (the deadline is 3 s);
//! - the process's resident memory before the scheduler was built and after registration.

use sovra_api::v1::Register;
use sovra_domain::PolicySpec;
use sovra_node_daemon::fake::FakeBackend;
use sovra_node_daemon::report::to_proto;
use sovra_placement::synth;
use sovra_scheduler::service::{Options, Scheduler};
use sovra_scheduler::store::{SledStore, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Resident memory of this process, MiB (Linux).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ready_nodes(s: &Scheduler) -> u64 {
    let text = s.metrics_text().expect("metrics");
    text.lines().find_map(|l| l.strip_prefix("sovra_nodes{state=\"ready\"} ")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let durable = args.iter().any(|a| a == "--durable");
    let nodes: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let cluster = synth::cluster(nodes, 1);
    let registers: Vec<Register> = cluster
        .nodes
        .iter()
        .map(|n| Register {
            node: n.name.clone(),
            inventory: Some(to_proto(&FakeBackend::of_node(n, "scale").inventory())),
            ..Default::default()
        })
        .collect();
    let rss_before = rss_mib();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = durable.then(|| Box::new(SledStore::open(dir.path()).expect("sled opens")) as Box<dyn Store>);
    let opts = Options { heartbeat: Duration::from_secs(2), require_daemons: true, ..Options::default() };
    let t0 = Instant::now();
    let s = Scheduler::with_options(cluster, PolicySpec::default(), 42, store, opts).expect("scheduler starts");
    println!("scheduler over {nodes} nodes built in {:.2} s", t0.elapsed().as_secs_f64());

    // Registered nodes heartbeat from then on (every node at least once a second, from one thread), as daemons do.
    let t0 = Instant::now();
    let registers = Arc::new(registers);
    let next = Arc::new(AtomicU64::new(0));
    let beating: Arc<std::sync::Mutex<Vec<(String, u64)>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beater = {
        let (s, beating, done) = (s.clone(), beating.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let pass = Instant::now();
                let list = beating.lock().map(|l| l.clone()).unwrap_or_default();
                for (node, session) in &list {
                    s.node_heartbeat(node, *session).expect("heartbeat");
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(pass.elapsed()));
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..512 {
        let (s, registers, next, beating) = (s.clone(), registers.clone(), next.clone(), beating.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(reg) = registers.get(i) else { return };
                let (session, _) = s.register_node(&reg.node.clone(), reg.clone()).await.expect("registers");
                beating.lock().expect("list").push((reg.node.clone(), session));
            }
        }));
    }
    for t in tasks {
        t.await.expect("register task");
    }
    let registered = t0.elapsed().as_secs_f64();
    while ready_nodes(&s) < nodes as u64 && t0.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_ready = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    beater.join().expect("heartbeat thread");
    let ready = ready_nodes(&s);
    assert_eq!(ready, nodes as u64, "every node is ready after registering");
    let mut sessions = beating.lock().expect("list").clone();
    sessions.sort();
    println!(
        "{nodes} nodes registered in {registered:.2} s ({:.0} registrations/s), all ready after {all_ready:.2} s, {}",
        nodes as f64 / registered,
        if durable { "inventories in sled" } else { "state in memory" }
    );
    let rss_after = rss_mib();
    println!(
        "resident memory: {rss_before:.0} MiB before the scheduler, {rss_after:.0} MiB with {nodes} nodes registered"
    );

    // Heartbeats: two tasks beat every node round-robin for 10 s, as fast as they can.
    let sessions = Arc::new(sessions);
    let beats = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for k in 0..2 {
        let (s, sessions, beats) = (s.clone(), sessions.clone(), beats.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut i = k;
            while Instant::now() < until {
                let (node, session) = &sessions[i % sessions.len()];
                s.node_heartbeat(node, *session).expect("heartbeat");
                beats.fetch_add(1, Ordering::Relaxed);
                i += 2;
            }
        }));
    }
    for t in tasks {
        t.await.expect("heartbeat task");
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = beats.load(Ordering::Relaxed);
    let needed = nodes as f64 / 2.0;
    println!(
        "heartbeats: {n} in {secs:.1} s = {:.0}/s sustained ({:.1}× the {needed:.0}/s that {nodes} nodes at a 2 s interval \
         send); nodes ready at the end: {}",
        n as f64 / secs,
        n as f64 / secs / needed,
        ready_nodes(&s)
    );
}
