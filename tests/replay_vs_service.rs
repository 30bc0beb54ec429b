//! `sovra replay` schedules as the deployed scheduler does: one scenario (`simulator/examples/contended/`: two
//! queues with fair-share weights and a quota, three priorities, gangs of several sizes, one refused stream) run
//! (a) through the simulator's replay and (b) through the scheduler service in-process — its tonic `Jobs` methods
//! called directly, the test being the clock: it walks the same timeline of arrivals and completions in simulated
//! time order (completions first at equal times), submits each job as YAML, reports `running` for every placed job
//! (smallest id first, until none is placed) and `succeeded` when a run's duration is over, and re-derives
//! preemptions from the jobs' `preemptions` counts. Both must give every job the same runs (start, end, node and
//! devices of each replica, preempted or not), the same waits and the same preemptions; the scenario is checked to
//! preempt and to make jobs wait, so the comparison cannot pass vacuously.

use sovra_api::v1::jobs_server::Jobs;
use sovra_api::v1::{GetRequest, JobInfo, ListRequest, SetStateRequest, SubmitRequest};
use sovra_scheduler::service::Scheduler;
use sovra_simulator::replay::{JobRun, JobTrace, ReplicaAt, Scenario, timeline};
use std::collections::{BTreeMap, BinaryHeap};
use tonic::Request;

/// The scenario: `simulator/examples/contended/` (also measured in BENCHMARKS.md).
fn scenario() -> Scenario {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("simulator/examples/contended/scenario.yaml");
    Scenario::load(&file).unwrap()
}

/// Each stream's job as the test submits it (`{name: <name>-<k>, <fields>}`); checked against the scenario's own
/// job templates, so the two cannot drift apart.
const FIELDS: [(&str, &str); 5] = [
    (
        "batch",
        "kind: training, queue: a, priority: 0, residency: any, resources: {gpus: 2, cpu_milli: 1000, memory_mib: 1024}",
    ),
    (
        "urgent",
        "kind: training, queue: b, priority: 5, residency: any, resources: {gpus: 4, cpu_milli: 1000, memory_mib: 1024}",
    ),
    (
        "small",
        "kind: training, queue: b, priority: 0, residency: any, resources: {gpus: 1, cpu_milli: 1000, memory_mib: 1024}",
    ),
    (
        "gang",
        "kind: training, queue: a, priority: 2, replicas: 2, residency: any, resources: {gpus: 2, cpu_milli: 1000, memory_mib: 1024}",
    ),
    (
        "nowhere",
        "kind: training, queue: a, residency: de-only, resources: {gpus: 1, cpu_milli: 1000, memory_mib: 1024}",
    ),
];

/// What the test, as the clock, saw of one job through the service.
#[derive(Default)]
struct Seen {
    id: Option<u64>,
    refused: bool,
    runs: Vec<JobRun>,
    /// Run number; a completion of an older run is stale (the job was preempted).
    run: u32,
    running: bool,
    preemptions: u32,
    pending_since: Option<f64>,
    waited: f64,
}

struct Clock {
    sched: Scheduler,
    jobs: Vec<JobTrace>,
    seen: Vec<Seen>,
    of_id: BTreeMap<u64, usize>,
    /// (−time, completions before arrivals, job index, run), as a max-heap of reversed keys.
    ticks: BinaryHeap<std::cmp::Reverse<(Time, u8, usize, u32)>>,
}

/// A total order on the simulated times (none is NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Time(f64);
impl Eq for Time {}
impl PartialOrd for Time {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Time {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl Clock {
    async fn list(&self, state: &str) -> Vec<JobInfo> {
        let req = ListRequest { state: state.into(), page_size: 10_000, ..Default::default() };
        Jobs::list(&self.sched, Request::new(req)).await.unwrap().into_inner().jobs
    }

    async fn set_state(&self, id: u64, state: &str) {
        Jobs::set_state(&self.sched, Request::new(SetStateRequest { id, state: state.into() })).await.unwrap();
    }

    /// After a call at `t`: ends the runs of jobs whose preemption count grew, starts runs for jobs newly holding
    /// resources (with their completion ticks).
    async fn observe(&mut self, t: f64) {
        for info in self.list("").await {
            let Some(&i) = self.of_id.get(&info.id) else { continue };
            let seen = &mut self.seen[i];
            if info.preemptions > seen.preemptions {
                seen.preemptions = info.preemptions;
                if seen.running {
                    seen.running = false;
                    seen.run += 1;
                    seen.pending_since = Some(t);
                    let r = seen.runs.last_mut().unwrap();
                    (r.end_s, r.preempted) = (Some(t), true);
                }
            }
            if matches!(info.state.as_str(), "placed" | "running") && !seen.running {
                seen.running = true;
                seen.run += 1;
                seen.waited += t - seen.pending_since.take().unwrap();
                let replicas = info
                    .replicas
                    .iter()
                    .map(|r| ReplicaAt {
                        node: r.node.clone(),
                        devices: r.devices.clone(),
                        milli_per_device: r.milli_per_device,
                    })
                    .collect();
                seen.runs.push(JobRun { start_s: t, end_s: None, preempted: false, replicas });
                self.ticks.push(std::cmp::Reverse((Time(t + self.jobs[i].duration_s), 0, i, seen.run)));
            }
        }
    }

