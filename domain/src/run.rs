//! What a job runs: the `run:` section of a job file, carried to the node daemon that starts each replica.
//!
//! A job without `run:` is placed but started by nobody: its runner reports with `sovra set-state` (work run
//! outside Sovra). With `run:`, the daemon of each replica's node starts `command` with `args` as `user`, with the
//! job's `env` plus the variables Sovra sets (see [`RESERVED_ENV`]), stops it on cancel, preemption or walltime
//! (SIGTERM to its process group, SIGKILL after `grace`) and reports how it ended (docs/node-daemon.md).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The grace period (SIGTERM → SIGKILL) when a job does not give one.
pub const DEFAULT_GRACE_S: u64 = 30;

/// The longest grace period a cluster allows when its file does not say (`scheduling.max_grace`).
pub const DEFAULT_MAX_GRACE_S: u64 = 300;

/// The longest walltime a job may ask for: one year.
pub const MAX_WALLTIME_S: u64 = 365 * 86_400;

/// At most this many restarts (`restart.max`).
pub const MAX_RESTARTS: u32 = 100;

/// At most this many bytes in `command`, one argument, an environment value or `workdir`.
pub const MAX_ARG_BYTES: usize = 128 * 1024;

/// At most this many arguments or environment entries.
pub const MAX_ARGS: usize = 1_000;

/// Environment variables Sovra sets for every replica, which a job's `env` may not set: the GPUs it was given,
/// its place in the gang, and the `torch.distributed` rendezvous. Names starting with `SOVRA_` are reserved too.
pub const RESERVED_ENV: &[&str] = &[
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
];

/// When the daemon starts a replica again after it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never: the replica's first end is the job's.
    #[default]
    Never,
    /// After a failure (non-zero exit, a signal, a start that failed), up to `max` times on the same node.
    OnFailure,
}

/// What each replica of a job runs (validated).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunSpec {
    /// The program: a path, or a name looked up in `PATH` (`/usr/local/bin:/usr/bin:/bin` unless `env` sets it).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables besides the ones Sovra sets; no [`RESERVED_ENV`] name and no `SOVRA_` prefix.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; empty: the replica's own directory on the node.
    #[serde(default)]
    pub workdir: String,
    /// The unix user it runs as; empty: the daemon's configured default user. Root only where the daemon allows it.
    #[serde(default)]
    pub user: String,
    /// Longest run, seconds; `None`: no limit.
    #[serde(default)]
    pub walltime_s: Option<u64>,
    /// SIGTERM → SIGKILL delay, seconds.
    pub grace_s: u64,
    /// When to start it again.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// At most this many restarts (with `on-failure`).
    #[serde(default)]
    pub max_restarts: u32,
}

/// Whether `name` may be set by a job's `env` (a valid name, not one Sovra sets).
pub fn env_name_problem(name: &str) -> Option<String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Some(format!("{name:?} is not an environment variable name (letters, digits, _; not a digit first)"));
    }
    if RESERVED_ENV.contains(&name) || name.starts_with("SOVRA_") {
        return Some(format!(
            "{name} is set by Sovra for every replica (the GPUs it was given and its place in the gang) and cannot \
             be overridden; remove it"
        ));
    }
    None
}

/// Parses a duration as a job file writes it: a number of seconds, or humantime text (`90s`, `30m`, `2h 30m`).
pub fn parse_duration_s(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    humantime::parse_duration(t)
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .map_err(|e| format!("{t:?} is not a duration ({e}); write e.g. 90, 90s, 30m or 2h"))
}
