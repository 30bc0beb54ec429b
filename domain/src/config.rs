//! The YAML configuration format for clusters (zones, pools, residency classes, nodes) and jobs, validated on load.
//!
//! Loading runs in two steps, as ripgrep does with its arguments: the text is deserialised into *raw* structs that
//! mirror the file (unknown fields are refused; numbers are read signed so that a negative value gets a clear
//! message instead of a type error), then the raw structs are validated into the domain types. Every problem names
//! the file, the field path (e.g. `nodes[2].gpus.count`) and what to do; all problems of a file are reported at
//! once.

use crate::job::{Job, NvlinkWish, Resources};
use crate::limits::{
    MAX_CPU_MILLI, MAX_FEASIBLE_NODES, MAX_GPUS_PER_REPLICA, MAX_JOBS_PER_FILE, MAX_LIST_LEN, MAX_MEMORY_MIB,
    MAX_NAME_LEN, MAX_REPLICAS,
};
use crate::node::{GPU_MILLI, Gpu, Node};
use crate::policy::PolicySpec;
use crate::zone::{Pool, Purpose, ResidencyClass, Zone};
use gpus::RawGpus;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

mod cluster;
mod gpus;
mod run;

pub use run::MAX_GRACE_S;

/// At most this many GPUs on one node, whether given as a uniform set or as a `devices` list.
pub const MAX_GPUS_PER_NODE: u64 = 64;

/// At most this many MIG instances on one GPU, over all entries of its `mig` list.
pub const MAX_MIG_PER_GPU: u64 = 7;

/// At most this many nodes in one cluster file, after every `count` is expanded.
pub const MAX_NODES: u64 = 100_000;

/// At most this many GPUs in one cluster file, after every `count` is expanded. Together with [`MAX_NODES`],
/// [`MAX_GPUS_PER_NODE`] and [`MAX_MIG_PER_GPU`] it bounds the memory and time a cluster file can cost to load.
pub const MAX_GPUS: u64 = 250_000;

/// One problem found in a configuration or job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the offending field, e.g. `nodes[2].pool`; empty for the whole document.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
    /// 1-based line and column, when the YAML parser knows them.
    pub location: Option<(usize, usize)>,
}

/// A file that could not be loaded: its name and every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as given by the user.
    pub file: String,
    /// What is wrong with it (at least one).
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file)?;
            if let Some((line, col)) = p.location {
                write!(f, ":{line}:{col}")?;
            }
            if p.field.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.field, p.message)?;
            }
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(file: &str, field: &str, message: String) -> Self {
        ConfigError {
            file: file.to_string(),
            problems: vec![Problem { field: field.to_string(), message, location: None }],
        }
    }
}

/// Scheduling settings of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulingConfig {
    /// The default policy (`scheduling.policy`); the CLI's `--policy` overrides it.
    pub policy: Option<PolicySpec>,
    /// The target workload FGD measures fragmentation against (`scheduling.fgd_target_workload`); when empty, FGD
    /// learns the mix from the jobs it has seen.
    pub fgd_target_workload: Vec<WorkloadShare>,
    /// `scheduling.max_feasible_nodes`: a replica goes to the best of the first this-many feasible nodes instead of
    /// the best of all (for very large clusters; kube-scheduler's `percentageOfNodesToScore` as a count). 0, the
    /// default: every candidate is scored.
    pub max_feasible_nodes: u32,
    /// `scheduling.max_grace`: the longest SIGTERM → SIGKILL grace period a job may ask for, seconds (default
    /// [`crate::run::DEFAULT_MAX_GRACE_S`]).
    pub max_grace_s: u64,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        SchedulingConfig {
            policy: None,
            fgd_target_workload: Vec::new(),
            max_feasible_nodes: 0,
            max_grace_s: crate::run::DEFAULT_MAX_GRACE_S,
        }
    }
}

