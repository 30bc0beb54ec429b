//! Scenario files for replay mode and capacity planning: parsing, validation and the limits on what a scenario may
//! ask for (see [`crate::replay`] for what a scenario means).

use serde::{Deserialize, Serialize};
use sovra_domain::{ClusterConfig, ConfigError, Gpu, Health, Job, JobSpec, Node, PolicySpec, Problem, parse_yaml_file};
use std::path::{Path, PathBuf};

/// Limits on what a scenario may ask for, so that a scenario file cannot make `sovra replay` or `sovra plan`
/// allocate without bound. Each is checked before anything is allocated for it; a scenario over one is refused
/// with the field and the limit (docs/simulator.md, "Limits").
pub mod limits {
    /// Largest scenario file, bytes.
    pub const MAX_SCENARIO_BYTES: u64 = 4 << 20;
    /// Longest simulated time, hours (ten years).
    pub const MAX_HORIZON_HOURS: f64 = 87_600.0;
    /// Most utilisation samples (`horizon_hours × 60 / sample_minutes`).
    pub const MAX_SAMPLES: f64 = 100_000.0;
    /// Most job streams.
    pub const MAX_STREAMS: usize = 1_000;
    /// Most jobs of one stream.
    pub const MAX_STREAM_JOBS: i64 = 1_000_000;
    /// Most jobs of all streams together.
    pub const MAX_JOBS: i64 = 1_000_000;
    /// Most offers in a plan.
    pub const MAX_OFFERS: usize = 16;
    /// Most nodes of one offer.
    pub const MAX_OFFER_NODES: i64 = 10_000;
    /// Most GPUs per offered node.
    pub const MAX_OFFER_GPUS: i64 = 64;
    /// Most GPUs of all offers at their maxima together (the largest cluster a plan replays on top of the
    /// scenario's own).
    pub const MAX_PLANNED_GPUS: i64 = 100_000;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    cluster: String,
    #[serde(default)]
    seed: Option<u64>,
    horizon_hours: f64,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    sample_minutes: Option<f64>,
    streams: Vec<RawStream>,
    #[serde(default)]
    plan: Option<RawPlan>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    job: JobSpec,
    count: i64,
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    arrival: Arrival,
    #[serde(default)]
    start_hour: f64,
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    duration: Duration,
}

/// How jobs of a stream arrive.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrival {
    /// One job every so many minutes.
    EveryMinutes(f64),
    /// A Poisson process with this many jobs per hour on average (seeded).
    PoissonPerHour(f64),
}

/// How long jobs of a stream run.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Duration {
    /// Always this many minutes.
    FixedMinutes(f64),
    /// Exponentially distributed with this mean (seeded).
    ExponentialMeanMinutes(f64),
    /// Uniform between the two bounds (seeded).
    UniformMinutes([f64; 2]),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    target: Target,
    offers: Vec<RawOffer>,
}

/// What a capacity plan must achieve.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// Every stream's 95th percentile of queue wait at most this many minutes (jobs still waiting count too).
    P95WaitMinutes(f64),
    /// At most this percentage of jobs refused or never started by the horizon.
    MaxUnservedPct(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffer {
    name: String,
    pool: String,
    max: i64,
    cpu_milli: i64,
    memory_mib: i64,
    gpu_model: String,
    gpu_count: i64,
    gpu_memory_mib: i64,
    #[serde(default)]
    nvlink: bool,
}

/// A node type that can be bought for a pool: `sovra plan` decides how many.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Offer {
    /// Name of the offer (node names are `<name>-<k>`).
    pub name: String,
    /// The pool the nodes join.
    pub pool: String,
    /// Most nodes of this type to consider.
    pub max: u32,
    /// CPU per node, milli.
    pub cpu_milli: u64,
    /// Memory per node, MiB.
    pub memory_mib: u64,
    /// GPU model.
    pub gpu_model: String,
    /// GPUs per node.
    pub gpu_count: u32,
    /// Memory per GPU, MiB.
    pub gpu_memory_mib: u64,
    /// All GPUs of a node on one NVLink island.
    pub nvlink: bool,
}

