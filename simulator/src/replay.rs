//! Replay mode: jobs arrive over time, wait in a queue, run for a while and leave — on a Sovra cluster with zones,
//! pools and residency classes, through the same placement core.
//!
//! A **scenario** (YAML, `examples/scenario.yaml`) names a cluster file and *streams* of jobs: a job template, how
//! many, an arrival process (`every_minutes` or `poisson_per_hour`) and a duration distribution (`fixed_minutes`,
//! `exponential_mean_minutes`, `uniform_minutes: [lo, hi]`). Optionally a `plan:` section for `sovra plan`.
//!
//! **Queueing.** Arrivals and completions are events in time order (completions first at equal times). An arriving
//! job that no permitted pool could ever hold — the core's explanation says *unresolvable* — is refused, not queued.
//! After every event the queue is scanned in priority order (higher first, then arrival order) and every job that
//! fits starts: small jobs may start before a waiting large one (greedy backfill, no reservation — the scheduler
//! service adds reservations). Within a scan, a job shape that did not fit is not retried.
//!
//! **Metrics.** Queue wait (start − arrival) percentiles over all jobs that were not refused; jobs still waiting at
//! the horizon count with their wait so far (a lower bound). Allocated GPU milli per pool, sampled at a fixed
//! interval. Every placement is re-checked against its job's residency class and kind: the count of violations is
//! reported and asserted to be 0.

use crate::fill::SplitMix;
use serde::{Deserialize, Serialize};
use sovra_domain::{
    ClusterConfig, ConfigError, Gpu, Health, Job, JobSpec, Node, PolicySpec, Problem, parse_yaml_file, satisfies,
};
use sovra_placement::{ClusterState, Decision, Placer};
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};

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
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![Problem {
                field: String::new(),
                message: format!("cannot read the file: {e}"),
                location: None,
            }],
        })?;
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
        let raw: RawScenario = parse_yaml_file(&file, text)?;
        let cluster = cluster(&raw.cluster)?;
        let mut problems = Vec::new();
        let mut problem = |field: String, message: String| problems.push(Problem { field, message, location: None });
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(raw.horizon_hours) {
            problem("horizon_hours".into(), format!("{} must be a positive number of hours", raw.horizon_hours));
        }
        let sample_minutes = raw.sample_minutes.unwrap_or((raw.horizon_hours * 60.0 / 200.0).max(1.0));
        if !positive(sample_minutes) {
            problem("sample_minutes".into(), format!("{sample_minutes} must be a positive number of minutes"));
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
                    job
                }
                Err(ps) => {
                    for pr in ps {
                        problem(pr.field, pr.message);
                    }
                    continue;
                }
            };
            if s.count < 1 || s.count > 1_000_000 {
                problem(format!("{p}count"), format!("{} must be from 1 to 1000000", s.count));
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
                count: s.count.clamp(1, 1_000_000) as u32,
                arrival: s.arrival,
                start_s: s.start_hour * 3600.0,
                duration: s.duration,
            });
        }
        let plan = raw.plan.map(|p| {
            if p.offers.is_empty() {
                problem("plan.offers".into(), "is empty; offer at least one node type".into());
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
                    if o.max > 10_000 || o.gpu_count > 64 {
                        problem(format!("{f}max"), "at most 10000 nodes of at most 64 GPUs per offer".into());
                    }
                    Offer {
                        name: o.name,
                        pool: o.pool,
                        max: o.max.clamp(1, 10_000) as u32,
                        cpu_milli: o.cpu_milli.max(1) as u64,
                        memory_mib: o.memory_mib.max(1) as u64,
                        gpu_model: o.gpu_model,
                        gpu_count: o.gpu_count.clamp(0, 64) as u32,
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
            seed: raw.seed.unwrap_or(42),
            horizon_s: raw.horizon_hours * 3600.0,
            policy,
            sample_s: sample_minutes * 60.0,
            streams,
            plan,
        })
    }
}

/// Utilisation of one pool over time.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSeries {
    /// Pool id.
    pub pool: String,
    /// Zone id.
    pub zone: String,
    /// GPU capacity, milli.
    pub capacity_milli: u64,
    /// Allocated milli at each sample time.
    pub used_milli: Vec<u64>,
}

/// Percentiles of queue wait, minutes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Waits {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// The outcome of one replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    /// Jobs that arrived before the horizon.
    pub jobs: usize,
    /// Jobs that started.
    pub started: usize,
    /// Jobs refused on arrival: no permitted pool could ever hold them.
    pub refused: usize,
    /// Jobs still waiting at the horizon.
    pub unstarted: usize,
    /// Refused or never started, as a percentage of jobs.
    pub unserved_pct: f64,
    /// Queue waits (minutes) over all jobs not refused; waiting ones count with their wait so far.
    pub wait_minutes: Waits,
    /// The same per stream (by the stream's job name), for streams with jobs that were not refused.
    pub wait_minutes_by_stream: BTreeMap<String, Waits>,
    /// Names of refused job streams, with counts.
    pub refused_by_stream: BTreeMap<String, usize>,
    /// Sample times, seconds.
    pub sample_times_s: Vec<f64>,
    /// Per-pool utilisation.
    pub pools: Vec<PoolSeries>,
    /// Placements outside the job's permitted zones or pool purpose (asserted 0).
    pub residency_violations: usize,
}

