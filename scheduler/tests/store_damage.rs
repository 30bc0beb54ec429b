//! Issue #11: a damaged scheduler data directory must not lose jobs silently. Each test damages a directory that
//! holds acknowledged jobs — truncates sled's data file, overwrites 64 bytes in its middle, deletes it (the last and
//! only segment file), rolls sled back under a newer manifest, corrupts one record, deletes the manifest — and then
//! `serve` must refuse to start (exit 1, saying what was lost and the ways out), or start with every acknowledged
//! job; `serve --recover` must start and list exactly the jobs that are gone, and never give their ids again.

use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{ListRequest, SubmitRequest};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::Scheduler;
use sovra_scheduler::store::{MANIFEST_FILE, SledStore, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::Request;

const TOKEN: &str = "damage-test-token";

fn cluster_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml")
}

fn job(i: usize) -> String {
    format!(
        "name: j{i}\nkind: inference\nresidency: eu-any\nresources: {{gpus: 1, gpu_milli: 250, gpu_models: [L4], \
         cpu_milli: 1000, memory_mib: 1024}}\n"
    )
}

enum Started {
    /// Serving: the child, its address, what it printed before `listening on`.
    Running(Child, String, Vec<String>),
    /// It exited: its code and stderr.
    Exited(Option<i32>, String),
}

/// Runs `sovra-scheduler serve --data DIR [--recover]` until it listens or exits.
fn serve(data: &Path, recover: bool) -> Started {
    let log = data.with_extension("stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sovra-scheduler"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN, "--config"]).arg(cluster_file());
    cmd.arg("--data").arg(data);
    if recover {
        cmd.arg("--recover");
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let mut before = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        if let Some(addr) = line.strip_prefix("sovra-scheduler listening on ") {
            // Keep reading, so that the server's later lines do not meet a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Started::Running(child, addr.to_string(), before);
        }
        before.push(line);
    }
    let status = child.wait().unwrap();
    Started::Exited(status.code(), std::fs::read_to_string(&log).unwrap_or_default())
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

/// Submits jobs `range` (request id `r<i>`); returns request id → job id.
async fn submit(addr: &str, range: std::ops::Range<usize>) -> BTreeMap<String, u64> {
    let mut client = JobsClient::connect(addr.to_string()).await.unwrap();
    let mut acked = BTreeMap::new();
    for i in range {
        let r = client.submit(authed(SubmitRequest { job_yaml: job(i), request_id: format!("r{i}") })).await.unwrap();
        acked.insert(format!("r{i}"), r.into_inner().id);
    }
    acked
}

async fn listed(addr: &str) -> BTreeSet<u64> {
    let mut client = JobsClient::connect(addr.to_string()).await.unwrap();
    client.list(authed(ListRequest::default())).await.unwrap().into_inner().jobs.iter().map(|j| j.id).collect()
}

/// A state directory with four acknowledged jobs, the scheduler killed with SIGKILL.
async fn four_jobs(data: &Path) -> BTreeMap<String, u64> {
    let Started::Running(mut child, addr, _) = serve(data, false) else { panic!("a fresh directory serves") };
    let acked = submit(&addr, 0..4).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.values().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    acked
}

