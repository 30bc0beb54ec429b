//! Blockers and preemption records on small clusters whose right answer is known by hand.
//!
//! Cluster: zone `fr` with pool `train-fr` = nodes fr-a and fr-b (4 GPUs each); zone `us-de` with pool `train-de`
//! = node de-a (4 GPUs). Classes: `any`, `fr-only`.

use sovra_domain::{ClusterConfig, Job, NvlinkWish, PolicySpec, Purpose, Resources};
use sovra_engine::{Blocker, Engine, Event, JobId, JobRecord, JobState, MAX_PREEMPTION_RECORDS, QueueSpec};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}
  - {id: us-de, country: DE, region: Frankfurt, jurisdiction: EU, operator: h, operator_hq: US}
pools:
  - {id: train-fr, zone: fr, purpose: training}
  - {id: train-de, zone: us-de, purpose: training}
residency_classes:
  - {name: any}
  - {name: fr-only, countries: [FR]}
nodes:
  - {name: fr-a, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
  - {name: fr-b, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
  - {name: de-a, pool: train-de, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100, count: 4, memory_mib: 81920}}
"#;

fn engine(queues: Vec<QueueSpec>) -> Engine {
    let cfg = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    Engine::new(&cfg, queues, PolicySpec::default(), 7).unwrap()
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

fn blockers(e: &Engine, id: JobId) -> &[Blocker] {
    &e.job(id).unwrap().blockers
}

#[test]
fn a_queue_at_its_quota_says_so_with_numbers() {
    let mut research = QueueSpec::new("research");
    research.quota_milli.insert("train-fr".into(), 4000);
    research.quota_milli.insert("train-de".into(), 0);
    let mut e = engine(vec![research]);
    let a = e.submit(job("a", "research", 0, "fr-only", 1, 4), None).unwrap();
    let b = e.submit(job("b", "research", 0, "fr-only", 1, 2), None).unwrap();
    e.schedule();
    assert_eq!(e.job(a).unwrap().state, JobState::Placed);
    assert!(blockers(&e, a).is_empty(), "a started: nothing blocks it");
    // train-de has a quota of 0 too, but an fr-only job may not use it: only train-fr is named.
    assert_eq!(
        blockers(&e, b),
        [
            Blocker::Quota {
                queue: "research".into(),
                pool: "train-fr".into(),
                held_milli: 4000,
                quota_milli: 4000,
                needs_milli: 2000
            },
            Blocker::Position { queue: "research".into(), position: 1, pending: 1 },
        ]
    );
    assert_eq!(
        blockers(&e, b)[0].to_string(),
        "queue research holds 4,000 of its 4,000 milli quota in pool train-fr; this job needs 2,000"
    );
}

#[test]
fn a_reservation_is_named_only_when_it_kept_the_job_out() {
    let mut e = engine(vec![QueueSpec::new("default")]);
    let r1 = e.submit(job("r1", "default", 5, "fr-only", 1, 1), None).unwrap();
    e.schedule();
    // h needs both fr nodes whole; r1 (same priority) cannot be preempted, so h reserves fr-a and fr-b.
    let h = e.submit(job("h", "default", 5, "fr-only", 2, 4), None).unwrap();
    let s = e.submit(job("s", "default", 0, "fr-only", 1, 1), None).unwrap();
    let wide = e.submit(job("wide", "default", 0, "any", 1, 1), None).unwrap();
    // Both fr nodes whole (as h, but another shape: more CPU), while r1 holds a GPU of fr-a.
    let mut never = job("never", "default", 0, "fr-only", 2, 4);
    never.resources.cpu_milli = 2000;
    let never = e.submit(never, None).unwrap();
    for full in [false, true] {
        if full {
            e.node_ready("de-a"); // marks the engine dirty: a full cycle this time
        }
        let events = e.schedule();
        assert!(events.iter().any(|ev| matches!(ev, Event::Reserved { job, .. } if *job == h)), "{events:?}");
        assert_eq!(e.job(r1).unwrap().state, JobState::Placed);
        assert_eq!(e.job(wide).unwrap().state, JobState::Placed, "backfill elsewhere (full: {full})");
        // The queue's pending jobs when s is tried: h, s, never, and (the first time) wide, not tried yet.
        let pending = if full { 3 } else { 4 };
        let reserved = Blocker::Reservation { job: h, priority: 5, nodes: vec!["fr-a".into(), "fr-b".into()] };
        assert_eq!(blockers(&e, s)[0], reserved, "full: {full}");
        assert_eq!(blockers(&e, s)[1], Blocker::Position { queue: "default".into(), position: 2, pending });
        assert!(blockers(&e, s)[0].to_string().starts_with("nodes fr-a, fr-b are reserved for job"));
        // `never` would not start without the reservation either: it is not named.
        assert!(
            !blockers(&e, never).iter().any(|b| matches!(b, Blocker::Reservation { .. })),
            "{:?}",
            blockers(&e, never)
        );
        assert_eq!(blockers(&e, h), [Blocker::Position { queue: "default".into(), position: 1, pending }]);
    }
}

#[test]
fn preemptions_are_recorded_on_the_victim_bounded_and_carried_by_the_event() {
    let mut e = engine(vec![QueueSpec::new("default")]);
    let low = e.submit(job("low", "default", 0, "fr-only", 2, 4), None).unwrap();
    e.schedule_at(1);
    assert_eq!(e.job(low).unwrap().state, JobState::Placed);
    let rounds = MAX_PREEMPTION_RECORDS as u64 + 2;
    for i in 0..rounds {
        let high = e.submit(job(&format!("high-{i}"), "default", 10, "fr-only", 1, 4), None).unwrap();
        let events = e.schedule_at(1000 + i);
        let record = events
            .iter()
            .find_map(|ev| match ev {
                Event::Preempted { job, by, record } if (*job, *by) == (low, high) => Some(record.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("round {i}: {events:?}"));
        assert_eq!((record.victim, record.by, record.victim_priority, record.by_priority), (low, high, 0, 10));
        assert_eq!((record.at_ms, record.freed_milli, record.freed_devices), (1000 + i, 8000, 8));
        assert_eq!(record.nodes, ["fr-a", "fr-b"]);
        assert_eq!(e.job(low).unwrap().preemption_records.last(), Some(&record));
        e.finished(high, true).unwrap();
        e.schedule();
        assert_eq!(e.job(low).unwrap().state, JobState::Placed, "round {i}: the victim runs again");
    }
    let kept = &e.job(low).unwrap().preemption_records;
    assert_eq!(kept.len(), MAX_PREEMPTION_RECORDS);
    assert_eq!(kept[0].at_ms, 1000 + rounds - MAX_PREEMPTION_RECORDS as u64, "the oldest are dropped");
    assert_eq!(e.job(low).unwrap().preemptions, rounds as u32, "the count still counts them all");
    let text = kept[0].to_string();
    assert!(text.contains("preempted job 1 (priority 0), freeing 8 devices (8,000 GPU milli) on fr-a, fr-b"), "{text}");

    // A restart keeps the records and continues the clock from the latest one.
    let cfg = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let records: Vec<JobRecord> = e.jobs().cloned().collect();
    let (back, _) = Engine::restore(&cfg, vec![QueueSpec::new("default")], PolicySpec::default(), 7, records).unwrap();
    assert_eq!(back.job(low).unwrap().preemption_records, *kept);
    assert_eq!(back.now_ms(), 1000 + rounds - 1);
}

#[test]
fn records_stored_before_blockers_existed_still_load() {
    let mut e = engine(vec![QueueSpec::new("default")]);
    let a = e.submit(job("a", "default", 0, "any", 1, 1), None).unwrap();
    let mut v = serde_json::to_value(e.job(a).unwrap()).unwrap();
    let obj = v.as_object_mut().unwrap();
    assert!(obj.remove("blockers").is_some() && obj.remove("preemption_records").is_some());
    let old: JobRecord = serde_json::from_value(v).unwrap();
    assert!(old.blockers.is_empty() && old.preemption_records.is_empty());
}
