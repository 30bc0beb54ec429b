//! Replay mode: jobs arrive over time, wait in a queue, run for a while and leave — on a Sovra cluster with zones,
//! pools and residency classes, scheduled by the deployed scheduler's own engine ([`sovra_engine::Engine`]) on a
//! simulated clock.
//!
//! A **scenario** (YAML, `examples/scenario.yaml`) names a cluster file and *streams* of jobs: a job template, how
//! many, an arrival process (`every_minutes` or `poisson_per_hour`) and a duration distribution (`fixed_minutes`,
//! `exponential_mean_minutes`, `uniform_minutes: [lo, hi]`). Optionally a `plan:` section for `sovra plan`.
//!
//! **Queueing is the engine's.** The replay builds an `Engine` over the cluster with the cluster file's `queues:`
//! (one `default` queue when it has none, as the scheduler service does), the scenario's policy and seed, and
//! drives it exactly as the service does, one scheduling cycle per request: an arrival is `submit` then one
//! `schedule()`; a completion is `finished(id, true)` then one `schedule()`; every job a cycle placed is reported
//! running — `started(id)` then one `schedule()`, smallest id first, until no job is left placed (what a runner
//! reporting `running` does). So the order of a cycle (priority, then DRF fair share across queues, then
//! submission), quotas, whole-gang preemption, backfill reservations, the incremental cycle and the retry skipping
//! by [`sovra_engine::shape_key`] are the deployed scheduler's, not a model of it. A job no permitted pool could
//! ever hold is refused by the engine at submit (never queued). Events are taken in time order, completions before
//! arrivals at equal times, then by arrival order.
//!
//! **Preemption.** A preempted job goes back to pending in the engine and loses its work: when it is placed again
//! it **restarts from scratch** and runs its full duration; the completion its interrupted run would have had is
//! dropped. Its trace keeps every run (start, end, placement, whether it was preempted).
//!
//! **Metrics.** A job's queue wait is all the time it spent pending: arrival to first start, plus each preemption
//! to the following restart; jobs pending at the horizon count with their wait so far (a lower bound). Wait
//! percentiles are over all jobs that were not refused. Allocated GPU milli per pool, sampled at a fixed interval.
//! Every placement is re-checked against its job's residency class and kind, independently of the core's filters:
//! the count of violations is reported and must be 0 (the replay fails otherwise). [`timeline`] returns, besides
//! the result, each job's [`JobTrace`].

use crate::fill::SplitMix;
pub use crate::scenario::{Arrival, Duration, Offer, Plan, Scenario, Stream, Target, limits};
use serde::Serialize;
use sovra_domain::{ClusterConfig, Job, satisfies};
use sovra_placement::Decision;
use std::collections::BTreeMap;

mod run;

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
    /// Jobs that started (at least once).
    pub started: usize,
    /// Jobs refused on arrival: no permitted pool could ever hold them.
    pub refused: usize,
    /// Jobs that never started by the horizon.
    pub unstarted: usize,
    /// Refused or never started, as a percentage of jobs.
    pub unserved_pct: f64,
    /// Preemptions: runs ended because a higher-priority job needed their resources (each restarts from scratch).
    pub preemptions: usize,
    /// Jobs preempted at least once.
    pub preempted_jobs: usize,
    /// Jobs that had started, were preempted and were waiting again at the horizon.
    pub requeued_at_horizon: usize,
    /// Queue waits (minutes) over all jobs not refused: all the time each spent pending; waiting ones count with
    /// their wait so far.
    pub wait_minutes: Waits,
    /// The same per stream (by the stream's job name), for streams with jobs that were not refused.
    pub wait_minutes_by_stream: BTreeMap<String, Waits>,
    /// Names of refused job streams, with counts.
    pub refused_by_stream: BTreeMap<String, usize>,
    /// Sample times, seconds.
    pub sample_times_s: Vec<f64>,
    /// Per-pool utilisation.
    pub pools: Vec<PoolSeries>,
    /// Placements outside the job's permitted zones or pool purpose (always 0: the replay fails otherwise).
    pub residency_violations: usize,
}

/// Where one replica of a run was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaAt {
    /// Node name.
    pub node: String,
    /// Device indices on the node.
    pub devices: Vec<u32>,
    /// Milli-GPU taken on each device.
    pub milli_per_device: u32,
}

/// One run of a job: from a placement to its completion, its preemption, or the horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRun {
    /// When it was placed, seconds.
    pub start_s: f64,
    /// When it ended (completed or preempted), seconds; `None` if still running at the horizon.
    pub end_s: Option<f64>,
    /// Whether it ended by preemption.
    pub preempted: bool,
    /// Its placement, one entry per replica.
    pub replicas: Vec<ReplicaAt>,
}

