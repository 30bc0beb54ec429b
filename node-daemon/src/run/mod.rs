//! Running the work the scheduler assigns to this node: one process per replica, on exactly its GPUs, supervised.
//!
//! **Level-triggered.** The scheduler sends the whole set of replicas this node must run (`Assignments`); the
//! [`Runner`] reconciles towards it every tick ([`RunnerConfig::tick`], 100 ms): it starts each listed replica it does
//! not run, stops every replica it runs that is not listed, and forgets ended replicas that are no longer listed.
//! Until the first set arrives after a (re)start it changes nothing, so a restarted daemon never kills work the
//! scheduler still wants. A node that was declared lost and comes back gets a set without the jobs that were
//! requeued elsewhere, and so kills their stale processes.
//!
//! **Processes.** Each replica run is started by a [`shim`] (`sovra-node-daemon shim DIR`) that outlives the daemon,
//! in a process group of its own, with `CUDA_VISIBLE_DEVICES` / `NVIDIA_VISIBLE_DEVICES` set to its GPUs' UUIDs,
//! the gang's `torch.distributed` variables, and a cgroup where the machine allows ([`cgroup`]). Stopping one
//! (cancel, preemption, walltime) sends SIGTERM to its process group, then SIGKILL once the job's grace period has
//! passed.
//!
//! **GPUs are handed over, never shared by accident.** A replica whose GPUs are still held by a replica that is
//! being stopped (a preempted victim) waits (`waiting`) until the victim's processes are gone; only then does it
//! start. So a preemptor never starts before its victim ended, whatever the order the scheduler's messages came in.
//!
//! **Restarts of the daemon.** Everything about a run is in its directory ([`files`]); a restarted daemon re-adopts
//! each run that is not forgotten: a shim still alive (same pid *and* start time) keeps supervising, an `exit.json`
//! is an end to report, and a shim gone without one means the run is lost — its process, if still there, is killed
//! and the replica reported failed. No duplicate is started: the run's directory is its identity.

pub mod cgroup;
pub mod files;
mod launch;
mod link;
pub mod logs;
pub mod shim;

use files::{Exit, Key, Pids, Record, Stop, Work, alive, now_ms, read_json, replica_dir, write_json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use cgroup::Isolation;
pub use files::{Desired, Status};
pub use link::{attach, desired_from, spawn};

/// How the runner runs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// This node's name (for messages and `SOVRA_NODE`).
    pub node: String,
    /// Where replica directories live (`<state_dir>/replicas/…`).
    pub state_dir: PathBuf,
    /// The user jobs run as when they name none (when the daemon runs as root).
    pub default_user: String,
    /// Whether jobs may run as root.
    pub allow_root: bool,
    /// Rotate a replica's `output.log` at this size.
    pub log_max_bytes: u64,
    /// Rotated output files kept per replica.
    pub log_keep: u32,
    /// The cgroup v2 directory replicas get their cgroups under.
    pub cgroup_root: PathBuf,
    /// The program started as the shim (this daemon's own executable).
    pub shim: PathBuf,
    /// How often the runner looks at its processes.
    pub tick: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Starting,
    Running,
    Ended,
}

struct Instance {
    work: Work,
    dir: PathBuf,
    record: Record,
    phase: Phase,
    /// The shim, when this daemon started it (to reap it).
    shim: Option<std::process::Child>,
    pids: Option<Pids>,
    cgroup: Option<PathBuf>,
    /// When SIGTERM was sent, and whether SIGKILL followed.
    term: Option<(Instant, bool)>,
    exit: Option<Exit>,
    /// Why it waits.
    waiting: String,
    /// Why it restarted last.
    restart_reason: String,
    last: Option<Status>,
}

