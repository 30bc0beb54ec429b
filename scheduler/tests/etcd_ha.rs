//! High availability on etcd (docs/etcd.md), with the real `sovra-scheduler` binary over a real 3-member etcd
//! cluster on loopback: bad etcd flags are refused at start naming the flag; a paused leader is fenced (its write
//! refused by etcd, shown in its log) and steps down while a standby takes over with every acknowledged job; and
//! the store survives the loss of one etcd member, refuses writes without a quorum and serves again after.

use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{ListRequest, SubmitRequest};
use sovra_etcd_testenv::EtcdCluster;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Request;

const TOKEN: &str = "etcd-ha-token";

/// A replica: its process and everything it printed (stdout and stderr).
struct Replica {
    child: Child,
    log: Arc<Mutex<String>>,
}

fn pipe(r: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut l = log.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
}

fn serve(extra: &[&str]) -> Command {
    let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sovra-scheduler"));
    cmd.env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN, "--config"])
        .arg(cluster)
        .args(extra);
    cmd
}

impl Replica {
    fn start(endpoints: &[String], ttl_ms: u64) -> Replica {
        let eps = endpoints.join(",");
        let ttl = ttl_ms.to_string();
        let mut child = serve(&["--store", "etcd", "--etcd-endpoints", &eps, "--lease-ttl-ms", &ttl])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        pipe(child.stdout.take().unwrap(), log.clone());
        pipe(child.stderr.take().unwrap(), log.clone());
        Replica { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `what`.
    fn wait_for(&self, what: &str, within: Duration) {
        let start = Instant::now();
        while !self.log().contains(what) {
            assert!(start.elapsed() < within, "no {what:?} within {within:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address it serves on, once it leads.
    fn addr(&self) -> String {
        self.wait_for("listening on ", Duration::from_secs(30));
        let log = self.log();
        let line = log.lines().find(|l| l.contains("listening on ")).unwrap();
        line.rsplit(' ').next().unwrap().to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

fn job(name: &str) -> String {
    format!(
        "name: {name}\nkind: inference\nresidency: eu-any\nresources: {{gpus: 1, gpu_milli: 250, gpu_models: [L4], \
         cpu_milli: 1000, memory_mib: 1024}}\n"
    )
}

async fn submit(addr: &str, name: &str) -> Result<u64, tonic::Status> {
    let mut c = JobsClient::connect(addr.to_string()).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let r = c.submit(authed(SubmitRequest { job_yaml: job(name), request_id: name.into() })).await?;
    Ok(r.into_inner().id)
}

async fn names(addr: &str) -> Vec<String> {
    let mut c = JobsClient::connect(addr.to_string()).await.unwrap();
    let req = ListRequest { page_size: 10_000, ..Default::default() };
    c.list(authed(req)).await.unwrap().into_inner().jobs.into_iter().map(|j| j.name).collect()
}

#[test]
fn bad_etcd_flags_are_refused_at_start_naming_the_flag() {
    // Nothing listens on port 1: etcd is unreachable. The replica must exit (not stand by forever) with the flag.
    let start = Instant::now();
    let out = serve(&["--store", "etcd", "--etcd-endpoints", "http://127.0.0.1:1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--etcd-endpoints http://127.0.0.1:1") && err.contains("unreachable"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "never a half-started replica");
    assert!(start.elapsed() < Duration::from_secs(20), "refused within the request timeout: {:?}", start.elapsed());

    for (args, needle) in [
        (vec!["--store", "etcd", "--etcd-endpoints", "not a url"], "--etcd-endpoints not a url"),
        (vec!["--store", "etcd"], "--etcd-endpoints: give one or more"),
        (vec!["--etcd-endpoints", "http://127.0.0.1:2379"], "--etcd-endpoints needs --store etcd"),
        (vec!["--store", "etcd", "--etcd-endpoints", "http://127.0.0.1:2379", "--data", "/tmp/x"], "drop --data"),
        (vec!["--store", "etcd", "--etcd-endpoints", "http://127.0.0.1:1", "--etcd-prefix", "x"], "--etcd-prefix x"),
    ] {
        let out = serve(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_and_steps_down_while_a_standby_takes_over() {
    let etcd = EtcdCluster::start().unwrap();
    let eps = etcd.endpoints();
    let a = Replica::start(&eps, 2000);
    let a_addr = a.addr();
    a.wait_for("won the leadership", Duration::from_secs(5));
    let b = Replica::start(&eps, 2000);
    b.wait_for("standby:", Duration::from_secs(30));
    assert!(!b.log().contains("listening on"), "a standby does not serve:\n{}", b.log());

    let first = submit(&a_addr, "before-pause").await.unwrap();

    // Pause the leader past its lease: the standby wins and serves with the acknowledged job.
    a.signal("-STOP");
    let paused = Instant::now();
    b.wait_for("won the leadership", Duration::from_secs(15));
    let b_addr = b.addr();
    eprintln!("fencing: standby took over {:?} after the leader was paused", paused.elapsed());
    assert!(names(&b_addr).await.contains(&"before-pause".to_string()));
    let second = submit(&b_addr, "on-new-leader").await.unwrap();
    assert!(second > first, "ids continue after the acknowledged ones: {first} then {second}");

    // Resume the old leader with a submit waiting on it: it is not acknowledged, the write is refused by etcd, and
    // the old leader steps down (exit code 3).
    let late = tokio::spawn({
        let a_addr = a_addr.clone();
        async move { submit(&a_addr, "to-old-leader").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.signal("-CONT");
    let late = tokio::time::timeout(Duration::from_secs(20), late).await.unwrap().unwrap();
    assert!(late.is_err(), "a deposed leader acknowledged a submit: {late:?}");
    let mut a = a;
    let status = wait_exit(&mut a.child, Duration::from_secs(20));
    let log = a.log();
    assert_eq!(status, Some(3), "the old leader steps down:\n{log}");
    assert!(log.contains("write refused"), "the refused write is in the old leader's log:\n{log}");
    eprintln!(
        "fencing: the old leader's log:\n{}",
        log.lines().filter(|l| l.contains("refused") || l.contains("stepping down")).collect::<Vec<_>>().join("\n")
    );

    let now = names(&b_addr).await;
    assert!(!now.contains(&"to-old-leader".to_string()), "the deposed leader's write reached the store: {now:?}");
    assert!(now.contains(&"on-new-leader".to_string()));
    assert!(b.log().contains("won the leadership"));
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sovra-scheduler")).args(args).output().unwrap()
}

/// Every key under `/sovra/` but the leadership key, at `revision` (0: the latest).
async fn keys_at(endpoint: &str, revision: i64) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let mut c = etcd_client::Client::connect([endpoint], None).await.unwrap();
    let opts = etcd_client::GetOptions::new().with_prefix().with_revision(revision);
    let r = c.get("/sovra/", Some(opts)).await.unwrap();
    r.kvs()
        .iter()
        .filter(|kv| kv.key() != b"/sovra/leader")
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_exactly_the_state_at_its_revision() {
    let etcd = EtcdCluster::start().unwrap();
    let leader = Replica::start(&etcd.endpoints(), 3000);
    let addr = leader.addr();
    // 4 clients submitting continuously; each acknowledgement is recorded.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (addr, acked, stop) = (addr.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = JobsClient::connect(addr).await.unwrap();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("c{c}-{i}");
                let req = SubmitRequest { job_yaml: job(&name), request_id: name.clone() };
                if client.submit(authed(req)).await.is_ok() {
                    acked.lock().unwrap().push(name);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before: Vec<String> = acked.lock().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sovra.backup");
    let f = file.to_str().unwrap();
    let eps = etcd.endpoints().join(",");
    let out = cli(&["backup", "--etcd-endpoints", &eps, "--out", f]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after: Vec<String> = acked.lock().unwrap().clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(before.len() >= 20, "the clients were submitting: {}", before.len());
    let header: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&file).unwrap().lines().next().unwrap()).unwrap();
    let revision = header["revision"].as_i64().unwrap();

    // Restore into a fresh cluster: its keys are exactly the source's at the backup's revision.
    let fresh = EtcdCluster::start().unwrap();
    let feps = fresh.endpoints().join(",");
    let out = cli(&["restore", "--etcd-endpoints", &feps, "--from", f]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let source = keys_at(&etcd.endpoint(0), revision).await;
    let restored = keys_at(&fresh.endpoint(1), 0).await;
    assert_eq!(source.len(), restored.len());
    assert!(source == restored, "the restored store is the source at revision {revision}");
    assert!(keys_at(&etcd.endpoint(0), 0).await.len() > source.len(), "the source moved on after the backup");

    // A non-empty store is refused without --force; a damaged backup is refused even with it.
    let out = cli(&["restore", "--etcd-endpoints", &feps, "--from", f]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"), "{}", String::from_utf8_lossy(&out.stderr));
    let mut text = std::fs::read_to_string(&file).unwrap().into_bytes();
    let last = text.len() - 2;
    text[last] = if text[last] == b'0' { b'1' } else { b'0' };
    let bad = dir.path().join("damaged.backup");
    std::fs::write(&bad, text).unwrap();
    let out = cli(&["restore", "--etcd-endpoints", &feps, "--from", bad.to_str().unwrap(), "--force"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fails its checksum"));
    assert!(keys_at(&fresh.endpoint(2), 0).await == restored, "a refused restore writes nothing");

    // A scheduler on the restored store serves every job acknowledged before the backup, and nothing that was
    // not submitted; no GPU is booked twice.
    drop(leader);
    let r = Replica::start(&fresh.endpoints(), 3000);
    let t = Instant::now();
    r.wait_for("listening on ", Duration::from_secs(120));
    eprintln!("restored replica serves after {:?} ({} acknowledged)", t.elapsed(), after.len());
    let raddr = r.addr();
    let mut c = JobsClient::connect(raddr).await.unwrap();
    let jobs = c.list(authed(ListRequest { page_size: 10_000, ..Default::default() })).await.unwrap().into_inner().jobs;
    let names: std::collections::BTreeSet<String> = jobs.iter().map(|j| j.name.clone()).collect();
    let lost: Vec<&String> = before.iter().filter(|n| !names.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged before the backup but not restored: {lost:?}");
    assert!(names.len() <= after.len() + 4, "at most the in-flight submits beyond the acknowledged ones");
    let mut per_device = std::collections::BTreeMap::new();
    for j in &jobs {
        for rep in &j.replicas {
            for d in &rep.devices {
                *per_device.entry((rep.node.clone(), *d)).or_insert(0) += rep.milli_per_device;
            }
        }
    }
    assert!(per_device.values().all(|m| *m <= 1000), "GPUs booked twice: {per_device:?}");
    eprintln!(
        "backup under load: {} acknowledged before, {} after; backup at revision {revision} with {} keys; restored \
         {} jobs, identical keys",
        before.len(),
        after.len(),
        source.len(),
        jobs.len()
    );
}
