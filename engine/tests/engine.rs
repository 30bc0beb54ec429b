//! The scheduling engine on small clusters whose right answer is known by hand.
//!
//! Cluster: zone `fr` (EU-owned, HDS) with pool `train-fr` = nodes fr-a and fr-b, 4 GPUs each; zone `us-de`
//! (US-owned) with pool `train-de` = node de-a, 4 GPUs. Classes: `any`, `fr-only` (country FR).

use sovra_domain::{ClusterConfig, Job, NvlinkWish, PolicySpec, Purpose, Resources};
use sovra_engine::{Engine, Event, JobId, JobState, QueueSpec, SubmitError};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR, certifications: [HDS]}
  - {id: us-de, country: DE, region: Frankfurt, jurisdiction: EU, operator: h, operator_hq: US}
pools:
  - {id: train-fr, zone: fr, purpose: training}
  - {id: train-de, zone: us-de, purpose: training}
residency_classes:
  - {name: any}
  - {name: fr-only, countries: [FR]}
  - {name: nowhere, countries: [IT]}
nodes:
  - {name: fr-a, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
  - {name: fr-b, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
  - {name: de-a, pool: train-de, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
"#;

fn engine(queues: Vec<QueueSpec>) -> Engine {
    let cfg = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    Engine::new(&cfg, queues, PolicySpec::default(), 42).unwrap()
}

fn default_engine() -> Engine {
    engine(vec![QueueSpec::new("default")])
}

fn job(name: &str, queue: &str, priority: i32, class: &str, replicas: u32, gpus: u32) -> Job {
    Job {
        name: name.into(),
        kind: Purpose::Training,
        queue: queue.into(),
        priority,
        residency: class.into(),
        replicas,
        resources: Resources { gpus, gpu_milli: 1000, gpu_models: vec![], cpu_milli: 1000, memory_mib: 1024 },
        nvlink: NvlinkWish::None,
        run: None,
        model: None,
        exception: None,
    }
}

fn submit(e: &mut Engine, j: Job) -> JobId {
    e.submit(j, None).unwrap()
}

fn nodes_of(e: &Engine, id: JobId) -> Vec<String> {
    e.job(id).unwrap().placement.as_ref().unwrap().replicas.iter().map(|r| r.node_name.clone()).collect()
}

fn state(e: &Engine, id: JobId) -> JobState {
    e.job(id).unwrap().state
}

#[test]
fn priority_first_then_fifo() {
    let mut e = default_engine();
    // fr-only capacity: 8 GPUs = two 4-GPU jobs.
    let a = submit(&mut e, job("a", "default", 0, "fr-only", 1, 4));
    let b = submit(&mut e, job("b", "default", 0, "fr-only", 1, 4));
    let c = submit(&mut e, job("c", "default", 10, "fr-only", 1, 4));
    e.schedule();
    assert_eq!(state(&e, c), JobState::Placed, "highest priority first");
    assert_eq!(state(&e, a), JobState::Placed, "then the earliest");
    assert_eq!(state(&e, b), JobState::Pending);
    let why = e.job(b).unwrap().explanation.as_ref().unwrap();
    assert!(why.summary.contains("no room now"), "{}", why.summary);
}

#[test]
fn preemption_takes_whole_lower_priority_gangs_only_when_it_helps() {
    let mut e = default_engine();
    let low1 = submit(&mut e, job("low1", "default", 0, "fr-only", 2, 2)); // a gang: 2 × 2 GPUs
    let low2 = submit(&mut e, job("low2", "default", 0, "fr-only", 1, 4));
    e.schedule();
    assert_eq!((state(&e, low1), state(&e, low2)), (JobState::Placed, JobState::Placed), "fr is now full");
    // A high-priority 4-GPU job: releasing the most recent low job (low2, 4 GPUs) is enough.
    let high = submit(&mut e, job("high", "default", 10, "fr-only", 1, 4));
    let events = e.schedule();
    assert!(
        events.iter().any(|ev| matches!(ev, Event::Preempted { job, by, .. } if (*job, *by) == (low2, high))),
        "{events:?}"
    );
    assert!(!events.iter().any(|ev| matches!(ev, Event::Preempted { job, .. } if *job == low1)), "low1 is spared");
    assert_eq!(state(&e, high), JobState::Placed);
    assert_eq!(state(&e, low2), JobState::Pending, "the victim is requeued whole");
    assert_eq!(e.job(low2).unwrap().preemptions, 1);
    assert_eq!(e.state().used_gpu_milli(), 8000, "no double booking: 2×2 + 4");

    // A job that preemption cannot help (fr-only, 8 GPUs, while fr holds 4 of high priority) preempts nothing.
    let big = submit(&mut e, job("big", "default", 5, "fr-only", 2, 4));
    let events = e.schedule();
    assert!(!events.iter().any(|ev| matches!(ev, Event::Preempted { .. })), "{events:?}");
    assert_eq!(state(&e, big), JobState::Pending);
    assert_eq!(state(&e, low1), JobState::Placed);
}

#[test]
fn gangs_are_all_or_nothing() {
    let mut e = default_engine();
    let filler = submit(&mut e, job("filler", "default", 0, "fr-only", 1, 4));
    e.schedule();
    let gang = submit(&mut e, job("gang", "default", 0, "fr-only", 2, 4));
    e.schedule();
    assert_eq!(state(&e, gang), JobState::Pending);
    assert!(e.job(gang).unwrap().placement.is_none());
    assert_eq!(e.state().used_gpu_milli(), 4000, "only the filler holds GPUs; no partial gang");
    e.finished(filler, true).unwrap();
    e.schedule();
    assert_eq!(state(&e, gang), JobState::Placed);
    let mut n = nodes_of(&e, gang);
    n.sort();
    assert_eq!(n, ["fr-a", "fr-b"]);
}

#[test]
fn quotas_cap_a_queue_per_pool() {
    let mut research = QueueSpec::new("research");
    research.quota_milli.insert("train-fr".into(), 4000);
    let mut e = engine(vec![research, QueueSpec::new("default")]);
    let a = submit(&mut e, job("a", "research", 0, "fr-only", 1, 4));
    let b = submit(&mut e, job("b", "research", 0, "fr-only", 1, 4));
    let c = submit(&mut e, job("c", "research", 0, "any", 1, 4));
    let d = submit(&mut e, job("d", "default", 0, "fr-only", 1, 4));
    e.schedule();
    assert_eq!(state(&e, a), JobState::Placed);
    assert_eq!(state(&e, b), JobState::Pending, "research's fr quota (4 GPUs) is used up although fr-b is free");
    assert_eq!(nodes_of(&e, c), ["de-a"], "outside the quota'd pool it may run");
    assert_eq!(state(&e, d), JobState::Placed, "another queue uses the free fr node");
}

#[test]
fn drf_shares_capacity_between_queues() {
    let mut e = engine(vec![QueueSpec::new("q1"), QueueSpec::new("q2")]);
    // q1 submits 8 one-GPU jobs first, then q2 submits 8; 8 fr GPUs exist (fr-only).
    let q1: Vec<JobId> = (0..8).map(|i| submit(&mut e, job(&format!("q1-{i}"), "q1", 0, "fr-only", 1, 1))).collect();
    let q2: Vec<JobId> = (0..8).map(|i| submit(&mut e, job(&format!("q2-{i}"), "q2", 0, "fr-only", 1, 1))).collect();
    e.schedule();
    let placed = |ids: &[JobId]| ids.iter().filter(|&&id| state(&e, id) == JobState::Placed).count();
    assert_eq!((placed(&q1), placed(&q2)), (4, 4), "DRF splits equal weights evenly, not FIFO 8/0");
}

#[test]
fn drf_follows_weights() {
    let mut heavy = QueueSpec::new("heavy");
    heavy.weight = 3;
    let mut e = engine(vec![heavy, QueueSpec::new("light")]);
    let h: Vec<JobId> = (0..8).map(|i| submit(&mut e, job(&format!("h-{i}"), "heavy", 0, "fr-only", 1, 1))).collect();
    let l: Vec<JobId> = (0..8).map(|i| submit(&mut e, job(&format!("l-{i}"), "light", 0, "fr-only", 1, 1))).collect();
    e.schedule();
    let placed = |ids: &[JobId]| ids.iter().filter(|&&id| state(&e, id) == JobState::Placed).count();
    assert_eq!((placed(&h), placed(&l)), (6, 2), "weight 3 : 1 of 8 GPUs");
}

#[test]
fn backfill_uses_idle_nodes_but_not_the_reservation() {
    let mut e = default_engine();
    // A 3-GPU job on each fr node (the second does not fit beside the first): one GPU stays free on each.
    let s1 = submit(&mut e, job("s1", "default", 0, "fr-only", 1, 3));
    let s2 = submit(&mut e, job("s2", "default", 0, "fr-only", 1, 3));
    e.schedule();
    let mut running = [nodes_of(&e, s1)[0].clone(), nodes_of(&e, s2)[0].clone()];
    running.sort();
    assert_eq!(running, ["fr-a", "fr-b"]);
    // A big gang (2 × 4 GPUs, fr-only) cannot start; it reserves fr-a and fr-b.
    let big = submit(&mut e, job("big", "default", 0, "fr-only", 2, 4));
    // Later small jobs of the same priority: one may go anywhere, one is fr-only.
    let anywhere = submit(&mut e, job("anywhere", "default", 0, "any", 1, 1));
    let fr_small = submit(&mut e, job("fr-small", "default", 0, "fr-only", 1, 1));
    let events = e.schedule();
    assert!(events.iter().any(|ev| matches!(ev, Event::Reserved { job, .. } if *job == big)), "{events:?}");
    assert_eq!(nodes_of(&e, anywhere), ["de-a"], "backfilled on the idle node outside the reservation");
    assert_eq!(state(&e, fr_small), JobState::Pending, "fr GPUs are free but reserved for the big gang");
    // As the small jobs end, the big gang gets its nodes.
    e.finished(s1, true).unwrap();
    e.finished(s2, true).unwrap();
    e.schedule();
    assert_eq!(state(&e, big), JobState::Placed);
}

#[test]
fn a_lost_node_requeues_its_jobs_and_gets_no_more_work() {
    let mut e = default_engine();
    let a = submit(&mut e, job("a", "default", 0, "fr-only", 1, 4));
    e.schedule();
    e.started(a).unwrap();
    let node = nodes_of(&e, a)[0].clone();
    assert_eq!(e.node_lost(&node), vec![a]);
    assert_eq!(state(&e, a), JobState::Pending);
    assert_eq!(e.job(a).unwrap().losses, 1);
    assert_eq!(e.state().used_gpu_milli(), 0, "its GPUs were released");
    e.schedule();
    assert_eq!(state(&e, a), JobState::Placed);
    assert_ne!(nodes_of(&e, a)[0], node, "the lost node is not offered");
    e.node_ready(&node);
}

#[test]
fn submit_is_idempotent_and_refuses_the_impossible() {
    let mut e = default_engine();
    let a = e.submit(job("a", "default", 0, "any", 1, 1), Some("req-1".into())).unwrap();
    let again = e.submit(job("a", "default", 0, "any", 1, 1), Some("req-1".into())).unwrap();
    assert_eq!(a, again);
    assert_eq!(e.jobs().count(), 1);
    match e.submit(job("x", "default", 0, "nowhere", 1, 1), None) {
        Err(SubmitError::Refused { id, explanation }) => {
            assert!(explanation.summary.contains("no permitted pool"), "{}", explanation.summary);
            assert_eq!(state(&e, id), JobState::Refused);
        }
        other => panic!("{other:?}"),
    }
    match e.submit(job("too-big", "default", 0, "fr-only", 3, 4), None) {
        Err(SubmitError::Refused { explanation, .. }) => assert!(explanation.summary.contains("even when empty")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(e.submit(job("q", "nope", 0, "any", 1, 1), None), Err(SubmitError::UnknownQueue { .. })));
}

#[test]
fn cancel_releases_and_is_final() {
    let mut e = default_engine();
    let a = submit(&mut e, job("a", "default", 0, "any", 1, 4));
    e.schedule();
    e.cancel(a).unwrap();
    assert_eq!(state(&e, a), JobState::Cancelled);
    assert_eq!(e.state().used_gpu_milli(), 0);
    assert!(e.cancel(a).is_err());
    assert!(e.finished(a, true).is_err());
}

#[test]
fn preemption_spares_victims_that_would_not_help() {
    let mut e = default_engine();
    let w = submit(&mut e, job("w", "default", 0, "fr-only", 1, 4)); // fr, low priority
    let x = submit(&mut e, job("x", "default", 5, "fr-only", 1, 4)); // fr, middle priority
    e.schedule();
    let v = submit(&mut e, job("v", "default", 0, "any", 1, 4)); // most recent low job — lands on de-a
    e.schedule();
    assert_eq!(nodes_of(&e, v), ["de-a"]);
    // fr-only, high priority: greedy release order is v (lowest, most recent) then w; releasing v cannot help an
    // fr-only job, so v must be spared and only w preempted.
    let high = submit(&mut e, job("high", "default", 10, "fr-only", 1, 4));
    let events = e.schedule();
    let preempted: Vec<JobId> =
        events.iter().filter_map(|ev| if let Event::Preempted { job, .. } = ev { Some(*job) } else { None }).collect();
    assert_eq!(preempted, vec![w], "{events:?}");
    assert_eq!((state(&e, v), state(&e, x), state(&e, high)), (JobState::Placed, JobState::Placed, JobState::Placed));
}

#[test]
fn lifecycle_errors_are_typed_and_name_the_field() {
    use sovra_engine::JobError;
    let mut e = engine(vec![QueueSpec::new("default")]);
    assert_eq!(e.cancel(99), Err(JobError::NoSuchJob { id: 99 }));
    assert_eq!(e.started(99).unwrap_err().to_string(), "id: no job 99; `sovra jobs` lists the jobs");
    let a = e.submit(job("a", "default", 0, "any", 1, 1), None).unwrap();
    assert_eq!(e.started(a), Err(JobError::WrongState { id: a, state: JobState::Pending, expected: "placed" }));
    e.cancel(a).unwrap();
    let err = e.finished(a, true).unwrap_err();
    assert_eq!(err.to_string(), format!("state: job {a} is Cancelled, not placed or running"));
}