    /// Observes, then reports `running` for the placed job of smallest id (observing after each report) until no
    /// job is placed: the runner's side of the service.
    async fn settle(&mut self, t: f64) {
        self.observe(t).await;
        while let Some(id) = self.list("placed").await.iter().map(|j| j.id).min() {
            self.set_state(id, "running").await;
            self.observe(t).await;
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn replay_places_preempts_and_waits_as_the_scheduler_service() {
    let s = scenario();
    let fields: BTreeMap<&str, &str> = FIELDS.into_iter().collect();
    assert_eq!(s.streams.len(), fields.len());
    for st in &s.streams {
        let yaml = format!("{{name: {}, {}}}", st.job.name, fields[st.job.name.as_str()]);
        assert_eq!(s.cluster.jobs_from_yaml("job", &yaml).unwrap(), vec![st.job.clone()], "{yaml}");
    }
    let (result, sim) = timeline(&s, &s.cluster).unwrap();

    // The scenario is not vacuous: it preempts, makes jobs wait and refuses the impossible stream.
    assert!(result.preemptions >= 2, "{} preemptions", result.preemptions);
    assert!(result.wait_minutes.p95 > 10.0, "{:?}", result.wait_minutes);
    assert_eq!(result.refused_by_stream.get("nowhere"), Some(&2));
    assert_eq!(result.residency_violations, 0);
    assert!(sim.iter().any(|j| j.stream == "gang" && j.runs.iter().any(|r| r.replicas.len() == 2)));

    let sched = Scheduler::new(s.cluster.clone(), s.policy.clone(), s.seed, None).unwrap();
    let mut clock = Clock {
        sched,
        seen: sim.iter().map(|_| Seen::default()).collect(),
        ticks: sim.iter().enumerate().map(|(i, j)| std::cmp::Reverse((Time(j.arrival_s), 1, i, 0))).collect(),
        jobs: sim.clone(),
        of_id: BTreeMap::new(),
    };
    while let Some(std::cmp::Reverse((Time(t), kind, i, run))) = clock.ticks.pop() {
        if t >= s.horizon_s {
            break;
        }
        if kind == 1 {
            let job = &clock.jobs[i];
            let job_yaml = format!("{{name: {}, {}}}", job.name, fields[job.stream.as_str()]);
            let req = SubmitRequest { job_yaml, request_id: job.name.clone() };
            match Jobs::submit(&clock.sched, Request::new(req)).await {
                Ok(r) => {
                    let id = r.into_inner().id;
                    clock.of_id.insert(id, i);
                    clock.seen[i].id = Some(id);
                    clock.seen[i].pending_since = Some(t);
                }
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
                    clock.seen[i].refused = true;
                    continue;
                }
            }
        } else {
            let seen = &mut clock.seen[i];
            if !seen.running || seen.run != run {
                continue; // the run was preempted: its completion is dropped
            }
            seen.running = false;
            seen.runs.last_mut().unwrap().end_s = Some(t);
            let id = seen.id.unwrap();
            clock.set_state(id, "succeeded").await;
        }
        clock.settle(t).await;
    }

    let mut compared_runs = 0;
    for (j, seen) in sim.iter().zip(&clock.seen) {
        assert_eq!(j.refused, seen.refused, "{}", j.name);
        assert_eq!(j.runs, seen.runs, "{}: runs", j.name);
        assert_eq!(j.preemptions, seen.preemptions, "{}: preemptions", j.name);
        compared_runs += j.runs.len();
        if j.refused {
            continue;
        }
        let waited = seen.waited + seen.pending_since.map_or(0.0, |since| s.horizon_s - since);
        let wait = j.wait_minutes.unwrap();
        assert!((wait - waited / 60.0).abs() < 1e-9, "{}: wait {wait} vs {}", j.name, waited / 60.0);
        // The service's final view agrees: the job's name, and running exactly when its last run is open.
        let id = seen.id.unwrap();
        let info = Jobs::get(&clock.sched, Request::new(GetRequest { id })).await.unwrap().into_inner();
        assert_eq!(info.name, j.name);
        let open = j.runs.last().is_some_and(|r| r.end_s.is_none());
        assert_eq!(info.state == "running", open, "{}: {}", j.name, info.state);
    }
    assert!(compared_runs > 50, "{compared_runs} runs compared");
}