impl Offer {
    /// `n` nodes of this type.
    pub fn nodes(&self, n: u32) -> Vec<Node> {
        (0..n)
            .map(|k| Node {
                name: format!("{}-{k}", self.name),
                pool: self.pool.clone(),
                cpu_milli: self.cpu_milli,
                memory_mib: self.memory_mib,
                gpus: (0..self.gpu_count)
                    .map(|g| Gpu {
                        uuid: format!("GPU-{}-{k}-{g}", self.name),
                        model: self.gpu_model.clone(),
                        memory_mib: self.gpu_memory_mib,
                        numa_node: None,
                        nvlink_peers: if self.nvlink {
                            (0..self.gpu_count).filter(|&p| p != g).collect()
                        } else {
                            vec![]
                        },
                        health: Health::Healthy,
                        mig: vec![],
                    })
                    .collect(),
            })
            .collect()
    }
}

/// One stream of jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// The job template (instances are named `<name>-<i>`).
    pub job: Job,
    /// Number of jobs.
    pub count: u32,
    /// Arrival process.
    pub arrival: Arrival,
    /// When the first arrival may happen, seconds.
    pub start_s: f64,
    /// Duration distribution.
    pub duration: Duration,
}

/// The plan section: a target and the node types that may be bought.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What must be achieved.
    pub target: Target,
    /// Node types, each with a maximum count.
    pub offers: Vec<Offer>,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The scenario file.
    pub file: PathBuf,
    /// The cluster it runs on.
    pub cluster: ClusterConfig,
    /// Seed of arrivals, durations and tie-breaks.
    pub seed: u64,
    /// Simulated time, seconds.
    pub horizon_s: f64,
    /// Placement policy (default: the cluster's, else `best-fit,topology`).
    pub policy: PolicySpec,
    /// Sampling interval of utilisation, seconds.
    pub sample_s: f64,
    /// Job streams.
    pub streams: Vec<Stream>,
    /// Capacity plan, if any.
    pub plan: Option<Plan>,
}

