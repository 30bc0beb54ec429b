//! What a replica leaves on the node's disk, one directory per replica attempt under `<state_dir>/replicas/`:
//!
//! - `work.json` — the assignment, as the scheduler sent it (written by the daemon before it starts anything);
//! - `launch.json` — the exact program, arguments, environment, user and limits the shim starts;
//! - `pid.json` — written by the shim once the process runs: the shim's and the process's pid **and start time**
//!   (field 22 of `/proc/<pid>/stat`, so that a reused pid is never mistaken for the replica);
//! - `exit.json` — written by the shim when the process ended: exit code or signal, resource figures, or why it
//!   could not start; one per run (`exit.json`, then `exit.1.json` … when it was restarted);
//! - `state.json` — the daemon's own record: restarts so far, a stop it asked for (why, when), whether the end was
//!   reported;
//! - `output.log` (and `output.log.1` … rotated) — the process's stdout and stderr, as written.
//!
//! Every file is written whole to a temporary name and renamed, so that a reader (or a daemon restarted after
//! `kill -9`) sees either the old content or the new, never half of one. These files are the state file the daemon
//! re-adopts its children from. The runner's messages (the scheduler's [`Desired`] set in, a replica's [`Status`]
//! out) are here too: the data a run's files carry, as the runner exchanges it.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sovra_domain::RunSpec;
use std::path::{Path, PathBuf};

/// One GPU device given to a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// GPU index on the node.
    pub gpu: u32,
    /// GPU UUID, or the MIG instance's.
    pub uuid: String,
    /// Milli of the GPU.
    pub milli: u32,
}

/// A replica the scheduler assigned to this node (the daemon's form of `sovra.v1.Assignment`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// Job id.
    pub job: u64,
    /// Replica index.
    pub replica: u32,
    /// Replicas of the gang.
    pub replicas: u32,
    /// The job's placement count: a re-placed job is a new attempt.
    pub attempt: u64,
    /// Job name.
    pub job_name: String,
    /// Its GPUs.
    pub devices: Vec<Device>,
    /// What to run.
    pub run: RunSpec,
    /// torch.distributed rendezvous host (replica 0's node).
    pub master_addr: String,
    /// torch.distributed rendezvous port.
    pub master_port: u32,
    /// Each replica's node.
    pub peers: Vec<String>,
    /// CPU milli-cores (the cgroup's CPU limit).
    pub cpu_milli: u64,
    /// Memory, MiB (the cgroup's memory limit).
    pub memory_mib: u64,
}

/// A replica attempt's identity: job, replica, attempt.
pub type Key = (u64, u32, u64);

impl Work {
    /// Its key.
    pub fn key(&self) -> Key {
        (self.job, self.replica, self.attempt)
    }
}

/// What the shim starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    /// Program (a path, or a name looked up in the `PATH` of `env`).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited from the daemon).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: PathBuf,
    /// User and group ids to run as; `None`: the shim's own.
    pub uid: Option<u32>,
    /// Group id.
    pub gid: Option<u32>,
    /// The cgroup (v2) directory the shim moves itself into before starting the process, if any.
    pub cgroup: Option<PathBuf>,
    /// Rotate `output.log` when it reaches this many bytes.
    pub log_max_bytes: u64,
    /// Rotated files kept (`output.log.1` … `output.log.N`).
    pub log_keep: u32,
}

/// Written by the shim when the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pids {
    /// The shim's pid and start time.
    pub shim: (u32, u64),
    /// The process's pid (also its process group) and start time.
    pub child: (u32, u64),
    /// When it started, ms since 1970.
    pub started_ms: u64,
}

/// Written by the shim when the process ended (or could not start).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when one ended it.
    pub signal: Option<i32>,
    /// Why it could not start, when it could not.
    pub error: Option<String>,
    /// When it ended, ms since 1970.
    pub ended_ms: u64,
    /// CPU time used (user + system), ms.
    pub cpu_ms: u64,
    /// Largest resident set, KiB.
    pub max_rss_kib: u64,
}

impl Exit {
    /// Whether it succeeded (exit code 0).
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.error.is_none()
    }

    /// How it ended, in words.
    pub fn describe(&self) -> String {
        match (&self.error, self.code, self.signal) {
            (Some(e), _, _) => e.clone(),
            (None, Some(c), _) => format!("exit code {c}"),
            (None, None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
            (None, None, None) => "ended (no status)".into(),
        }
    }
}

/// A signal's name (SIGTERM …).
pub fn signal_name(s: i32) -> String {
    nix::sys::signal::Signal::try_from(s).map_or_else(|_| format!("signal {s}"), |sig| sig.as_str().to_string())
}

/// A stop the daemon asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// Why (`cancelled`, `preempted by job 7`, `walltime of 60 s reached`).
    pub reason: String,
    /// When, ms since 1970.
    pub at_ms: u64,
    /// Whether the replica counts as failed (walltime) rather than stopped (withdrawn by the scheduler).
    pub fail: bool,
}

/// The daemon's record of a replica attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Restarts so far.
    pub restarts: u32,
    /// The current run's shim: pid and start time.
    pub shim: Option<(u32, u64)>,
    /// The stop the daemon asked for.
    pub stop: Option<Stop>,
    /// Its end, once final (no restart follows): `succeeded`, `failed` or `stopped`, and why.
    pub ended: Option<(String, String)>,
    /// The scheduler no longer lists it and its end was reported: a restarted daemon leaves it alone.
    pub forgotten: bool,
}

/// Writes `value` as JSON to `path` atomically (temporary file, fsync, rename).
pub fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads JSON from `path`; `None` when it does not exist (or is not yet complete).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A process's start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`); `None` when it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field 22 is at index 19. A zombie counts as gone.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process `(pid, start)` still exists (the same process, not a reused pid).
pub fn alive(p: (u32, u64)) -> bool {
    start_time(p.0) == Some(p.1)
}

/// The directory of a replica attempt.
pub fn replica_dir(state_dir: &Path, key: Key) -> PathBuf {
    state_dir.join("replicas").join(format!("{}-{}-{}", key.0, key.1, key.2))
}

/// The key a replica directory's name encodes.
pub fn parse_key(name: &str) -> Option<Key> {
    let mut it = name.split('-');
    let k = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    it.next().is_none().then_some(k)
}

/// Milliseconds since 1970.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the scheduler wants this node to run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// The set's generation.
    pub generation: u64,
    /// The replicas.
    pub work: Vec<Work>,
    /// Why replicas that left the set are stopped, by job.
    pub stop_reasons: std::collections::BTreeMap<u64, String>,
}

/// What the daemon reports of a replica run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Job, replica, attempt.
    pub key: Key,
    /// `waiting`, `starting`, `running`, `stopping`, `succeeded`, `failed`, `stopped`.
    pub state: String,
    /// Exit code of the last run.
    pub exit_code: Option<i32>,
    /// Signal that ended the last run.
    pub signal: Option<i32>,
    /// Why it failed, was stopped, restarts or waits.
    pub reason: String,
    /// Restarts so far.
    pub restarts: u32,
    /// The process's pid.
    pub pid: u32,
    /// When the current run started, ms since 1970.
    pub started_ms: u64,
    /// When it ended.
    pub ended_ms: u64,
    /// CPU time, ms.
    pub cpu_ms: u64,
    /// Peak memory, KiB.
    pub max_rss_kib: u64,
}
