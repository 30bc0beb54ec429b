//! The replay's event loop: the simulated clock around the engine (see the [`crate::replay`] module docs for the
//! rules it follows).

use super::{
    Arriving, JobRun, JobTrace, PoolSeries, ReplayError, ReplayResult, ReplicaAt, Scenario, arrivals, queues_of,
    summarise, violations_of,
};
use sovra_domain::ClusterConfig;
use sovra_engine::{Engine, Event, JobId, JobState, SubmitError};
use sovra_placement::Decision;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// A timed event: (time, completions 0 before arrivals 1, job index, run number of a completion).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tick {
    time: f64,
    kind: u8,
    seq: usize,
    run: u32,
}

impl Eq for Tick {}
impl PartialOrd for Tick {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Tick {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse for earliest first.
        o.time.total_cmp(&self.time).then(o.kind.cmp(&self.kind)).then(o.seq.cmp(&self.seq)).then(o.run.cmp(&self.run))
    }
}

/// What the loop tracks of one job.
#[derive(Default)]
struct Live {
    /// The engine's id, once submitted and admitted.
    id: Option<JobId>,
    /// GPU milli held per pool index by its current run, if it runs.
    held: Option<Vec<(usize, u64)>>,
    /// Run number: a completion event of an older run is stale.
    run: u32,
    /// Preemptions seen so far (the engine's count).
    preemptions: u32,
    /// Since when it is pending, if it is.
    pending_since: Option<f64>,
    /// Time spent pending so far, seconds.
    waited: f64,
}

struct Driver<'a> {
    cluster: &'a ClusterConfig,
    engine: Engine,
    jobs: Vec<Arriving>,
    live: Vec<Live>,
    traces: Vec<JobTrace>,
    of_id: BTreeMap<JobId, usize>,
    ticks: BinaryHeap<Tick>,
    /// Pool index of each node index.
    pool_of_node: Vec<usize>,
    used_by_pool: Vec<u64>,
    violations: usize,
    /// Record replica placements in the traces.
    keep: bool,
}

impl Driver<'_> {
    fn lifecycle(&self, seq: usize, error: sovra_engine::JobError) -> ReplayError {
        ReplayError::Lifecycle { job: self.jobs[seq].job.name.clone(), error: Box::new(error) }
    }

    /// One scheduling cycle at `t`, then `started` + one cycle for each job left placed, smallest id first, until
    /// none is: what the service does for a request and the running reports that follow.
    fn cycle(&mut self, t: f64) -> Result<(), ReplayError> {
        let mut to_start = BTreeSet::new();
        let events = self.engine.schedule();
        self.absorb(&events, t, &mut to_start);
        while let Some(id) = to_start.pop_first() {
            if self.engine.job(id).is_some_and(|r| r.state == JobState::Placed) {
                if let Err(e) = self.engine.started(id) {
                    let seq = self.of_id.get(&id).copied().unwrap_or_default();
                    return Err(self.lifecycle(seq, e));
                }
                let events = self.engine.schedule();
                self.absorb(&events, t, &mut to_start);
            }
        }
        Ok(())
    }

    /// Brings the jobs a cycle touched up to date: ends the runs of preempted ones, starts the runs of placed ones.
    fn absorb(&mut self, events: &[Event], t: f64, to_start: &mut BTreeSet<JobId>) {
        let touched: BTreeSet<JobId> = events
            .iter()
            .filter_map(|e| match e {
                Event::Placed { job } | Event::Preempted { job, .. } => Some(*job),
                _ => None,
            })
            .collect();
        for id in touched {
            let Some(&seq) = self.of_id.get(&id) else { continue };
            let Some(rec) = self.engine.job(id) else { continue };
            let (state, preemptions, placement) = (rec.state, rec.preemptions, rec.placement.clone());
            if preemptions > self.live[seq].preemptions {
                self.live[seq].preemptions = preemptions;
                self.traces[seq].preemptions = preemptions;
                self.end_run(seq, t, true);
            }
            if state.holds_resources()
                && self.live[seq].held.is_none()
                && let Some(d) = placement
            {
                self.start_run(seq, &d, t);
            }
            if state == JobState::Placed {
                to_start.insert(id);
            }
        }
    }

    fn start_run(&mut self, seq: usize, d: &Decision, t: f64) {
        self.violations += violations_of(self.cluster, &self.jobs[seq].job, d);
        let held: Vec<(usize, u64)> = d
            .replicas
            .iter()
            .map(|r| (self.pool_of_node[r.node as usize], r.devices.iter().map(|a| u64::from(a.milli)).sum()))
            .collect();
        for &(p, m) in &held {
            self.used_by_pool[p] += m;
        }
        let live = &mut self.live[seq];
        live.held = Some(held);
        live.waited += t - live.pending_since.take().unwrap_or(t);
        live.run += 1;
        let replicas = if self.keep {
            d.replicas
                .iter()
                .map(|r| ReplicaAt {
                    node: r.node_name.clone(),
                    devices: r.devices.iter().map(|a| u32::from(a.device)).collect(),
                    milli_per_device: r.devices.first().map_or(0, |a| u32::from(a.milli)),
                })
                .collect()
        } else {
            Vec::new()
        };
        self.traces[seq].runs.push(JobRun { start_s: t, end_s: None, preempted: false, replicas });
        self.ticks.push(Tick { time: t + self.jobs[seq].duration, kind: 0, seq, run: live.run });
    }

    /// Ends the current run of job `seq` at `t` (completed, or preempted: pending again), releasing its usage.
    fn end_run(&mut self, seq: usize, t: f64, preempted: bool) {
        let live = &mut self.live[seq];
        let Some(held) = live.held.take() else { return };
        live.run += 1;
        if preempted {
            live.pending_since = Some(t);
        }
        for (p, m) in held {
            self.used_by_pool[p] = self.used_by_pool[p].saturating_sub(m);
        }
        if let Some(r) = self.traces[seq].runs.last_mut() {
            r.end_s = Some(t);
            r.preempted = preempted;
        }
    }

    fn arrive(&mut self, seq: usize, t: f64) -> Result<(), ReplayError> {
        match self.engine.submit(self.jobs[seq].job.clone(), None) {
            Ok(id) => {
                self.of_id.insert(id, seq);
                self.live[seq].id = Some(id);
                self.live[seq].pending_since = Some(t);
                self.cycle(t)
            }
            // Refused at submit: recorded, no cycle (as the service).
            Err(SubmitError::Refused { .. }) => {
                self.traces[seq].refused = true;
                Ok(())
            }
            Err(error) => Err(ReplayError::Submit { job: self.jobs[seq].job.name.clone(), error: Box::new(error) }),
        }
    }

    fn complete(&mut self, tick: Tick) -> Result<(), ReplayError> {
        let seq = tick.seq;
        let live = &self.live[seq];
        // A completion of a run that was preempted is dropped: the job restarts from scratch.
        let (Some(id), true, true) = (live.id, live.run == tick.run, live.held.is_some()) else { return Ok(()) };
        if let Err(e) = self.engine.finished(id, true) {
            return Err(self.lifecycle(seq, e));
        }
        self.end_run(seq, tick.time, false);
        self.cycle(tick.time)
    }
}