/// The runner: the replicas of this node and their processes.
pub struct Runner {
    cfg: RunnerConfig,
    isolation: Isolation,
    desired: Option<Desired>,
    instances: BTreeMap<Key, Instance>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Runner {
    /// Opens the state directory, finds out what isolation the machine allows, and re-adopts the runs a previous
    /// daemon left.
    pub fn open(cfg: RunnerConfig) -> Result<Runner, String> {
        let dir = cfg.state_dir.join("replicas");
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create the state directory", &dir, e))?;
        // Jobs run as other users reach their `work` directories through these (traverse only, no listing).
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::fs::PermissionsExt;
            for d in [&cfg.state_dir, &dir] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
                    .map_err(|e| io("cannot set the permissions of", d, e))?;
            }
        }
        let isolation = cgroup::detect(&cfg.cgroup_root);
        let mut r = Runner { cfg, isolation, desired: None, instances: BTreeMap::new() };
        r.adopt(&dir)?;
        Ok(r)
    }

    /// What the daemon can enforce.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    fn adopt(&mut self, dir: &Path) -> Result<(), String> {
        let entries = std::fs::read_dir(dir).map_err(|e| io("cannot read", dir, e))?;
        let mut names: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        names.sort();
        for name in names {
            let Some(key) = files::parse_key(&name) else { continue };
            let d = dir.join(&name);
            let (Some(work), record) =
                (read_json::<Work>(&d.join("work.json")), read_json::<Record>(&d.join("state.json")))
            else {
                continue;
            };
            let record = record.unwrap_or_default();
            if record.forgotten || work.key() != key {
                continue;
            }
            let pids = read_json::<Pids>(&d.join("pid.json"));
            let phase = match (&record.ended, pids) {
                (Some(_), _) => Phase::Ended,
                (None, Some(_)) => Phase::Running,
                (None, None) if record.shim.is_some() => Phase::Starting,
                (None, None) => Phase::Waiting,
            };
            let exit = if phase == Phase::Ended { read_json::<Exit>(&d.join("exit.json")) } else { None };
            let cgroup = match &self.isolation {
                Isolation::Cgroup(root) if phase != Phase::Ended => Some(root.join(&name)).filter(|p| p.is_dir()),
                _ => None,
            };
            tracing::info!(job = key.0, replica = key.1, attempt = key.2, phase = ?phase, pid = pids.map(|p| p.child.0), "re-adopted a replica run");
            self.instances.insert(
                key,
                Instance {
                    work,
                    dir: d,
                    record,
                    phase,
                    shim: None,
                    pids,
                    cgroup,
                    // A stop in progress when the daemon went: its grace period starts again (SIGTERM at once).
                    term: None,
                    exit,
                    waiting: String::new(),
                    restart_reason: String::new(),
                    last: None,
                },
            );
        }
        let stopping: Vec<Key> = self
            .instances
            .iter()
            .filter(|(_, i)| i.phase == Phase::Running && i.record.stop.is_some())
            .map(|(k, _)| *k)
            .collect();
        for k in stopping {
            if let Some(i) = self.instances.get_mut(&k) {
                i.term = Some((Instant::now(), false));
                signal(i, nix::sys::signal::Signal::SIGTERM);
            }
        }
        Ok(())
    }

    /// Takes the scheduler's latest set (applied at the next [`Runner::step`]).
    pub fn set_desired(&mut self, d: Desired) {
        self.desired = Some(d);
    }

    /// Every replica's status now.
    pub fn statuses(&self) -> Vec<Status> {
        self.instances.values().map(|i| self.status(i)).collect()
    }

    /// One reconcile pass; returns the statuses that changed.
    pub fn step(&mut self) -> Vec<Status> {
        let keys: Vec<Key> = self.instances.keys().copied().collect();
        for k in &keys {
            self.poll(*k);
        }
        if let Some(desired) = self.desired.clone() {
            let wanted: BTreeMap<Key, &Work> = desired.work.iter().map(|w| (w.key(), w)).collect();
            for k in &keys {
                let (listed, walltime) = match self.instances.get(k) {
                    Some(i) => (wanted.contains_key(k), self.walltime_over(i)),
                    None => continue,
                };
                if !listed {
                    let reason =
                        desired.stop_reasons.get(&k.0).cloned().unwrap_or_else(|| "withdrawn by the scheduler".into());
                    self.stop(*k, reason, false);
                } else if let Some(w) = walltime {
                    self.stop(*k, format!("walltime of {w} s reached"), true);
                }
            }
            for (k, w) in &wanted {
                if !self.instances.contains_key(k) {
                    self.create(w);
                }
            }
            let waiting: Vec<Key> =
                self.instances.iter().filter(|(_, i)| i.phase == Phase::Waiting).map(|(k, _)| *k).collect();
            for k in waiting {
                self.try_start(k, &wanted);
            }
            let gone: Vec<Key> = self
                .instances
                .iter()
                // Only once its end was reported (at the end of an earlier step): the scheduler hears every end.
                .filter(|(k, i)| {
                    i.phase == Phase::Ended && !wanted.contains_key(k) && i.last.as_ref() == Some(&self.status(i))
                })
                .map(|(k, _)| *k)
                .collect();
            for k in &gone {
                self.forget(*k);
            }
        }
        self.escalate();
        let mut changed = Vec::new();
        let statuses: Vec<(Key, Status)> = self.instances.iter().map(|(k, i)| (*k, self.status(i))).collect();
        for (k, s) in statuses {
            if let Some(i) = self.instances.get_mut(&k)
                && i.last.as_ref() != Some(&s)
            {
                i.last = Some(s.clone());
                changed.push(s);
            }
        }
        changed
    }

    fn walltime_over(&self, i: &Instance) -> Option<u64> {
        let w = i.work.run.walltime_s?;
        let p = i.pids?;
        (i.phase == Phase::Running && i.record.stop.is_none() && now_ms() >= p.started_ms + w * 1000).then_some(w)
    }

    fn save(i: &Instance) {
        if let Err(e) = write_json(&i.dir.join("state.json"), &i.record) {
            tracing::error!(dir = %i.dir.display(), error = %e, "cannot write a replica's state");
        }
    }

    fn create(&mut self, w: &Work) {
        let dir = replica_dir(&self.cfg.state_dir, w.key());
        let made = std::fs::create_dir_all(&dir).and_then(|_| write_json(&dir.join("work.json"), w));
        let i = Instance {
            work: w.clone(),
            dir,
            record: Record::default(),
            phase: Phase::Waiting,
            shim: None,
            pids: None,
            cgroup: None,
            term: None,
            exit: None,
            waiting: String::new(),
            restart_reason: String::new(),
            last: None,
        };
        Self::save(&i);
        let key = w.key();
        self.instances.insert(key, i);
        if let Err(e) = made {
            self.end(
                key,
                "failed",
                format!("cannot prepare the replica's directory on node {}: {e}", self.cfg.node),
                None,
            );
        }
    }

    /// Starts a waiting replica once no replica that is being stopped holds one of its GPUs.
    fn try_start(&mut self, k: Key, wanted: &BTreeMap<Key, &Work>) {
        let Some(i) = self.instances.get(&k) else { return };
        let gpus: BTreeSet<u32> = i.work.devices.iter().map(|d| d.gpu).collect();
        let holder = self.instances.iter().find(|(ok, o)| {
            **ok != k
                && o.phase != Phase::Ended
                && !wanted.contains_key(ok)
                && o.work.devices.iter().any(|d| gpus.contains(&d.gpu))
        });
        if let Some((ok, o)) = holder {
            let shared: Vec<String> =
                o.work.devices.iter().filter(|d| gpus.contains(&d.gpu)).map(|d| d.gpu.to_string()).collect();
            let why = format!("waiting for GPU {} to be freed by job {} (stopping)", shared.join(","), ok.0);
            if let Some(i) = self.instances.get_mut(&k) {
                i.waiting = why;
            }
            return;
        }
        self.launch(k);
    }

    /// Starts a run of `k` (the first, or a restart).
    fn launch(&mut self, k: Key) {
        let Some(i) = self.instances.get_mut(&k) else { return };
        i.waiting.clear();
        let _ = std::fs::remove_file(i.dir.join("pid.json"));
        let mut launch = match launch::launch(&self.cfg, &i.work, &i.dir, i.record.restarts) {
            Ok(l) => l,
            Err(reason) => return self.ran_out(k, Exit { error: Some(reason), ended_ms: now_ms(), ..Exit::default() }),
        };
        if let Isolation::Cgroup(root) = &self.isolation {
            let name = i.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match cgroup::create(root, &name, i.work.cpu_milli, i.work.memory_mib) {
                Ok(cg) => {
                    launch.cgroup = Some(cg.clone());
                    i.cgroup = Some(cg);
                }
                Err(e) => {
                    tracing::warn!(job = k.0, error = %e, "no cgroup for this replica: CPU and memory are not limited")
                }
            }
        }
        if let Err(e) = write_json(&i.dir.join("launch.json"), &launch) {
            let why = format!("cannot write launch.json: {e}");
            return self.ran_out(k, Exit { error: Some(why), ended_ms: now_ms(), ..Exit::default() });
        }
        let log = std::fs::File::create(i.dir.join("shim.log"));
        let mut cmd = std::process::Command::new(&self.cfg.shim);
        use std::os::unix::process::CommandExt;
        cmd.arg("shim")
            .arg(&i.dir)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if let Ok(log) = log {
            cmd.stderr(log);
        }
        match cmd.spawn() {
            Ok(child) => {
                let pid = child.id();
                i.record.shim = Some((pid, files::start_time(pid).unwrap_or(0)));
                i.shim = Some(child);
                i.phase = Phase::Starting;
                Self::save(i);
                tracing::info!(
                    job = k.0,
                    replica = k.1,
                    attempt = k.2,
                    restarts = i.record.restarts,
                    "replica starting"
                );
            }
            Err(e) => {
                let why = format!("cannot start the shim {}: {e}", self.cfg.shim.display());
                self.ran_out(k, Exit { error: Some(why), ended_ms: now_ms(), ..Exit::default() });
            }
        }
    }

    /// Looks at a replica's processes: started, ended, or lost.
    fn poll(&mut self, k: Key) {
        let Some(i) = self.instances.get_mut(&k) else { return };
        if matches!(i.phase, Phase::Ended | Phase::Waiting) {
            return;
        }
        let reaped = match i.shim.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => false,
        };
        if reaped {
            i.shim = None;
        }
        if i.pids.is_none() {
            i.pids = read_json::<Pids>(&i.dir.join("pid.json"));
            if i.pids.is_some() && i.phase == Phase::Starting {
                i.phase = Phase::Running;
                // A stop asked for while it was starting is sent now.
                if i.record.stop.is_some() && i.term.is_none() {
                    i.term = Some((Instant::now(), false));
                    signal(i, nix::sys::signal::Signal::SIGTERM);
                }
            }
        }
        let shim_gone = reaped || (i.shim.is_none() && !i.record.shim.is_some_and(alive));
        // Read the exit after looking at the shim: a shim writes its exit, then ends.
        if let Some(exit) = read_json::<Exit>(&i.dir.join("exit.json")) {
            return self.ran_out(k, exit);
        }
        if shim_gone {
            let child_alive = i.pids.is_some_and(|p| alive(p.child));
            if child_alive {
                signal(i, nix::sys::signal::Signal::SIGKILL);
            }
            let why = format!(
                "its supervisor (shim) ended without recording an exit{}",
                if child_alive { "; its processes were killed" } else { "" }
            );
            let exit = Exit { error: Some(why), ended_ms: now_ms(), ..Exit::default() };
            let _ = write_json(&i.dir.join("exit.json"), &exit);
            self.ran_out(k, exit);
        }
    }

    /// A run ended: restart it (policy `on-failure`, restarts left, not being stopped), or end the replica.
    fn ran_out(&mut self, k: Key, exit: Exit) {
        let Some(i) = self.instances.get_mut(&k) else { return };
        if let Some(cg) = i.cgroup.take() {
            cgroup::kill(&cg);
            cgroup::remove(&cg);
        }
        i.pids = i.pids.or_else(|| read_json(&i.dir.join("pid.json")));
        if let Some(stop) = i.record.stop.clone() {
            let state = if stop.fail { "failed" } else { "stopped" };
            return self.end(k, state, stop.reason, Some(exit));
        }
        if exit.success() {
            return self.end(k, "succeeded", String::new(), Some(exit));
        }
        let run = &i.work.run;
        let listed = self.desired.as_ref().is_none_or(|d| d.work.iter().any(|w| w.key() == k));
        if run.restart == sovra_domain::RestartPolicy::OnFailure && i.record.restarts < run.max_restarts && listed {
            let n = i.record.restarts + 1;
            let _ = std::fs::rename(i.dir.join("exit.json"), i.dir.join(format!("exit.{n}.json")));
            i.record.restarts = n;
            i.restart_reason = format!("restart {n} of {} after: {}", run.max_restarts, exit.describe());
            tracing::info!(job = k.0, replica = k.1, reason = %i.restart_reason, "replica restarting");
            i.pids = None;
            i.record.shim = None;
            i.exit = Some(exit);
            return self.launch(k);
        }
        let reason = exit.describe();
        self.end(k, "failed", reason, Some(exit));
    }

    /// Ends a replica for good.
    fn end(&mut self, k: Key, state: &str, reason: String, exit: Option<Exit>) {
        let Some(i) = self.instances.get_mut(&k) else { return };
        let _ = write_json(
            &i.dir.join("exit.json"),
            exit.as_ref().unwrap_or(&Exit { ended_ms: now_ms(), ..Exit::default() }),
        );
        i.exit = exit.or_else(|| Some(Exit { ended_ms: now_ms(), ..Exit::default() }));
        i.phase = Phase::Ended;
        i.record.ended = Some((state.to_string(), reason.clone()));
        Self::save(i);
        tracing::info!(job = k.0, replica = k.1, attempt = k.2, state, %reason, "replica ended");
    }

    /// Stops a replica: SIGTERM now, SIGKILL after its grace period ([`Runner::escalate`]).
    fn stop(&mut self, k: Key, reason: String, fail: bool) {
        let Some(i) = self.instances.get_mut(&k) else { return };
        if i.phase == Phase::Ended || i.record.stop.is_some() {
            return;
        }
        tracing::info!(job = k.0, replica = k.1, %reason, "stopping replica");
        i.record.stop = Some(Stop { reason: reason.clone(), at_ms: now_ms(), fail });
        Self::save(i);
        match i.phase {
            Phase::Waiting => self.end(k, if fail { "failed" } else { "stopped" }, reason, None),
            Phase::Running => {
                i.term = Some((Instant::now(), false));
                signal(i, nix::sys::signal::Signal::SIGTERM);
            }
            // Signalled once its process is known (see `poll`).
            Phase::Starting | Phase::Ended => {}
        }
    }

    /// SIGKILL to the replicas whose grace period is over.
    fn escalate(&mut self) {
        for i in self.instances.values_mut() {
            if let Some((at, false)) = i.term
                && i.phase != Phase::Ended
                && at.elapsed() >= Duration::from_secs(i.work.run.grace_s)
            {
                tracing::warn!(job = i.work.job, replica = i.work.replica, "grace period over: SIGKILL");
                signal(i, nix::sys::signal::Signal::SIGKILL);
                if let Some(cg) = &i.cgroup {
                    cgroup::kill(cg);
                }
                i.term = Some((at, true));
            }
        }
    }

    fn forget(&mut self, k: Key) {
        if let Some(mut i) = self.instances.remove(&k) {
            i.record.forgotten = true;
            Self::save(&i);
        }
        self.prune();
    }

    /// Keeps the directories of the last [`KEEP_FORGOTTEN`] forgotten runs (their logs), removing older ones.
    fn prune(&self) {
        let dir = self.cfg.state_dir.join("replicas");
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        let mut old: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let key = files::parse_key(&e.file_name().to_string_lossy())?;
                let rec = read_json::<Record>(&e.path().join("state.json"))?;
                rec.forgotten.then_some((key.0, e.path()))
            })
            .collect();
        if old.len() <= KEEP_FORGOTTEN {
            return;
        }
        old.sort();
        for (_, p) in &old[..old.len() - KEEP_FORGOTTEN] {
            let _ = std::fs::remove_dir_all(p);
        }
    }

    fn status(&self, i: &Instance) -> Status {
        let (state, reason) = match (&i.phase, &i.record.ended) {
            (Phase::Ended, Some((s, r))) => (s.clone(), r.clone()),
            (Phase::Waiting, _) => ("waiting".into(), i.waiting.clone()),
            _ if i.record.stop.is_some() => {
                ("stopping".into(), i.record.stop.as_ref().map(|s| s.reason.clone()).unwrap_or_default())
            }
            (Phase::Starting, _) => ("starting".into(), i.restart_reason.clone()),
            _ => ("running".into(), i.restart_reason.clone()),
        };
        let exit = if i.phase == Phase::Ended || i.record.restarts > 0 { i.exit.as_ref() } else { None };
        Status {
            key: i.work.key(),
            state,
            exit_code: exit.and_then(|e| e.code),
            signal: exit.and_then(|e| e.signal),
            reason,
            restarts: i.record.restarts,
            pid: i.pids.map_or(0, |p| p.child.0),
            started_ms: i.pids.map_or(0, |p| p.started_ms),
            ended_ms: if i.phase == Phase::Ended { exit.map_or(0, |e| e.ended_ms) } else { 0 },
            cpu_ms: exit.map_or(0, |e| e.cpu_ms),
            max_rss_kib: exit.map_or(0, |e| e.max_rss_kib),
        }
    }
}

/// Forgotten runs whose directories (and logs) are kept.
pub const KEEP_FORGOTTEN: usize = 500;

/// Sends `sig` to a replica's process group, if its process is still the one that was started.
fn signal(i: &Instance, sig: nix::sys::signal::Signal) {
    let Some(p) = i.pids else { return };
    if alive(p.child) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(p.child.0 as i32), sig);
    }
}