/// One entry of a declared target workload: a replica shape and its relative weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadShare {
    /// The replica's resources.
    pub resources: Resources,
    /// Relative weight (any positive number; shares are normalised).
    pub weight: u32,
}

/// A queue jobs are charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Name jobs refer to (`queue:`).
    pub name: String,
    /// Fair-share weight (≥ 1).
    pub weight: u32,
    /// GPU milli the queue may hold per pool (pool id → milli); pools not listed are unlimited.
    pub quota_milli: BTreeMap<String, u64>,
}

/// A validated cluster: zones, pools, residency classes, nodes and scheduling settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Zones, in file order.
    pub zones: Vec<Zone>,
    /// Pools, in file order.
    pub pools: Vec<Pool>,
    /// Residency classes, in file order.
    pub residency_classes: Vec<ResidencyClass>,
    /// Nodes, in file order, `count` expanded.
    pub nodes: Vec<Node>,
    /// Scheduling settings.
    pub scheduling: SchedulingConfig,
    /// Queues; when the file declares none, one queue `default` of weight 1 without quotas.
    pub queues: Vec<QueueConfig>,
}

impl ClusterConfig {
    /// Loads and validates a cluster file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(&file, "", format!("cannot read the file: {e}")))?;
        Self::from_yaml(&file, &text)
    }

    /// Parses and validates cluster YAML; `file` names the source in errors.
    pub fn from_yaml(file: &str, text: &str) -> Result<Self, ConfigError> {
        let raw: RawCluster = parse_yaml_file(file, text)?;
        let mut v = Validator::default();
        let cfg = raw.validate(&mut v);
        v.finish(file).map(|_| cfg)
    }

    /// The residency class named `name`.
    pub fn class(&self, name: &str) -> Option<&ResidencyClass> {
        self.residency_classes.iter().find(|c| c.name == name)
    }

    /// The zone with id `id`.
    pub fn zone(&self, id: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.id == id)
    }

    /// Problems of `job` against this cluster: an unknown residency class. Field paths are prefixed with `prefix`.
    pub fn check_job(&self, job: &Job, prefix: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.class(&job.residency).is_none() {
            let known: Vec<&str> = self.residency_classes.iter().map(|c| c.name.as_str()).collect();
            out.push(Problem {
                field: format!("{prefix}residency"),
                message: format!(
                    "unknown residency class {:?}; the cluster defines [{}]",
                    job.residency,
                    known.join(", ")
                ),
                location: None,
            });
        }
        if let Some(run) = &job.run
            && run.grace_s > self.scheduling.max_grace_s
        {
            out.push(Problem {
                field: format!("{prefix}run.grace"),
                message: format!(
                    "{} s is over this cluster's maximum of {} s (scheduling.max_grace); ask for less",
                    run.grace_s, self.scheduling.max_grace_s
                ),
                location: None,
            });
        }
        out
    }
}

/// Loads a job file: either one job, or a document with a `jobs:` list (placed in that order).
pub fn load_jobs(path: &Path) -> Result<Vec<Job>, ConfigError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::one(&file, "", format!("cannot read the file: {e}")))?;
    jobs_from_yaml(&file, &text)
}

/// Parses and validates job YAML (one job, or `jobs: [...]`); `file` names the source in errors.
pub fn jobs_from_yaml(file: &str, text: &str) -> Result<Vec<Job>, ConfigError> {
    parse_jobs(file, text).map(|(jobs, _)| jobs)
}