/// Runs the scenario; with `keep`, the traces carry each run's placement.
pub(super) fn run(
    s: &Scenario,
    cluster: &ClusterConfig,
    keep: bool,
) -> Result<(ReplayResult, Vec<JobTrace>), ReplayError> {
    let mut engine = Engine::new(cluster, queues_of(cluster), s.policy.clone(), s.seed)?;
    // The service runs one (empty) cycle when it starts: so does the replay, so that the first submit meets the
    // same engine state.
    engine.schedule();
    let topo = engine.state().topology().clone();
    let jobs = arrivals(s);
    let traces = jobs
        .iter()
        .map(|a| JobTrace {
            name: a.job.name.clone(),
            stream: s.streams[a.stream].job.name.clone(),
            arrival_s: a.time,
            duration_s: a.duration,
            refused: false,
            runs: Vec::new(),
            preemptions: 0,
            wait_minutes: None,
        })
        .collect();
    let mut pools: Vec<PoolSeries> = topo
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| PoolSeries {
            pool: p.id.clone(),
            zone: topo.zones[p.zone].id.clone(),
            capacity_milli: topo.pool_nodes[i]
                .iter()
                .map(|&n| u64::from(topo.nodes[n as usize].dev_count) * 1000)
                .sum(),
            used_milli: Vec::new(),
        })
        .collect();
    let mut d = Driver {
        cluster,
        engine,
        ticks: jobs.iter().enumerate().map(|(seq, a)| Tick { time: a.time, kind: 1, seq, run: 0 }).collect(),
        live: jobs.iter().map(|_| Live::default()).collect(),
        jobs,
        traces,
        of_id: BTreeMap::new(),
        pool_of_node: topo.nodes.iter().map(|n| n.pool as usize).collect(),
        used_by_pool: vec![0; topo.pools.len()],
        violations: 0,
        keep,
    };
    let mut sample_times = Vec::new();
    let mut next_sample = 0.0;
    let mut sample_until = |until: f64, inclusive: bool, used: &[u64], pools: &mut Vec<PoolSeries>| {
        while next_sample < until || (inclusive && next_sample == until) {
            sample_times.push(next_sample);
            for (p, series) in pools.iter_mut().enumerate() {
                series.used_milli.push(used[p]);
            }
            next_sample += s.sample_s;
        }
    };
    while let Some(tick) = d.ticks.pop() {
        if tick.time >= s.horizon_s {
            break;
        }
        sample_until(tick.time, true, &d.used_by_pool, &mut pools);
        if tick.kind == 0 { d.complete(tick)? } else { d.arrive(tick.seq, tick.time)? }
    }
    sample_until(s.horizon_s, false, &d.used_by_pool, &mut pools);
    if d.violations > 0 {
        return Err(ReplayError::Residency(d.violations));
    }
    for (live, trace) in d.live.iter().zip(d.traces.iter_mut()) {
        if !trace.refused {
            let waited = live.waited + live.pending_since.map_or(0.0, |t| s.horizon_s - t);
            trace.wait_minutes = Some(waited / 60.0);
        }
    }
    let result = summarise(&d.traces, sample_times, pools);
    Ok((result, d.traces))
}