impl Scenario {
    /// Loads and validates a scenario and the cluster it names (relative to the scenario's folder).
    pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
        let file = path.display().to_string();
        let whole = |message: String| ConfigError {
            file: file.clone(),
            problems: vec![Problem { field: String::new(), message, location: None }],
        };
        // The size is checked before the file is read.
        let len = std::fs::metadata(path).map_err(|e| whole(format!("cannot read the file: {e}")))?.len();
        if len > limits::MAX_SCENARIO_BYTES {
            return Err(whole(too_big(len)));
        }
        let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read the file: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Scenario::parse(&file, &text, |name| ClusterConfig::load(&dir.join(name)))
    }

    /// Parses and validates scenario `text` (`file` names it in errors); `cluster` loads the cluster file the
    /// scenario names (the fuzz target hands in a fixed cluster).
    pub fn parse(
        file: &str,
        text: &str,
        cluster: impl FnOnce(&str) -> Result<ClusterConfig, ConfigError>,
    ) -> Result<Scenario, ConfigError> {
        let file = file.to_string();
        if text.len() as u64 > limits::MAX_SCENARIO_BYTES {
            let message = too_big(text.len() as u64);
            return Err(ConfigError {
                file,
                problems: vec![Problem { field: String::new(), message, location: None }],
            });
        }
        let raw: RawScenario = parse_yaml_file(&file, text)?;
        let cluster = cluster(&raw.cluster)?;
        let mut problems = Vec::new();
        let mut problem = |field: String, message: String| problems.push(Problem { field, message, location: None });
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(raw.horizon_hours) {
            problem("horizon_hours".into(), format!("{} must be a positive number of hours", raw.horizon_hours));
        } else if raw.horizon_hours > limits::MAX_HORIZON_HOURS {
            problem(
                "horizon_hours".into(),
                format!("{} is over the limit of {} hours (ten years)", raw.horizon_hours, limits::MAX_HORIZON_HOURS),
            );
        }
        let sample_minutes = raw.sample_minutes.unwrap_or((raw.horizon_hours * 60.0 / 200.0).max(1.0));
        if !positive(sample_minutes) {
            problem("sample_minutes".into(), format!("{sample_minutes} must be a positive number of minutes"));
        } else if positive(raw.horizon_hours) && raw.horizon_hours * 60.0 / sample_minutes > limits::MAX_SAMPLES {
            problem(
                "sample_minutes".into(),
                format!(
                    "{sample_minutes} minutes over {} hours is {:.0} samples, over the limit of {}; sample less often \
                     (at least {:.3} minutes)",
                    raw.horizon_hours,
                    raw.horizon_hours * 60.0 / sample_minutes,
                    limits::MAX_SAMPLES,
                    raw.horizon_hours * 60.0 / limits::MAX_SAMPLES
                ),
            );
        }
        if raw.streams.len() > limits::MAX_STREAMS {
            problem(
                "streams".into(),
                format!("{} streams, over the limit of {}", raw.streams.len(), limits::MAX_STREAMS),
            );
        }
        let total: i64 = raw.streams.iter().map(|s| s.count.clamp(0, limits::MAX_STREAM_JOBS)).sum();
        if total > limits::MAX_JOBS {
            problem(
                "streams[].count".into(),
                format!("{total} jobs in all streams together, over the limit of {}", limits::MAX_JOBS),
            );
        }
        let policy = match raw.policy {
            Some(p) => p.parse().unwrap_or_else(|e| {
                problem("policy".into(), e);
                PolicySpec::default()
            }),
            None => cluster.scheduling.policy.clone().unwrap_or_default(),
        };
        if raw.streams.is_empty() {
            problem("streams".into(), "is empty; add at least one stream of jobs".into());
        }
        let mut streams = Vec::new();
        for (i, s) in raw.streams.into_iter().enumerate() {
            let p = format!("streams[{i}].");
            let job = match s.job.validate(&format!("{p}job.")) {
                Ok(job) => {
                    for pr in cluster.check_job(&job, &format!("{p}job.")) {
                        problem(pr.field, pr.message);
                    }
                    // The scheduler refuses a job of an unknown queue at submit: so does the scenario.
                    let queues = crate::replay::queues_of(&cluster);
                    if !queues.iter().any(|q| q.name == job.queue) {
                        let known: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
                        problem(
                            format!("{p}job.queue"),
                            format!(
                                "unknown queue {:?}; the cluster file's queues: are [{}]",
                                job.queue,
                                known.join(", ")
                            ),
                        );
                    }
                    job
                }
                Err(ps) => {
                    for pr in ps {
                        problem(pr.field, pr.message);
                    }
                    continue;
                }
            };
            if s.count < 1 || s.count > limits::MAX_STREAM_JOBS {
                problem(format!("{p}count"), format!("{} must be from 1 to {}", s.count, limits::MAX_STREAM_JOBS));
            }
            match s.arrival {
                Arrival::EveryMinutes(x) | Arrival::PoissonPerHour(x) if !positive(x) => {
                    problem(format!("{p}arrival"), format!("{x} must be a positive number"))
                }
                _ => {}
            }
            let bad_duration = match s.duration {
                Duration::FixedMinutes(x) | Duration::ExponentialMeanMinutes(x) => !positive(x),
                Duration::UniformMinutes([a, b]) => !(positive(a) && positive(b) && a <= b),
            };
            if bad_duration {
                problem(
                    format!("{p}duration"),
                    "must be positive minutes (uniform: [low, high] with low ≤ high)".into(),
                );
            }
            if !(s.start_hour.is_finite() && s.start_hour >= 0.0) {
                problem(format!("{p}start_hour"), format!("{} must be 0 or more", s.start_hour));
            }
            streams.push(Stream {
                job,
                count: s.count.clamp(1, limits::MAX_STREAM_JOBS) as u32,
                arrival: s.arrival,
                start_s: s.start_hour * 3600.0,
                duration: s.duration,
            });
        }
        let plan = raw.plan.map(|p| {
            if p.offers.is_empty() {
                problem("plan.offers".into(), "is empty; offer at least one node type".into());
            }
            if p.offers.len() > limits::MAX_OFFERS {
                problem(
                    "plan.offers".into(),
                    format!("{} offers, over the limit of {}", p.offers.len(), limits::MAX_OFFERS),
                );
            }
            let gpus: i64 = p
                .offers
                .iter()
                .map(|o| o.max.clamp(0, limits::MAX_OFFER_NODES) * o.gpu_count.clamp(0, limits::MAX_OFFER_GPUS))
                .sum();
            if gpus > limits::MAX_PLANNED_GPUS {
                problem(
                    "plan.offers".into(),
                    format!(
                        "{gpus} GPUs with every offer at its max, over the limit of {}; lower max or gpu_count",
                        limits::MAX_PLANNED_GPUS
                    ),
                );
            }
            let offers = p
                .offers
                .into_iter()
                .enumerate()
                .map(|(i, o)| {
                    let f = format!("plan.offers[{i}].");
                    if !cluster.pools.iter().any(|pl| pl.id == o.pool) {
                        problem(format!("{f}pool"), format!("unknown pool {:?} in the cluster file", o.pool));
                    }
                    for (name, v, min) in [
                        ("max", o.max, 1),
                        ("cpu_milli", o.cpu_milli, 1),
                        ("memory_mib", o.memory_mib, 1),
                        ("gpu_count", o.gpu_count, 0),
                        ("gpu_memory_mib", o.gpu_memory_mib, 1),
                    ] {
                        if v < min || v > 100_000_000 {
                            problem(format!("{f}{name}"), format!("{v} is out of range; use at least {min}"));
                        }
                    }
                    if o.max > limits::MAX_OFFER_NODES {
                        problem(
                            format!("{f}max"),
                            format!("{} is over the limit of {} nodes per offer", o.max, limits::MAX_OFFER_NODES),
                        );
                    }
                    if o.gpu_count > limits::MAX_OFFER_GPUS {
                        problem(
                            format!("{f}gpu_count"),
                            format!("{} is over the limit of {} GPUs per node", o.gpu_count, limits::MAX_OFFER_GPUS),
                        );
                    }
                    Offer {
                        name: o.name,
                        pool: o.pool,
                        max: o.max.clamp(1, limits::MAX_OFFER_NODES) as u32,
                        cpu_milli: o.cpu_milli.max(1) as u64,
                        memory_mib: o.memory_mib.max(1) as u64,
                        gpu_model: o.gpu_model,
                        gpu_count: o.gpu_count.clamp(0, limits::MAX_OFFER_GPUS) as u32,
                        gpu_memory_mib: o.gpu_memory_mib.max(1) as u64,
                        nvlink: o.nvlink,
                    }
                })
                .collect();
            match p.target {
                Target::P95WaitMinutes(x) | Target::MaxUnservedPct(x) if !(x.is_finite() && x >= 0.0) => {
                    problem("plan.target".into(), format!("{x} must be 0 or more"))
                }
                _ => {}
            }
            Plan { target: p.target, offers }
        });
        if !problems.is_empty() {
            return Err(ConfigError { file, problems });
        }
        Ok(Scenario {
            file: PathBuf::from(&file),
            cluster,
            seed: raw.seed.unwrap_or(sovra_placement::DEFAULT_SEED),
            horizon_s: raw.horizon_hours * 3600.0,
            policy,
            sample_s: sample_minutes * 60.0,
            streams,
            plan,
        })
    }
}

fn too_big(len: u64) -> String {
    format!("the file is {len} bytes, over the limit of {} bytes for a scenario", limits::MAX_SCENARIO_BYTES)
}