/// What happened to one job of the scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobTrace {
    /// Job name (`<stream job name>-<k>`).
    pub name: String,
    /// The stream's job name.
    pub stream: String,
    /// Arrival, seconds.
    pub arrival_s: f64,
    /// Run time it needs, seconds (each restart after a preemption needs all of it again).
    pub duration_s: f64,
    /// Refused at submit.
    pub refused: bool,
    /// Its runs, in order.
    pub runs: Vec<JobRun>,
    /// Times it was preempted, as the engine counts them.
    pub preemptions: u32,
    /// Its queue wait, minutes (see the module docs); `None` if refused.
    pub wait_minutes: Option<f64>,
}

/// Why a replay failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The engine could not be built over the cluster.
    #[error("{0}")]
    Cluster(#[from] sovra_engine::EngineError),
    /// The engine did not accept a job (other than refusing it as unresolvable), e.g. an unknown queue.
    #[error("job {job}: {error}")]
    Submit {
        /// The job's name.
        job: String,
        /// The engine's answer.
        error: Box<sovra_engine::SubmitError>,
    },
    /// The engine refused a lifecycle change the replay made (a bug: the replay lost track of a job's state).
    #[error("job {job}: {error}")]
    Lifecycle {
        /// The job's name.
        job: String,
        /// The engine's answer.
        error: Box<sovra_engine::JobError>,
    },
    /// A placement outside its job's permitted zones or pool purpose (a bug of the core's filters).
    #[error("{0} placements outside permitted zones or pool purposes")]
    Residency(usize),
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

/// One job of the scenario before it is submitted.
pub(crate) struct Arriving {
    /// Arrival, seconds.
    pub(crate) time: f64,
    /// Its stream's index.
    pub(crate) stream: usize,
    /// The job (named `<name>-<k>`).
    pub(crate) job: Job,
    /// Run time, seconds.
    pub(crate) duration: f64,
}

/// Materialises the arrivals before the horizon, in time order (then stream order).
fn arrivals(s: &Scenario) -> Vec<Arriving> {
    let mut jobs = Vec::new();
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
            let duration = draw_duration(&mut rng, st.duration);
            jobs.push(Arriving { time: t, stream: i, job, duration });
        }
    }
    jobs.sort_by(|a, b| a.time.total_cmp(&b.time).then(a.stream.cmp(&b.stream)));
    jobs
}

/// The cluster's queues, as the scheduler service takes them (the engine's [`sovra_engine::queues_of`]).
pub use sovra_engine::queues_of;

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
pub fn replay(s: &Scenario, cluster: &ClusterConfig) -> Result<ReplayResult, ReplayError> {
    run::run(s, cluster, false).map(|(r, _)| r)
}

/// [`replay`], and what happened to each job of the scenario (in arrival order).
pub fn timeline(s: &Scenario, cluster: &ClusterConfig) -> Result<(ReplayResult, Vec<JobTrace>), ReplayError> {
    run::run(s, cluster, true)
}

/// Sums up the traces of a finished replay (the pool series and sample times come from the run).
fn summarise(traces: &[JobTrace], sample_times_s: Vec<f64>, pools: Vec<PoolSeries>) -> ReplayResult {
    let mut waits: Vec<f64> = Vec::new();
    let mut by_stream: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut refused_by_stream: BTreeMap<String, usize> = BTreeMap::new();
    let (mut refused, mut unstarted, mut requeued) = (0, 0, 0);
    for t in traces {
        if t.refused {
            refused += 1;
            *refused_by_stream.entry(t.stream.clone()).or_default() += 1;
            continue;
        }
        match t.runs.last() {
            None => unstarted += 1,
            Some(r) if r.preempted => requeued += 1,
            Some(_) => {}
        }
        if let Some(w) = t.wait_minutes {
            waits.push(w);
            by_stream.entry(t.stream.clone()).or_default().push(w);
        }
    }
    let n = traces.len();
    ReplayResult {
        jobs: n,
        started: traces.iter().filter(|t| !t.runs.is_empty()).count(),
        refused,
        unstarted,
        unserved_pct: if n == 0 { 0.0 } else { 100.0 * (refused + unstarted) as f64 / n as f64 },
        preemptions: traces.iter().map(|t| t.preemptions as usize).sum(),
        preempted_jobs: traces.iter().filter(|t| t.preemptions > 0).count(),
        requeued_at_horizon: requeued,
        wait_minutes: percentiles(waits),
        wait_minutes_by_stream: by_stream.into_iter().map(|(k, v)| (k, percentiles(v))).collect(),
        refused_by_stream,
        sample_times_s,
        pools,
        residency_violations: 0,
    }
}
