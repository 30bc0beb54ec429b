//! The YAML configuration format for clusters (zones, pools, residency classes, nodes) and jobs, validated on load.
//!
//! Loading runs in two steps, as ripgrep does with its arguments: the text is deserialised into *raw* structs that
//! mirror the file (unknown fields are refused; numbers are read signed so that a negative value gets a clear
//! message instead of a type error), then the raw structs are validated into the domain types. Every problem names
//! the file, the field path (e.g. `nodes[2].gpus.count`) and what to do; all problems of a file are reported at
//! once.

use crate::job::{Job, NvlinkWish, Resources};
use crate::limits::{
    MAX_CPU_MILLI, MAX_GPUS_PER_REPLICA, MAX_JOBS_PER_FILE, MAX_LIST_LEN, MAX_MEMORY_MIB, MAX_NAME_LEN, MAX_REPLICAS,
};
use crate::node::{GPU_MILLI, Gpu, Health, MigInstance, Node};
use crate::policy::PolicySpec;
use crate::zone::{Pool, Purpose, ResidencyClass, Zone};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulingConfig {
    /// The default policy (`scheduling.policy`); the CLI's `--policy` overrides it.
    pub policy: Option<PolicySpec>,
    /// The target workload FGD measures fragmentation against (`scheduling.fgd_target_workload`); when empty, FGD
    /// learns the mix from the jobs it has seen.
    pub fgd_target_workload: Vec<WorkloadShare>,
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

/// Either a uniform set (`model`, `count`, ...) or an explicit `devices` list.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGpus {
    count: Option<i64>,
    model: Option<String>,
    memory_mib: Option<i64>,
    /// `all` (one island of every GPU), `none` (the default), or explicit islands in `nvlink_islands`.
    nvlink: Option<String>,
    nvlink_islands: Option<Vec<Vec<i64>>>,
    /// NUMA node of each GPU, by index.
    numa: Option<Vec<u32>>,
    /// MIG layout applied to every GPU of a uniform set.
    mig: Option<Vec<RawMig>>,
    devices: Option<Vec<RawDevice>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    model: String,
    memory_mib: i64,
    uuid: Option<String>,
    numa_node: Option<u32>,
    #[serde(default)]
    nvlink_peers: Vec<i64>,
    #[serde(default)]
    unhealthy: Option<String>,
    mig: Option<Vec<RawMig>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMig {
    profile: String,
    count: Option<i64>,
    memory_mib: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScheduling {
    policy: Option<String>,
    #[serde(default)]
    fgd_target_workload: Vec<RawShare>,
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
        Job {
            name: self.name,
            kind: self.kind,
            queue: self.queue,
            priority,
            residency: self.residency,
            replicas,
            resources,
            nvlink,
        }
    }
}

/// Memory of a MIG profile such as `3g.40gb`, in MiB.
fn mig_profile_memory(profile: &str) -> Option<u64> {
    let gb = profile.split_once('.')?.1.strip_suffix("gb")?;
    gb.parse::<u64>().ok()?.checked_mul(1024)
}

fn expand_mig(v: &mut Validator, p: &str, raw: Option<Vec<RawMig>>) -> Vec<MigInstance> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let raw = raw.unwrap_or_default();
    let entries = raw.len();
    for (i, m) in raw.into_iter().enumerate() {
        let f = format!("{p}[{i}]");
        let count = v.at_least(&format!("{f}.count"), m.count.unwrap_or(1), 1);
        let memory = match m.memory_mib {
            Some(mem) => v.at_least(&format!("{f}.memory_mib"), mem, 1),
            None => mig_profile_memory(&m.profile).unwrap_or_else(|| {
                v.problem(
                    &format!("{f}.profile"),
                    format!(
                        "cannot read the memory of profile {:?}; write it like 3g.40gb or set memory_mib",
                        m.profile
                    ),
                );
                1
            }),
        };
        if count > MAX_MIG_PER_GPU {
            v.problem(&format!("{f}.count"), format!("{count} instances; a GPU has at most 7 MIG instances"));
        }
        total = total.saturating_add(count);
        while (out.len() as u64) < total.min(MAX_MIG_PER_GPU) {
            out.push(MigInstance { profile: m.profile.clone(), memory_mib: memory });
        }
    }
    if entries > 1 && total > MAX_MIG_PER_GPU {
        v.problem(p, format!("{total} instances in all; a GPU has at most 7 MIG instances"));
    }
    out
}

