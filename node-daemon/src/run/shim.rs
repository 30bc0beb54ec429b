//! The shim (`sovra-node-daemon shim DIR`): one small supervisor process per replica run, started by the daemon and
//! independent of it, like containerd's shims. It survives a daemon restart (`kill -9` included), so that the
//! replica keeps running, its output keeps being written, and its exit status is still recorded for the daemon
//! that re-adopts it.
//!
//! It moves itself into the replica's cgroup (when there is one), starts the process in a process group of its own
//! with the environment, directory and user of `launch.json`, writes `pid.json`, copies the process's stdout and
//! stderr (one pipe, so their order is kept) into `output.log` with size-capped rotation, waits for it, kills
//! what is left of its process group (as Slurm's process tracking does: nothing the job started may keep a GPU
//! after it ended), and writes `exit.json`.

use super::files::{Exit, Launch, Pids, now_ms, read_json, start_time, write_json};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs the shim for the replica directory `dir`; returns the shim's exit code (0 when it recorded an exit).
pub fn main(dir: &Path) -> i32 {
    let Some(launch) = read_json::<Launch>(&dir.join("launch.json")) else {
        eprintln!("shim: {}: no readable launch.json", dir.display());
        return 2;
    };
    let exit = match run(dir, &launch) {
        Ok(exit) => exit,
        Err(error) => Exit { error: Some(error), ended_ms: now_ms(), ..Exit::default() },
    };
    match write_json(&dir.join("exit.json"), &exit) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shim: cannot write {}: {e}", dir.join("exit.json").display());
            1
        }
    }
}

/// Why a program could not start, in words a user can act on.
fn spawn_error(launch: &Launch, e: &std::io::Error) -> String {
    let path = launch.env.iter().find(|(k, _)| k == "PATH").map_or("", |(_, v)| v.as_str());
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("command {:?} not found (PATH {path:?}); give its full path or install it", launch.program)
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("command {:?} cannot be executed by this user (permission denied)", launch.program)
        }
        _ => format!("command {:?} could not start: {e}", launch.program),
    }
}

fn run(dir: &Path, launch: &Launch) -> Result<Exit, String> {
    if let Some(cg) = &launch.cgroup {
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("cannot enter the replica's cgroup {}: {e}", cg.display()))?;
    }
    if !launch.workdir.is_dir() {
        return Err(format!("workdir {} does not exist on this node", launch.workdir.display()));
    }
    let (reader, writer) = std::io::pipe().map_err(|e| format!("no pipe for the output: {e}"))?;
    let writer2 = writer.try_clone().map_err(|e| format!("no pipe for the output: {e}"))?;
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.workdir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2);
    if let Some(gid) = launch.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = launch.uid {
        cmd.uid(uid);
    }
    let logs = {
        let (path, max, keep) = (dir.join("output.log"), launch.log_max_bytes, launch.log_keep);
        std::thread::spawn(move || copy_rotating(reader, &path, max, keep))
    };
    let mut child = cmd.spawn().map_err(|e| spawn_error(launch, &e))?;
    // The Command still holds the pipe's write ends: drop them so that the log copy ends with the process.
    drop(cmd);
    let pid = child.id();
    let me = std::process::id();
    let pids = Pids {
        shim: (me, start_time(me).unwrap_or(0)),
        child: (pid, start_time(pid).unwrap_or(0)),
        started_ms: now_ms(),
    };
    if let Err(e) = write_json(&dir.join("pid.json"), &pids) {
        let _ = kill_group(pid);
        let _ = child.wait();
        return Err(format!("cannot record the process (pid.json): {e}"));
    }
    let status = child.wait().map_err(|e| format!("lost the process: {e}"))?;
    let ended_ms = now_ms();
    // What is left of its process group goes with it.
    let _ = kill_group(pid);
    // The output's last lines: wait a moment for the copy to drain (a process that escaped the group may still
    // hold the pipe; it is not waited for).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !logs.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok();
    let ms = |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1000 + (t.tv_usec() as u64) / 1000;
    Ok(Exit {
        code: status.code(),
        signal: status.signal(),
        error: None,
        ended_ms,
        cpu_ms: usage.map_or(0, |u| ms(u.user_time()) + ms(u.system_time())),
        max_rss_kib: usage.map_or(0, |u| u.max_rss().max(0) as u64),
    })
}

/// SIGKILL to a process group.
fn kill_group(pgid: u32) -> nix::Result<()> {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), nix::sys::signal::Signal::SIGKILL)
}

/// The rotated file `n` of `path` (`output.log.1` …).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Copies `from` into `path`, rotating it when it reaches `max` bytes (`path` → `path.1` → … → `path.keep`, the
/// oldest dropped).
fn copy_rotating(mut from: impl Read, path: &Path, max: u64, keep: u32) {
    let open = |p: &Path| std::fs::OpenOptions::new().create(true).append(true).open(p);
    let Ok(mut out) = open(path) else { return };
    let mut size = out.metadata().map_or(0, |m| m.len());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if out.write_all(&buf[..n]).is_err() {
            return;
        }
        size += n as u64;
        if max > 0 && size >= max {
            for i in (1..keep).rev() {
                let _ = std::fs::rename(rotated(path, i), rotated(path, i + 1));
            }
            if keep == 0 {
                let _ = std::fs::remove_file(path);
            } else {
                let _ = std::fs::rename(path, rotated(path, 1));
            }
            match open(path) {
                Ok(f) => out = f,
                Err(_) => return,
            }
            size = 0;
        }
    }
}
