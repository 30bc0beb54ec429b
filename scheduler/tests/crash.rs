//! Crash tests (docs/design.md invariants 3, 4, 7): under sustained submissions from several clients, the scheduler
//! dies — `kill -9` at an arbitrary moment, or an abort inside a group commit after the batch was written to sled
//! and before it was flushed (the fault-injection hook of `scheduler/src/store/sled_backend.rs`) — is restarted on the
//! same state directory, and the tests compare: 0 acknowledged jobs lost, 0 GPUs assigned twice, 0 partial gangs.
//! Run the real `sovra-scheduler` binary (built with the `fault-injection` feature for the tests).

use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{ListRequest, SubmitRequest};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Request;

const TOKEN: &str = "crash-test-token";
const CLIENTS: usize = 4;

/// Starts `sovra-scheduler serve` on an ephemeral port; returns the child and its address.
fn start(data: &Path) -> (Child, String) {
    start_with(data, None)
}

/// Starts `sovra-scheduler serve`, optionally told to abort inside its `abort_after`-th group commit.
fn start_with(data: &Path, abort_after: Option<u64>) -> (Child, String) {
    let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sovra-scheduler"));
    if let Some(n) = abort_after {
        cmd.env("SOVRA_FAULT_ABORT_AFTER_WRITE", n.to_string());
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN, "--config"])
        .arg(&cluster)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(addr.starts_with("http://127.0.0.1:"), "{line}");
    (child, addr)
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

/// A mix of single jobs and gangs (replicas in the name), over classes that land in different zones.
fn job_yaml(client: usize, i: usize) -> (String, u32) {
    let (class, kind, replicas, gpus, milli, models) = match i % 4 {
        0 => ("eu-any", "inference", 1, 1, 250, "[L4]"),
        1 => ("eu-restricted", "training", 2, 4, 1000, "[A100-80GB]"),
        2 => ("de-c5", "training", 3, 2, 1000, "[H100-80GB]"),
        _ => ("fr-health", "inference", 1, 1, 500, "[L4]"),
    };
    (
        format!(
            "name: c{client}-j{i}-r{replicas}\nkind: {kind}\nresidency: {class}\nreplicas: {replicas}\n\
             resources: {{gpus: {gpus}, gpu_milli: {milli}, gpu_models: {models}, cpu_milli: 1000, memory_mib: 1024}}\n"
        ),
        replicas,
    )
}

/// Acknowledged submits: request id → job id.
type Acked = Arc<Mutex<BTreeMap<String, u64>>>;

/// Clients submitting until the server stops answering.
fn clients(addr: &str, acked: &Acked) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (addr, acked) = (addr.to_string(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = JobsClient::connect(addr).await else { return };
            for i in 0.. {
                let (yaml, _) = job_yaml(c, i);
                let request_id = format!("c{c}-{i}");
                match client.submit(authed(SubmitRequest { job_yaml: yaml, request_id: request_id.clone() })).await {
                    Ok(r) => {
                        acked.lock().unwrap().insert(request_id, r.into_inner().id);
                    }
                    // Refusals are answers too, but carry no id; a dead server ends the client.
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
                    Err(_) => return,
                }
            }
        }));
    }
    tasks
}

/// Restarts on `data` and checks: 0 acknowledged jobs lost, 0 GPUs over-committed, 0 partial gangs, and a retried
/// submit answered with its first id.
async fn check_after_restart(data: &Path, acked: &BTreeMap<String, u64>, what: &str) {
    let (mut child, addr) = start(data);
    let mut client = JobsClient::connect(addr).await.unwrap();
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = ListRequest { page_size: 10_000, page_token, ..Default::default() };
        let page = client.list(authed(req)).await.unwrap().into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let by_id: BTreeMap<u64, _> = jobs.iter().map(|j| (j.id, j)).collect();
    // 0 acknowledged jobs lost.
    let lost: Vec<&u64> = acked.values().filter(|id| !by_id.contains_key(id)).collect();
    assert!(lost.is_empty(), "{what}: {} acknowledged jobs lost: {lost:?}", lost.len());
    // 0 GPUs assigned twice (sum of milli per device ≤ 1000), 0 partial gangs.
    let mut per_device: BTreeMap<(String, u32), u32> = BTreeMap::new();
    let mut holding = 0;
    for j in &jobs {
        if j.replicas.is_empty() {
            continue;
        }
        holding += 1;
        let wanted: usize = j.name.rsplit("-r").next().unwrap().parse().unwrap();
        assert_eq!(j.replicas.len(), wanted, "{what}: job {} holds a partial gang", j.name);
        for r in &j.replicas {
            for d in &r.devices {
                *per_device.entry((r.node.clone(), *d)).or_default() += r.milli_per_device;
            }
        }
    }
    let over: Vec<_> = per_device.iter().filter(|(_, m)| **m > 1000).collect();
    assert!(over.is_empty(), "{what}: GPUs assigned twice: {over:?}");
    assert!(holding > 0, "{what}: some jobs hold GPUs after the restart");
    eprintln!(
        "crash test ({what}): {} submits acknowledged; after restart {} jobs, {} holding GPUs on {} devices; \
         0 lost, 0 GPUs over-committed, 0 partial gangs",
        acked.len(),
        jobs.len(),
        holding,
        per_device.len()
    );
    // And it keeps working: a retried submit is answered with the same id.
    let (some_req, some_id) = acked.iter().next().unwrap();
    let c: usize = some_req[1..].split('-').next().unwrap().parse().unwrap();
    let i: usize = some_req.rsplit('-').next().unwrap().parse().unwrap();
    let again = client
        .submit(authed(SubmitRequest { job_yaml: job_yaml(c, i).0, request_id: some_req.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, *some_id);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path());
    let acked: Acked = Arc::default();
    let tasks = clients(&addr, &acked);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20, "the clients got answers before the kill: {}", acked.len());
    check_after_restart(dir.path(), &acked, "kill -9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_between_a_batchs_write_and_its_flush_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // The 60th group commit aborts after sled took the batch and before the flush: the batch's requests were not
    // answered, so whether they survive is sled's business; every earlier one was answered and must.
    let (mut child, addr) = start_with(dir.path(), Some(60));
    let acked: Acked = Arc::default();
    let tasks = clients(&addr, &acked);
    let mut status = None;
    for _ in 0..600 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(status) = status else {
        child.kill().unwrap();
        panic!("the scheduler did not abort at its 60th commit: is the fault-injection feature on for tests?");
    };
    assert!(!status.success(), "the scheduler aborted: {status:?}");
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20, "the clients got answers before the abort: {}", acked.len());
    check_after_restart(dir.path(), &acked, "abort between write and flush").await;
}