/// The jobs of a job file, and whether it was a `jobs:` list (field paths then start with `jobs[i].`).
fn parse_jobs(file: &str, text: &str) -> Result<(Vec<Job>, bool), ConfigError> {
    let probe: serde_yaml_ng::Value = parse_yaml_file(file, text)?;
    let is_list = probe.as_mapping().is_some_and(|m| m.contains_key("jobs"));
    let mut v = Validator::default();
    let jobs = if is_list {
        let raw: RawJobList = parse_yaml_file(file, text)?;
        if raw.jobs.is_empty() {
            v.problem("jobs", "the list is empty; add at least one job".into());
        }
        if raw.jobs.len() > MAX_JOBS_PER_FILE {
            v.problem(
                "jobs",
                format!("has {} jobs; a job file may hold at most {MAX_JOBS_PER_FILE}; split it", raw.jobs.len()),
            );
            return Err(ConfigError { file: file.to_string(), problems: v.problems });
        }
        raw.jobs.into_iter().enumerate().map(|(i, j)| j.validate(&mut v, &format!("jobs[{i}]."))).collect()
    } else {
        let raw: RawJob = parse_yaml_file(file, text)?;
        vec![raw.validate(&mut v, "")]
    };
    v.finish(file).map(|_| (jobs, is_list))
}

impl ClusterConfig {
    /// Parses job YAML and checks it against this cluster (known residency classes), with field paths as written
    /// in the file.
    pub fn jobs_from_yaml(&self, file: &str, text: &str) -> Result<Vec<Job>, ConfigError> {
        let (jobs, is_list) = parse_jobs(file, text)?;
        let problems: Vec<Problem> = jobs
            .iter()
            .enumerate()
            .flat_map(|(i, j)| self.check_job(j, &if is_list { format!("jobs[{i}].") } else { String::new() }))
            .collect();
        if problems.is_empty() { Ok(jobs) } else { Err(ConfigError { file: file.to_string(), problems }) }
    }

    /// [`ClusterConfig::jobs_from_yaml`] on a file.
    pub fn load_jobs(&self, path: &Path) -> Result<Vec<Job>, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(&file, "", format!("cannot read the file: {e}")))?;
        self.jobs_from_yaml(&file, &text)
    }
}

/// Parses YAML `text` into `T` with the errors of the configuration files: file, line, column, field path.
pub fn parse_yaml_file<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::one(file, "", "the file is empty; see examples/ for the format".into()));
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        // serde_yaml_ng appends " at line L column C" to its messages; the location is printed separately.
        let mut message = inner.to_string();
        if let Some(cut) = message.find(" at line ") {
            message.truncate(cut);
        }
        // Segments serde could not name ("?", inside a malformed flow) are dropped: "zones[0].?" → "zones[0]".
        let field: String = field.split('.').filter(|seg| *seg != "?" && !seg.is_empty()).collect::<Vec<_>>().join(".");
        // The parser sometimes starts its message with the path too; say it once.
        if let Some(rest) = message.strip_prefix(&format!("{field}: ")) {
            message = rest.to_string();
        }
        ConfigError { file: file.to_string(), problems: vec![Problem { field, message, location }] }
    })
}

/// Collects problems during validation.
#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, field: &str, message: String) {
        self.problems.push(Problem { field: field.to_string(), message, location: None });
    }

    /// A count or size that must be at least `min`; returns it, or `min` after recording a problem.
    fn at_least(&mut self, field: &str, value: i64, min: i64) -> u64 {
        if value < min {
            let what = if value < 0 { "is negative" } else { "is too small" };
            self.problem(field, format!("{value} {what}; it must be at least {min}"));
            return min.max(0) as u64;
        }
        value as u64
    }

    fn nonempty(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.problem(field, "must not be empty".into());
        }
        self.short(field, value);
    }

    /// A string of at most [`MAX_NAME_LEN`] bytes.
    fn short(&mut self, field: &str, value: &str) {
        if value.len() > MAX_NAME_LEN {
            self.problem(field, format!("is {} bytes long; at most {MAX_NAME_LEN} are allowed", value.len()));
        }
    }

    /// A value that must be at most `max` (see [`crate::limits`]); returns it, or `max` after recording a problem.
    fn at_most(&mut self, field: &str, value: u64, max: u64, unit: &str) -> u64 {
        if value > max {
            self.problem(field, format!("{value} is over the limit of {max} {unit}"));
            return max;
        }
        value
    }

    /// A list of at most [`MAX_LIST_LEN`] entries; false (after recording a problem) when it is longer.
    fn list(&mut self, field: &str, len: usize) -> bool {
        if len > MAX_LIST_LEN {
            self.problem(field, format!("has {len} entries; at most {MAX_LIST_LEN} are allowed"));
            return false;
        }
        true
    }

    fn finish(self, file: &str) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { file: file.to_string(), problems: self.problems })
        }
    }
}

