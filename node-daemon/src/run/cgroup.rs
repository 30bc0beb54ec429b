//! CPU and memory limits through cgroup v2, where the machine allows them.
//!
//! The daemon keeps its replicas under one cgroup (`cgroup_root`, default `/sys/fs/cgroup/sovra`): it enables the
//! `cpu` and `memory` controllers for it, and gives each replica run a child cgroup with `cpu.max` (the replica's
//! `cpu_milli`) and `memory.max` (its `memory_mib`). The shim moves itself there before starting the process, so
//! that everything the job starts is counted and limited; stopping a replica also writes `cgroup.kill` (Linux ≥
//! 5.14), which reaches processes that left the process group.
//!
//! Where this cannot be done — cgroup v1 or a hybrid layout, controllers not delegated, no permission — the daemon
//! says so at start and in its registration (`sovra nodes` shows it): processes then still get their GPUs, their
//! own process group and the stop sequence, but no CPU or memory limit. Never silently.

use std::path::{Path, PathBuf};

/// What the daemon can enforce on the processes it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// cgroup v2 with the cpu and memory controllers, under this directory.
    Cgroup(PathBuf),
    /// No cgroup limits, and why.
    None(String),
}

impl Isolation {
    /// The words `sovra nodes` shows.
    pub fn describe(&self) -> String {
        match self {
            Isolation::Cgroup(root) => format!("cgroup v2 (cpu, memory) under {}", root.display()),
            Isolation::None(why) => format!("none: {why}"),
        }
    }
}

/// The cgroup v2 mount.
const MOUNT: &str = "/sys/fs/cgroup";

/// Finds out whether replicas can get cgroup limits under `root`, preparing it when they can.
pub fn detect(root: &Path) -> Isolation {
    let controllers = match std::fs::read_to_string(Path::new(MOUNT).join("cgroup.controllers")) {
        Ok(c) => c,
        Err(_) => {
            return Isolation::None(format!(
                "{MOUNT} is not a cgroup v2 mount (cgroup v1 or hybrid layout); CPU and memory are not limited"
            ));
        }
    };
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !has("cpu") || !has("memory") {
        return Isolation::None(format!("cgroup v2 offers [{}], not cpu and memory", controllers.trim()));
    }
    if !root.starts_with(MOUNT) {
        return Isolation::None(format!("cgroup_root {} is not under {MOUNT}", root.display()));
    }
    let prepare = || -> std::io::Result<()> {
        std::fs::create_dir_all(root)?;
        if let Some(parent) = root.parent() {
            enable(parent)?;
        }
        enable(root)
    };
    match prepare() {
        Ok(()) => Isolation::Cgroup(root.to_path_buf()),
        Err(e) => Isolation::None(format!(
            "cannot prepare the cgroup {} ({e}); CPU and memory are not limited",
            root.display()
        )),
    }
}

/// Enables the cpu and memory controllers for the children of `dir` (if not yet).
fn enable(dir: &Path) -> std::io::Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let now = std::fs::read_to_string(&control).unwrap_or_default();
    if now.split_whitespace().any(|c| c == "cpu") && now.split_whitespace().any(|c| c == "memory") {
        return Ok(());
    }
    std::fs::write(&control, "+cpu +memory")
}

/// Creates the cgroup of one replica run with its limits; returns its directory.
pub fn create(root: &Path, name: &str, cpu_milli: u64, memory_mib: u64) -> std::io::Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    // cpu.max: quota and period in µs; 1000 milli-cores = one full period.
    let period = 100_000u64;
    let quota = (cpu_milli.saturating_mul(period) / 1000).max(1000);
    std::fs::write(dir.join("cpu.max"), format!("{quota} {period}"))?;
    std::fs::write(dir.join("memory.max"), memory_mib.saturating_mul(1 << 20).to_string())?;
    Ok(dir)
}

/// Kills everything in a replica's cgroup (where the kernel offers `cgroup.kill`).
pub fn kill(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
}

/// Removes a replica's cgroup once it is empty.
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// CPU time used by a replica's cgroup, ms (`cpu.stat` usage_usec), and its peak memory, KiB (`memory.peak`).
pub fn usage(dir: &Path) -> (Option<u64>, Option<u64>) {
    let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse::<u64>().ok()));
    let peak = std::fs::read_to_string(dir.join("memory.peak"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|b| b / 1024);
    (cpu.map(|us| us / 1000), peak)
}