impl RawGpus {
    fn validate(self, v: &mut Validator, p: &str, node_name: &str) -> Vec<Gpu> {
        let mut gpus: Vec<Gpu> = Vec::new();
        if let Some(devices) = self.devices {
            for (field, set) in [
                ("count", self.count.is_some()),
                ("model", self.model.is_some()),
                ("memory_mib", self.memory_mib.is_some()),
                ("nvlink", self.nvlink.is_some()),
                ("numa", self.numa.is_some()),
                ("mig", self.mig.is_some()),
            ] {
                if set {
                    v.problem(&format!("{p}{field}"), "cannot be combined with devices; set it per device".into());
                }
            }
            if devices.len() as u64 > MAX_GPUS_PER_NODE {
                v.problem(
                    &format!("{p}devices"),
                    format!("{} GPUs on one node; at most {MAX_GPUS_PER_NODE} are supported", devices.len()),
                );
                return gpus;
            }
            let n = devices.len() as i64;
            for (i, d) in devices.into_iter().enumerate() {
                let f = format!("{p}devices[{i}]");
                v.nonempty(&format!("{f}.model"), &d.model);
                let mut peers = Vec::new();
                for (j, peer) in d.nvlink_peers.iter().enumerate() {
                    if *peer < 0 || *peer >= n || *peer == i as i64 {
                        v.problem(
                            &format!("{f}.nvlink_peers[{j}]"),
                            format!("{peer} is not another GPU of this node (indices 0 to {})", n - 1),
                        );
                    } else {
                        peers.push(*peer as u32);
                    }
                }
                gpus.push(Gpu {
                    uuid: d.uuid.unwrap_or_else(|| format!("GPU-{node_name}-{i}")),
                    model: d.model,
                    memory_mib: v.at_least(&format!("{f}.memory_mib"), d.memory_mib, 1),
                    numa_node: d.numa_node,
                    nvlink_peers: peers,
                    health: match d.unhealthy {
                        None => Health::Healthy,
                        Some(reason) => Health::Unhealthy { reason },
                    },
                    mig: expand_mig(v, &format!("{f}.mig"), d.mig),
                });
            }
            // NVLink is symmetric: a link listed on one side only is a configuration mistake.
            for i in 0..gpus.len() {
                for &peer in &gpus[i].nvlink_peers.clone() {
                    if !gpus[peer as usize].nvlink_peers.contains(&(i as u32)) {
                        v.problem(
                            &format!("{p}devices[{peer}].nvlink_peers"),
                            format!("GPU {i} lists {peer} as an NVLink peer but not the reverse; list both"),
                        );
                    }
                }
            }
            return gpus;
        }
        let count = v.at_least(&format!("{p}count"), self.count.unwrap_or(0), 1);
        let Some(model) = self.model else {
            v.problem(&format!("{p}model"), "is missing; name the GPU model, e.g. H100-80GB".into());
            return gpus;
        };
        v.nonempty(&format!("{p}model"), &model);
        let memory = match self.memory_mib {
            Some(m) => v.at_least(&format!("{p}memory_mib"), m, 1),
            None => {
                v.problem(&format!("{p}memory_mib"), "is missing; give the memory of one GPU in MiB".into());
                1
            }
        };
        if count > MAX_GPUS_PER_NODE {
            v.problem(
                &format!("{p}count"),
                format!("{count} GPUs on one node; at most {MAX_GPUS_PER_NODE} are supported"),
            );
            return gpus;
        }
        let islands: Vec<Vec<u32>> = match (self.nvlink.as_deref(), self.nvlink_islands) {
            (Some(_), Some(_)) => {
                v.problem(&format!("{p}nvlink_islands"), "cannot be combined with nvlink; keep one".into());
                vec![]
            }
            (None | Some("none"), None) => vec![],
            (Some("all"), None) => vec![(0..count as u32).collect()],
            (Some(other), None) => {
                v.problem(
                    &format!("{p}nvlink"),
                    format!("{other:?} is not all or none; for partial NVLink use nvlink_islands"),
                );
                vec![]
            }
            (None, Some(islands)) => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for (i, island) in islands.iter().enumerate() {
                    let mut members = Vec::new();
                    for (j, g) in island.iter().enumerate() {
                        let f = format!("{p}nvlink_islands[{i}][{j}]");
                        if *g < 0 || *g as u64 >= count {
                            v.problem(&f, format!("GPU {g} does not exist (indices 0 to {})", count - 1));
                        } else if !seen.insert(*g) {
                            v.problem(&f, format!("GPU {g} is in two islands; an island is a set of GPUs"));
                        } else {
                            members.push(*g as u32);
                        }
                    }
                    out.push(members);
                }
                out
            }
        };
        if let Some(numa) = &self.numa
            && numa.len() as u64 != count
        {
            v.problem(&format!("{p}numa"), format!("has {} entries for {count} GPUs; give one per GPU", numa.len()));
        }
        let mig = expand_mig(v, &format!("{p}mig"), self.mig);
        for i in 0..count as u32 {
            let peers = islands
                .iter()
                .find(|isl| isl.contains(&i))
                .map(|isl| isl.iter().copied().filter(|&g| g != i).collect())
                .unwrap_or_default();
            gpus.push(Gpu {
                uuid: format!("GPU-{node_name}-{i}"),
                model: model.clone(),
                memory_mib: memory,
                numa_node: self.numa.as_ref().and_then(|n| n.get(i as usize).copied()),
                nvlink_peers: peers,
                health: Health::Healthy,
                mig: mig.clone(),
            });
        }
        gpus
    }
}