fn unique<'a>(v: &mut Validator, what: &str, ids: impl Iterator<Item = (String, &'a str)>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (field, id) in ids {
        v.nonempty(&field, id);
        if !seen.insert(id.to_string()) {
            v.problem(&field, format!("duplicate {what} {id:?}; each {what} must be unique"));
        }
    }
    seen
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    zones: Vec<Zone>,
    pools: Vec<Pool>,
    #[serde(default)]
    residency_classes: Vec<RawClass>,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    scheduling: RawScheduling,
    #[serde(default)]
    queues: Vec<RawQueue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    name: String,
    #[serde(default = "one")]
    weight: i64,
    #[serde(default)]
    quota_milli: BTreeMap<String, i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: String,
    #[serde(default)]
    description: String,
    countries: Option<Vec<String>>,
    jurisdictions: Option<Vec<String>>,
    operator_hq_in: Option<Vec<String>>,
    #[serde(default)]
    certifications: Vec<String>,
    zones: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    pool: String,
    count: Option<i64>,
    cpu_milli: i64,
    memory_mib: i64,
    gpus: Option<RawGpus>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScheduling {
    policy: Option<String>,
    #[serde(default)]
    fgd_target_workload: Vec<RawShare>,
    #[serde(default)]
    max_feasible_nodes: i64,
    max_grace: Option<run::RawDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShare {
    #[serde(flatten)]
    resources: RawResources,
    weight: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobList {
    jobs: Vec<RawJob>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: String,
    kind: Purpose,
    #[serde(default = "default_queue")]
    queue: String,
    #[serde(default)]
    priority: i64,
    residency: String,
    #[serde(default = "one")]
    replicas: i64,
    resources: RawResources,
    #[serde(default)]
    topology: RawTopology,
    run: Option<run::RawRun>,
    model: Option<String>,
}

fn default_queue() -> String {
    "default".into()
}

fn one() -> i64 {
    1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    /// Absent: `prefer` for 2+ GPUs per replica, `none` otherwise.
    nvlink: Option<NvlinkWish>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(default)]
    gpus: i64,
    gpu_milli: Option<i64>,
    #[serde(default)]
    gpu_models: Vec<String>,
    cpu_milli: i64,
    memory_mib: i64,
}

impl RawResources {
    fn validate(self, v: &mut Validator, p: &str) -> Resources {
        let gpus = v.at_least(&format!("{p}gpus"), self.gpus, 0);
        let gpus = if gpus > MAX_GPUS_PER_REPLICA {
            v.problem(
                &format!("{p}gpus"),
                format!(
                    "{gpus} is over the limit of {MAX_GPUS_PER_REPLICA} GPUs per replica (a replica runs on one \
                     node); use more replicas"
                ),
            );
            0
        } else {
            gpus as u32
        };
        let milli_field = format!("{p}gpu_milli");
        let gpu_milli = match (gpus, self.gpu_milli) {
            (0, None | Some(0)) => 0,
            (0, Some(m)) => {
                v.problem(&milli_field, format!("is {m} but gpus is 0; set gpus to 1 or remove gpu_milli"));
                0
            }
            (_, None) => GPU_MILLI,
            (_, Some(m)) if m <= 0 || m > i64::from(GPU_MILLI) => {
                v.problem(&milli_field, format!("{m} is out of range; a GPU has 1000 milli, so use 1 to 1000"));
                GPU_MILLI
            }
            (g, Some(m)) if g > 1 && m < i64::from(GPU_MILLI) => {
                v.problem(
                    &milli_field,
                    format!(
                        "{m} with gpus {g}: only a single GPU can be shared; ask for gpus 1 with gpu_milli {m}, \
                         or whole GPUs (gpu_milli 1000)"
                    ),
                );
                GPU_MILLI
            }
            (_, Some(m)) => m as u32,
        };
        if gpus == 0 && !self.gpu_models.is_empty() {
            v.problem(&format!("{p}gpu_models"), "is set but gpus is 0; set gpus or remove gpu_models".into());
        }
        if v.list(&format!("{p}gpu_models"), self.gpu_models.len()) {
            for (i, m) in self.gpu_models.iter().enumerate() {
                v.nonempty(&format!("{p}gpu_models[{i}]"), m);
            }
        }
        let (cpu, mem) = (format!("{p}cpu_milli"), format!("{p}memory_mib"));
        let cpu_milli = v.at_least(&cpu, self.cpu_milli, 1);
        let memory_mib = v.at_least(&mem, self.memory_mib, 1);
        Resources {
            gpus,
            gpu_milli,
            gpu_models: self.gpu_models,
            cpu_milli: v.at_most(&cpu, cpu_milli, MAX_CPU_MILLI, "milli-cores"),
            memory_mib: v.at_most(&mem, memory_mib, MAX_MEMORY_MIB, "MiB"),
        }
    }
}

impl RawJob {
    fn validate(self, v: &mut Validator, p: &str) -> Job {
        v.nonempty(&format!("{p}name"), &self.name);
        v.nonempty(&format!("{p}queue"), &self.queue);
        v.nonempty(&format!("{p}residency"), &self.residency);
        let priority = i32::try_from(self.priority).unwrap_or_else(|_| {
            v.problem(&format!("{p}priority"), format!("{} is out of range for a 32-bit priority", self.priority));
            0
        });
        let replicas = v.at_least(&format!("{p}replicas"), self.replicas, 1);
        let replicas = if replicas > MAX_REPLICAS {
            v.problem(
                &format!("{p}replicas"),
                format!("{replicas} is over the limit of {MAX_REPLICAS} replicas per job; split the job"),
            );
            1
        } else {
            replicas as u32
        };
        let resources = self.resources.validate(v, &format!("{p}resources."));
        let nvlink =
            self.topology.nvlink.unwrap_or(if resources.gpus >= 2 { NvlinkWish::Prefer } else { NvlinkWish::None });
        if nvlink != NvlinkWish::None && resources.gpus < 2 {
            v.problem(
                &format!("{p}topology.nvlink"),
                "an NVLink wish needs gpus of 2 or more; remove it or ask for more GPUs".into(),
            );
        }
        let model = self.model.and_then(|m| {
            crate::model_ref::for_job(self.kind, &m).map_err(|e| v.problem(&format!("{p}model"), e)).ok()
        });
        Job {
            model,
            exception: None,
            name: self.name,
            kind: self.kind,
            queue: self.queue,
            priority,
            residency: self.residency,
            replicas,
            resources,
            nvlink,
            run: self.run.map(|r| Box::new(r.validate(v, &format!("{p}run.")))),
        }
    }
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// A job as written in YAML, before validation: for formats that embed jobs (e.g. simulator scenarios).
#[derive(Deserialize)]
#[serde(transparent)]
pub struct JobSpec(RawJob);

impl JobSpec {
    /// Validates the job; problems name fields under `prefix` (e.g. `streams[2].job.`).
    pub fn validate(self, prefix: &str) -> Result<Job, Vec<Problem>> {
        let mut v = Validator::default();
        let job = self.0.validate(&mut v, prefix);
        if v.problems.is_empty() { Ok(job) } else { Err(v.problems) }
    }
}

#[cfg(test)]
mod tests;
