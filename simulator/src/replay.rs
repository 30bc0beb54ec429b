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
//! service adds reservations). Within a scan, a job shape that did not fit is not retried; the shape is the engine's
//! ([`sovra_engine::shape_key`]: kind, residency, replicas, resources and NVLink wish), so both skip alike.
//!
//! **Metrics.** Queue wait (start − arrival) percentiles over all jobs that were not refused; jobs still waiting at
//! the horizon count with their wait so far (a lower bound). Allocated GPU milli per pool, sampled at a fixed
//! interval. Every placement is re-checked against its job's residency class and kind: the count of violations is
//! reported and asserted to be 0.

use crate::fill::SplitMix;
pub use crate::scenario::{Arrival, Duration, Offer, Plan, Scenario, Stream, Target, limits};
use serde::Serialize;
use sovra_domain::{ClusterConfig, Job, satisfies};
use sovra_placement::{ClusterState, Decision, Placer, Verdict};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

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
            // An arrival admits the job: the learned FGD mix counts it once, whatever its retries.
            placer.observe_admitted(job);
            match placer.verdict(&state, job) {
                Verdict::Fit(d) => {
                    violations += violations_of(cluster, job, &d);
                    state.apply(&d).map_err(|e| e.to_string())?;
                    apply(&d, 1, &mut used_by_pool);
                    started_at[ev.seq] = Some(*arrival);
                    events.push(Event { time: arrival + duration, kind: 0, seq: ev.seq });
                    running[ev.seq] = Some(d);
                }
                Verdict::Unresolvable(_) => {
                    refused += 1;
                    *refused_by_stream.entry(s.streams[jobs[ev.seq].1].job.name.clone()).or_default() += 1;
                }
                Verdict::Unschedulable(_) => queue.push(ev.seq),
            }
            // An arrival frees nothing: the queue cannot have become placeable.
            continue;
        }
        // Something finished: scan the queue in priority order, starting what fits.
        queue.sort_by(|&a, &b| jobs[b].2.priority.cmp(&jobs[a].2.priority).then(a.cmp(&b)));
        let mut failed_shapes: BTreeSet<String> = BTreeSet::new();
        let mut still = Vec::with_capacity(queue.len());
        for &q in &queue {
            let job = &jobs[q].2;
            let shape = sovra_engine::shape_key(job);
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
                    failed_shapes.insert(shape);
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