impl RawCluster {
    fn validate(self, v: &mut Validator) -> ClusterConfig {
        for (field, len) in [
            ("zones", self.zones.len()),
            ("pools", self.pools.len()),
            ("residency_classes", self.residency_classes.len()),
            ("queues", self.queues.len()),
            ("scheduling.fgd_target_workload", self.scheduling.fgd_target_workload.len()),
        ] {
            v.list(field, len);
        }
        for (i, z) in self.zones.iter().enumerate() {
            v.list(&format!("zones[{i}].certifications"), z.certifications.len());
            for (field, value) in [("region", &z.region), ("country", &z.country), ("operator_hq", &z.operator_hq)] {
                v.short(&format!("zones[{i}].{field}"), value);
            }
        }
        for (i, c) in self.residency_classes.iter().enumerate() {
            for (field, list) in [
                ("countries", &c.countries),
                ("jurisdictions", &c.jurisdictions),
                ("operator_hq_in", &c.operator_hq_in),
                ("zones", &c.zones),
                ("certifications", &Some(c.certifications.clone())),
            ] {
                v.list(&format!("residency_classes[{i}].{field}"), list.as_ref().map_or(0, Vec::len));
            }
        }
        for (i, q) in self.queues.iter().enumerate() {
            v.list(&format!("queues[{i}].quota_milli"), q.quota_milli.len());
        }
        let zone_ids =
            unique(v, "zone id", self.zones.iter().enumerate().map(|(i, z)| (format!("zones[{i}].id"), z.id.as_str())));
        for (i, z) in self.zones.iter().enumerate() {
            for (field, value) in [("country", &z.country), ("operator_hq", &z.operator_hq)] {
                if value.len() != 2 || !value.chars().all(|c| c.is_ascii_uppercase()) {
                    v.problem(
                        &format!("zones[{i}].{field}"),
                        format!("{value:?} is not an ISO 3166 alpha-2 code such as FR or DE"),
                    );
                }
            }
            v.nonempty(&format!("zones[{i}].jurisdiction"), &z.jurisdiction);
            v.nonempty(&format!("zones[{i}].operator"), &z.operator);
        }
        let pool_ids =
            unique(v, "pool id", self.pools.iter().enumerate().map(|(i, p)| (format!("pools[{i}].id"), p.id.as_str())));
        for (i, p) in self.pools.iter().enumerate() {
            if !zone_ids.contains(&p.zone) {
                v.problem(
                    &format!("pools[{i}].zone"),
                    format!("unknown zone {:?}; declared zones are [{}]", p.zone, join(&zone_ids)),
                );
            }
        }
        unique(
            v,
            "residency class",
            self.residency_classes
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("residency_classes[{i}].name"), c.name.as_str())),
        );
        let residency_classes: Vec<ResidencyClass> = self
            .residency_classes
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                for (j, z) in c.zones.iter().flatten().enumerate() {
                    if !zone_ids.contains(z) {
                        v.problem(
                            &format!("residency_classes[{i}].zones[{j}]"),
                            format!("unknown zone {z:?}; declared zones are [{}]", join(&zone_ids)),
                        );
                    }
                }
                for (field, list) in [
                    ("countries", &c.countries),
                    ("jurisdictions", &c.jurisdictions),
                    ("operator_hq_in", &c.operator_hq_in),
                    ("zones", &c.zones),
                ] {
                    if list.as_ref().is_some_and(|l| l.is_empty()) {
                        v.problem(
                            &format!("residency_classes[{i}].{field}"),
                            "is an empty list, which no zone can satisfy; remove it to allow any".into(),
                        );
                    }
                }
                ResidencyClass {
                    name: c.name,
                    description: c.description,
                    countries: c.countries,
                    jurisdictions: c.jurisdictions,
                    operator_hq_in: c.operator_hq_in,
                    certifications: c.certifications,
                    zones: c.zones,
                }
            })
            .collect();

        let mut nodes = Vec::new();
        let mut gpu_total = 0u64;
        // Set once the file exceeds MAX_NODES or MAX_GPUS: later entries are still checked but no longer expanded.
        let mut too_large = false;
        for (i, n) in self.nodes.into_iter().enumerate() {
            let p = format!("nodes[{i}].");
            v.nonempty(&format!("{p}name"), &n.name);
            if !pool_ids.contains(&n.pool) {
                v.problem(
                    &format!("{p}pool"),
                    format!("unknown pool {:?}; declared pools are [{}]", n.pool, join(&pool_ids)),
                );
            }
            let count = v.at_least(&format!("{p}count"), n.count.unwrap_or(1), 1);
            if count > 100_000 {
                v.problem(&format!("{p}count"), format!("{count} is more nodes than one entry may expand to (100000)"));
                continue;
            }
            let (cpu_field, mem_field) = (format!("{p}cpu_milli"), format!("{p}memory_mib"));
            let cpu = v.at_least(&cpu_field, n.cpu_milli, 1);
            let cpu = v.at_most(&cpu_field, cpu, MAX_CPU_MILLI, "milli-cores");
            let mem = v.at_least(&mem_field, n.memory_mib, 1);
            let mem = v.at_most(&mem_field, mem, MAX_MEMORY_MIB, "MiB");
            let width = (count - 1).to_string().len();
            let gpus_template = n.gpus.map(|g| g.validate(v, &format!("{p}gpus."), &n.name)).unwrap_or_default();
            if too_large {
                continue;
            }
            let field = if n.count.is_some() { format!("{p}count") } else { format!("nodes[{i}]") };
            let node_total = nodes.len() as u64 + count;
            let entry_gpus = count * gpus_template.len() as u64;
            if node_total > MAX_NODES {
                v.problem(
                    &field,
                    format!(
                        "this entry brings the file to {node_total} nodes; a cluster file may declare at most \
                         {MAX_NODES}"
                    ),
                );
                too_large = true;
                continue;
            }
            if gpu_total + entry_gpus > MAX_GPUS {
                v.problem(
                    &field,
                    format!(
                        "this entry brings the file to {} GPUs; a cluster file may declare at most {MAX_GPUS}",
                        gpu_total + entry_gpus
                    ),
                );
                too_large = true;
                continue;
            }
            gpu_total += entry_gpus;
            for k in 0..count {
                let name = if n.count.is_none() { n.name.clone() } else { format!("{}-{k:0width$}", n.name) };
                let gpus = gpus_template
                    .iter()
                    .map(|g| Gpu {
                        uuid: g.uuid.replacen(&format!("GPU-{}-", n.name), &format!("GPU-{name}-"), 1),
                        ..g.clone()
                    })
                    .collect();
                nodes.push(Node { name, pool: n.pool.clone(), cpu_milli: cpu, memory_mib: mem, gpus });
            }
        }
        let mut names = BTreeMap::new();
        for node in &nodes {
            *names.entry(node.name.as_str()).or_insert(0) += 1;
        }
        for (name, n) in names {
            if n > 1 {
                v.problem("nodes", format!("node name {name:?} appears {n} times; names must be unique"));
            }
        }

        let policy = self
            .scheduling
            .policy
            .and_then(|s| s.parse::<PolicySpec>().map_err(|e| v.problem("scheduling.policy", e)).ok());
        let fgd_target_workload = self
            .scheduling
            .fgd_target_workload
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let p = format!("scheduling.fgd_target_workload[{i}].");
                WorkloadShare {
                    resources: s.resources.validate(v, &p),
                    weight: v.at_least(&format!("{p}weight"), s.weight, 1).min(u64::from(u32::MAX)) as u32,
                }
            })
            .collect();
        unique(v, "queue", self.queues.iter().enumerate().map(|(i, q)| (format!("queues[{i}].name"), q.name.as_str())));
        let mut queues: Vec<QueueConfig> = self
            .queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let p = format!("queues[{i}].");
                let weight = v.at_least(&format!("{p}weight"), q.weight, 1).min(1_000_000) as u32;
                let mut quota_milli = BTreeMap::new();
                for (pool, milli) in q.quota_milli {
                    if !pool_ids.contains(&pool) {
                        v.problem(
                            &format!("{p}quota_milli.{pool}"),
                            format!("unknown pool {pool:?}; declared pools are [{}]", join(&pool_ids)),
                        );
                    }
                    quota_milli.insert(pool.clone(), v.at_least(&format!("{p}quota_milli.{pool}"), milli, 0));
                }
                QueueConfig { name: q.name, weight, quota_milli }
            })
            .collect();
        if queues.is_empty() {
            queues.push(QueueConfig { name: "default".into(), weight: 1, quota_milli: BTreeMap::new() });
        }
        ClusterConfig {
            zones: self.zones,
            pools: self.pools,
            residency_classes,
            nodes,
            scheduling: SchedulingConfig { policy, fgd_target_workload },
            queues,
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
mod tests {
    use super::*;

    /// A one-zone, one-pool cluster file with the given `nodes:` entries (flow-style YAML, one per line).
    fn cluster(nodes: &[String]) -> String {
        let mut text = "zones: [{id: z, country: DE, region: r, jurisdiction: EU, operator: o, operator_hq: DE, \
                        certifications: []}]\npools: [{id: p, zone: z, purpose: training}]\nnodes:\n"
            .to_string();
        for n in nodes {
            text.push_str(&format!("  - {n}\n"));
        }
        text
    }

    fn errors(text: &str) -> String {
        ClusterConfig::from_yaml("c.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn mig_profile_memory_too_large_is_a_problem_not_an_overflow() {
        let node = "{name: n, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {model: A100, count: 1, memory_mib: 1, \
                    mig: [{profile: 1g.99999999999999999gb}]}}";
        let e = errors(&cluster(&[node.into()]));
        assert!(e.contains("c.yaml: nodes[0].gpus.mig[0].profile: cannot read the memory of profile"), "{e}");
        assert_eq!(mig_profile_memory("3g.40gb"), Some(40 * 1024));
        assert_eq!(mig_profile_memory(&format!("1g.{}gb", u64::MAX / 1024 + 1)), None);
    }

    #[test]
    fn mig_instances_per_gpu_are_capped_over_all_entries() {
        let mig = "[{profile: 1g.10gb, count: 4}, {profile: 2g.20gb, count: 4}]";
        let node = |gpus: &str| format!("{{name: n, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {gpus}}}");
        let uniform = node(&format!("{{model: A100, count: 2, memory_mib: 1, mig: {mig}}}"));
        let e = errors(&cluster(&[uniform]));
        assert!(e.contains("c.yaml: nodes[0].gpus.mig: 8 instances in all; a GPU has at most 7 MIG instances"), "{e}");
        let device = node(&format!("{{devices: [{{model: A100, memory_mib: 1, mig: {mig}}}]}}"));
        let e = errors(&cluster(&[device]));
        assert!(e.contains("nodes[0].gpus.devices[0].mig: 8 instances in all"), "{e}");
        // Seven in two entries is fine.
        let ok =
            node("{model: A100, count: 1, memory_mib: 1, mig: [{profile: 3g.40gb, count: 2}, {profile: 1g.10gb}]}");
        let c = ClusterConfig::from_yaml("c.yaml", &cluster(&[ok])).unwrap();
        assert_eq!(c.nodes[0].gpus[0].mig.len(), 3);
    }

    #[test]
    fn devices_list_is_capped_at_64_gpus_like_a_uniform_set() {
        let devices = vec!["{model: L4, memory_mib: 1}"; 65].join(", ");
        let node = format!("{{name: n, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {{devices: [{devices}]}}}}");
        let e = errors(&cluster(&[node]));
        assert!(e.contains("c.yaml: nodes[0].gpus.devices: 65 GPUs on one node; at most 64 are supported"), "{e}");
    }

    #[test]
    fn nodes_and_gpus_of_a_file_are_capped_after_expansion() {
        // Entries of 60,000 nodes: each within the per-entry limit, the first two together over MAX_NODES.
        let entry = |name: &str, gpus: &str| {
            format!("{{name: {name}, count: 60000, pool: p, cpu_milli: 1, memory_mib: 1{gpus}}}")
        };
        let e = errors(&cluster(&[entry("a", ""), entry("b", ""), entry("c", "")]));
        assert_eq!(
            e,
            "c.yaml: nodes[1].count: this entry brings the file to 120000 nodes; a cluster file may declare at most 100000"
        );
        // 60,000 nodes of 8 GPUs: 480,000 GPUs, over MAX_GPUS.
        let e = errors(&cluster(&[entry("a", ", gpus: {model: H100, count: 8, memory_mib: 1}")]));
        assert_eq!(
            e,
            "c.yaml: nodes[0].count: this entry brings the file to 480000 GPUs; a cluster file may declare at most 250000"
        );
        let big =
            "{name: a, count: 62499, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {model: L4, count: 4, memory_mib: 1}}";
        let single = "{name: s, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {model: H100, count: 8, memory_mib: 1}}";
        let e = errors(&cluster(&[big.into(), single.into()]));
        assert_eq!(
            e,
            "c.yaml: nodes[1]: this entry brings the file to 250004 GPUs; a cluster file may declare at most 250000"
        );
    }

    #[test]
    fn gpus_beyond_u32_are_a_problem_not_truncated() {
        let job = "name: j\nkind: training\nresidency: r\nresources: {gpus: 4294967297, cpu_milli: 1, memory_mib: 1}\n";
        let e = jobs_from_yaml("j.yaml", job).unwrap_err().to_string();
        assert_eq!(
            e,
            "j.yaml: resources.gpus: 4294967297 is over the limit of 64 GPUs per replica (a replica runs on one node); \
             use more replicas"
        );
    }
}