fn draw_interval(rng: &mut SplitMix, arrival: Arrival) -> f64 {
    match arrival {
        Arrival::EveryMinutes(m) => m * 60.0,
        Arrival::PoissonPerHour(r) => -(1.0 - unit(rng)).ln() * 3600.0 / r,
    }
}

fn draw_duration(rng: &mut SplitMix, d: Duration) -> f64 {
    60.0 * match d {
        Duration::FixedMinutes(m) => m,
        Duration::ExponentialMeanMinutes(m) => -(1.0 - unit(rng)).ln() * m,
        Duration::UniformMinutes([a, b]) => a + (b - a) * unit(rng),
    }
}

/// A uniform number in [0, 1).
fn unit(rng: &mut SplitMix) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// An event: (time, order within the time: completions 0 before arrivals 1, sequence).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Event {
    time: f64,
    kind: u8,
    seq: usize,
}

impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse for earliest first.
        o.time.total_cmp(&self.time).then(o.kind.cmp(&self.kind)).then(o.seq.cmp(&self.seq))
    }
}

/// Sovereignty check of one decision, independent of the core's filters: replicas whose pool's purpose differs
/// from the job's kind or whose zone fails the job's residency class, recomputed from the configuration.
fn violations_of(cluster: &ClusterConfig, job: &Job, d: &Decision) -> usize {
    let Some(class) = cluster.class(&job.residency) else { return d.replicas.len() };
    d.replicas
        .iter()
        .filter(|r| {
            let pool = cluster.pools.iter().find(|p| p.id == r.pool);
            let zone = pool.and_then(|p| cluster.zone(&p.zone));
            match (pool, zone) {
                (Some(p), Some(z)) => p.purpose != job.kind || !satisfies(z, class),
                _ => true,
            }
        })
        .count()
}

/// Nearest-rank percentiles of waits: the q-th percentile is the ⌈q·n⌉-th smallest value.
fn percentiles(mut waits: Vec<f64>) -> Waits {
    waits.sort_by(f64::total_cmp);
    let n = waits.len();
    let pct = |q: f64| if n == 0 { 0.0 } else { waits[((q * n as f64).ceil() as usize).clamp(1, n) - 1] };
    Waits { p50: pct(0.5), p95: pct(0.95), p99: pct(0.99), max: waits.last().copied().unwrap_or(0.0) }
}