/// After damage: `serve` refuses or keeps every acknowledged job; `--recover` lists exactly what is gone, gives no
/// id twice, keeps request ids of what survived, and leaves a directory `serve` accepts.
async fn judge(data: &Path, acked: &BTreeMap<String, u64>, what: &str) {
    let ids: BTreeSet<u64> = acked.values().copied().collect();
    match serve(data, false) {
        Started::Exited(code, stderr) => {
            assert_eq!(code, Some(1), "{what}: {stderr}");
            assert!(stderr.contains("damaged"), "{what}: {stderr}");
            assert!(stderr.contains("backup") || stderr.contains("--recover"), "{what}: no way out in {stderr}");
            eprintln!("{what}: serve refused: {}", stderr.trim());
        }
        Started::Running(mut child, addr, _) => {
            let got = listed(&addr).await;
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(ids.is_subset(&got), "{what}: a silent start without jobs {:?}", ids.difference(&got));
            eprintln!("{what}: nothing was lost; serve started with all {} jobs", ids.len());
            return;
        }
    }
    let (mut child, addr, printed) = match serve(data, true) {
        Started::Running(c, a, p) => (c, a, p),
        Started::Exited(code, stderr) => {
            // sled itself cannot open the directory: --recover refuses too, and says so.
            assert_eq!(code, Some(1), "{what}: {stderr}");
            assert!(stderr.contains("restore the directory from a backup"), "{what}: {stderr}");
            return;
        }
    };
    let lost: BTreeSet<u64> =
        printed.iter().filter_map(|l| l.strip_prefix("recover: job ")?.strip_suffix(" lost")?.parse().ok()).collect();
    let got = listed(&addr).await;
    let gone: BTreeSet<u64> = ids.difference(&got).copied().collect();
    assert_eq!(lost, gone, "{what}: --recover must list exactly the jobs that are gone; printed {printed:?}");
    eprintln!("{what}: --recover started; lost {lost:?}; printed {printed:?}");
    // Ids are never given twice; surviving request ids still answer their job.
    let new = submit(&addr, 10..11).await["r10"];
    assert!(new > 4, "{what}: id {new} given again after a recovery");
    if let Some((r, &id)) = acked.iter().find(|(_, id)| got.contains(id)) {
        let i: usize = r[1..].parse().unwrap();
        let mut client = JobsClient::connect(addr.clone()).await.unwrap();
        let again = client.submit(authed(SubmitRequest { job_yaml: job(i), request_id: r.clone() })).await.unwrap();
        assert_eq!(again.into_inner().id, id, "{what}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The recovered directory is whole again: a plain serve accepts it.
    let Started::Running(mut child, addr, _) = serve(data, false) else { panic!("{what}: refused after --recover") };
    assert!(listed(&addr).await.contains(&new), "{what}");
    child.kill().unwrap();
    child.wait().unwrap();
}

fn sled_file(data: &Path) -> std::path::PathBuf {
    let db = data.join("db");
    assert!(
        db.is_file(),
        "sled keeps its log in {}: {:?}",
        db.display(),
        std::fs::read_dir(data).unwrap().collect::<Vec<_>>()
    );
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_sled_file_is_refused_not_started_without_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let acked = four_jobs(&data).await;
    let db = sled_file(&data);
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len / 2).unwrap();
    judge(&data, &acked, "truncated to half").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_file_overwritten_in_the_middle_is_refused_not_started_without_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let acked = four_jobs(&data).await;
    let db = sled_file(&data);
    let len = std::fs::metadata(&db).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[0xA5; 64]).unwrap();
    f.sync_all().unwrap();
    judge(&data, &acked, "64 bytes overwritten").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_sled_segment_file_is_refused_not_started_empty() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let acked = four_jobs(&data).await;
    std::fs::remove_file(sled_file(&data)).unwrap();
    judge(&data, &acked, "segment file deleted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_rolled_back_under_a_newer_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let Started::Running(mut child, addr, _) = serve(&data, false) else { panic!("serves") };
    let mut acked = submit(&addr, 0..2).await;
    child.kill().unwrap();
    child.wait().unwrap();
    // An old copy of sled's files (a backup, or a file system that rolled back) …
    let old = dir.path().join("old");
    copy_dir(&data, &old);
    let Started::Running(mut child, addr, _) = serve(&data, false) else { panic!("serves") };
    acked.extend(submit(&addr, 2..4).await);
    child.kill().unwrap();
    child.wait().unwrap();
    // … put back under the newer manifest.
    let manifest = std::fs::read(data.join(MANIFEST_FILE)).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&old, &data);
    std::fs::write(data.join(MANIFEST_FILE), manifest).unwrap();
    let Started::Exited(code, stderr) = serve(&data, false) else { panic!("a rolled-back store started") };
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("the manifest records 4 job(s) up to id 4; 2 of them are missing from the store (ids 3-4)"),
        "{stderr}"
    );
    judge(&data, &acked, "rolled back").await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// [`Store::open`] (or, with `recover`, [`Store::open_recover`]), waiting while sled's background thread of a
/// dropped scheduler still holds the directory's lock.
fn open(dir: &Path, recover: bool) -> Result<(SledStore, sovra_scheduler::store::Damage), String> {
    for _ in 0..250 {
        let r =
            if recover { SledStore::open_recover(dir) } else { SledStore::open(dir).map(|s| (s, Default::default())) };
        match r {
            Err(e) if e.contains("in use by another process") => std::thread::sleep(Duration::from_millis(20)),
            other => return other,
        }
    }
    panic!("{} stays locked", dir.display())
}

/// Four jobs through the library (no server), the scheduler dropped so that sled can be opened directly.
fn four_jobs_in_process(data: &Path) {
    let cluster = ClusterConfig::load(&cluster_file()).unwrap();
    let s = Scheduler::new(cluster, PolicySpec::default(), 42, Some(Box::new(SledStore::open(data).unwrap()))).unwrap();
    for i in 0..4 {
        assert_eq!(s.submit_yaml(&job(i), &format!("r{i}")).unwrap().id, i as u64 + 1);
    }
}

#[test]
fn record_failing_its_checksum_is_refused_and_recover_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    four_jobs_in_process(dir.path());
    {
        // A bit flip inside job 2's record, written through sled so that sled's own checks cannot see it.
        let mut db = sled::open(dir.path());
        for _ in 0..250 {
            if db.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            db = sled::open(dir.path());
        }
        let db = db.unwrap();
        let jobs = db.open_tree("jobs").unwrap();
        let mut v = jobs.get(2u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let at = v.len() - 10;
        v[at] ^= 0x01;
        jobs.insert(2u64.to_be_bytes(), v).unwrap();
        db.flush().unwrap();
    }
    let e = open(dir.path(), false).err().expect("a damaged record is refused");
    assert!(e.contains("1 record(s) are damaged (job 2: checksum mismatch)"), "{e}");
    assert!(e.contains("restore the directory from a backup") && e.contains("--recover"), "{e}");
    let (store, damage) = open(dir.path(), true).unwrap();
    assert_eq!(damage.lost_jobs(), vec![2]);
    let s =
        Scheduler::new(ClusterConfig::load(&cluster_file()).unwrap(), PolicySpec::default(), 42, Some(Box::new(store)))
            .unwrap();
    assert_eq!(s.submit_yaml(&job(9), "").unwrap().id, 5, "ids continue after the manifest's last id");
    drop(s);
    assert!(open(dir.path(), false).is_ok(), "a recovered directory opens");
}

#[test]
fn missing_manifest_with_jobs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    four_jobs_in_process(dir.path());
    std::fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
    let e = open(dir.path(), false).err().expect("refused");
    assert!(e.contains("is missing while the store holds 4 job record(s)"), "{e}");
    let (store, damage) = open(dir.path(), true).unwrap();
    assert!(damage.lost_jobs().is_empty());
    assert_eq!(store.manifest().last_id, 4);
}