/// Runs a scenario on `cluster` (the scenario's own, or a planned variant of it).
pub fn replay(s: &Scenario, cluster: &ClusterConfig) -> Result<ReplayResult, String> {
    let mut state = ClusterState::from_config(cluster).map_err(|e| e.to_string())?;
    let topo = state.topology().clone();
    let mut placer =
        Placer::new(s.policy.clone(), s.seed).with_target_workload(&cluster.scheduling.fgd_target_workload);
    // Materialise arrivals: (time, stream, job, duration).
    let mut jobs: Vec<(f64, usize, Job, f64)> = Vec::new();
    for (i, st) in s.streams.iter().enumerate() {
        let mut rng = SplitMix::new(s.seed ^ (0x5EED_0000 + i as u64));
        let mut t = st.start_s;
        for k in 0..st.count {
            if k > 0 || matches!(st.arrival, Arrival::PoissonPerHour(_)) {
                t += draw_interval(&mut rng, st.arrival);
            }
            if t >= s.horizon_s {
                break;
            }
            let mut job = st.job.clone();
            job.name = format!("{}-{k}", st.job.name);
            let d = draw_duration(&mut rng, st.duration);
            jobs.push((t, i, job, d));
        }
    }
    jobs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut events: BinaryHeap<Event> =
        jobs.iter().enumerate().map(|(seq, j)| Event { time: j.0, kind: 1, seq }).collect();
    let pool_zone: Vec<String> = topo.pools.iter().map(|p| topo.zones[p.zone].id.clone()).collect();
    let mut pools: Vec<PoolSeries> = topo
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| PoolSeries {
            pool: p.id.clone(),
            zone: pool_zone[i].clone(),
            capacity_milli: topo.pool_nodes[i]
                .iter()
                .map(|&n| u64::from(topo.nodes[n as usize].dev_count) * 1000)
                .sum(),
            used_milli: Vec::new(),
        })
        .collect();
    let mut used_by_pool = vec![0u64; topo.pools.len()];
    let mut running: Vec<Option<Decision>> = vec![None; jobs.len()];
    let mut started_at: Vec<Option<f64>> = vec![None; jobs.len()];
    let mut queue: Vec<usize> = Vec::new();
    let (mut refused, mut violations) = (0usize, 0usize);
    let mut refused_by_stream: BTreeMap<String, usize> = BTreeMap::new();
    let mut sample_times = Vec::new();
    let mut next_sample = 0.0;

    let apply = |d: &Decision, sign: i64, used: &mut Vec<u64>| {
        for r in &d.replicas {
            let pool = topo.nodes[r.node as usize].pool as usize;
            let milli: u64 = r.devices.iter().map(|a| u64::from(a.milli)).sum();
            used[pool] = if sign > 0 { used[pool] + milli } else { used[pool].saturating_sub(milli) };
        }
    };
    while let Some(ev) = events.pop() {
        if ev.time >= s.horizon_s {
            break;
        }
        while next_sample <= ev.time {
            sample_times.push(next_sample);
            for (p, series) in pools.iter_mut().enumerate() {
                series.used_milli.push(used_by_pool[p]);
            }
            next_sample += s.sample_s;
        }
        let (arrival, _, job, duration) = &jobs[ev.seq];
        if ev.kind == 0 {
            if let Some(d) = running[ev.seq].take() {
                state.release(&d);
                apply(&d, -1, &mut used_by_pool);
            }
        } else {
            match placer.place(&state, job) {
                Ok(d) => {
                    violations += violations_of(cluster, job, &d);
                    state.apply(&d).map_err(|e| e.to_string())?;
                    apply(&d, 1, &mut used_by_pool);
                    started_at[ev.seq] = Some(*arrival);
                    events.push(Event { time: arrival + duration, kind: 0, seq: ev.seq });
                    running[ev.seq] = Some(d);
                }
                Err(e) if e.unresolvable => {
                    refused += 1;
                    *refused_by_stream.entry(s.streams[jobs[ev.seq].1].job.name.clone()).or_default() += 1;
                }
                Err(_) => queue.push(ev.seq),
            }
            // An arrival frees nothing: the queue cannot have become placeable.
            continue;
        }
        // Something finished: scan the queue in priority order, starting what fits.
        queue.sort_by(|&a, &b| jobs[b].2.priority.cmp(&jobs[a].2.priority).then(a.cmp(&b)));
        let mut failed_shapes: Vec<(&str, &sovra_domain::Resources, u32)> = Vec::new();
        let mut still = Vec::with_capacity(queue.len());
        for &q in &queue {
            let job = &jobs[q].2;
            let shape = (job.residency.as_str(), &job.resources, job.replicas);
            if failed_shapes.contains(&shape) {
                still.push(q);
                continue;
            }
            match placer.place(&state, job) {
                Ok(d) => {
                    violations += violations_of(cluster, job, &d);
                    state.apply(&d).map_err(|e| e.to_string())?;
                    apply(&d, 1, &mut used_by_pool);
                    started_at[q] = Some(ev.time);
                    events.push(Event { time: ev.time + jobs[q].3, kind: 0, seq: q });
                    running[q] = Some(d);
                }
                Err(_) => {
                    failed_shapes.push(shape);
                    still.push(q);
                }
            }
        }
        queue = still;
    }
    while next_sample < s.horizon_s {
        sample_times.push(next_sample);
        for (p, series) in pools.iter_mut().enumerate() {
            series.used_milli.push(used_by_pool[p]);
        }
        next_sample += s.sample_s;
    }
    assert_eq!(violations, 0, "placements outside permitted zones");
    let mut waits: Vec<f64> = Vec::new();
    let mut by_stream: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut unstarted = 0;
    for (i, j) in jobs.iter().enumerate() {
        let w = match started_at[i] {
            Some(t) => (t - j.0) / 60.0,
            None if queue.contains(&i) => {
                unstarted += 1;
                (s.horizon_s - j.0) / 60.0
            }
            None => continue,
        };
        waits.push(w);
        by_stream.entry(s.streams[j.1].job.name.clone()).or_default().push(w);
    }
    let wait_minutes_by_stream = by_stream.into_iter().map(|(k, v)| (k, percentiles(v))).collect();
    let n = jobs.len();
    Ok(ReplayResult {
        jobs: n,
        started: started_at.iter().flatten().count(),
        refused,
        unstarted,
        unserved_pct: if n == 0 { 0.0 } else { 100.0 * (refused + unstarted) as f64 / n as f64 },
        wait_minutes: percentiles(waits),
        wait_minutes_by_stream,
        refused_by_stream,
        sample_times_s: sample_times,
        pools,
        residency_violations: violations,
    })
}
