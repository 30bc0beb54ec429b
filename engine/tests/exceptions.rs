//! Break-glass for placement through the engine: a waiver lets a job into the one zone it names, only where that
//! zone fails exactly the waived requirement; a refused job is revived by one; at expiry a job placed only by it
//! is released and requeued, while one that no longer needs it keeps running.
//!
//! Cluster: zone `hds` (FR, HDS, 1 node of 4 GPUs) and zone `plain` (FR, no HDS, 2 nodes), zone `de` (DE, HDS).
//! Class `fr-health`: country FR and certification HDS.

use sovra_domain::{ClusterConfig, Job, PolicySpec, Waiver};
use sovra_engine::{Engine, JobState, queues_of};

const CLUSTER: &str = r#"
zones:
  - {id: hds, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR, certifications: [HDS]}
  - {id: plain, country: FR, region: Lyon, jurisdiction: EU, operator: o, operator_hq: FR}
  - {id: de, country: DE, region: Berlin, jurisdiction: EU, operator: d, operator_hq: DE, certifications: [HDS]}
pools:
  - {id: t-hds, zone: hds, purpose: training}
  - {id: t-plain, zone: plain, purpose: training}
  - {id: t-de, zone: de, purpose: training}
residency_classes:
  - {name: fr-health, countries: [FR], certifications: [HDS]}
  - {name: fr-secure, countries: [FR], certifications: [HDS, SecNumCloud]}
nodes:
  - {name: h1, pool: t-hds, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
  - {name: p1, pool: t-plain, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
  - {name: p2, pool: t-plain, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
  - {name: d1, pool: t-de, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
"#;

fn setup() -> (Engine, ClusterConfig) {
    let cfg = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    (Engine::new(&cfg, queues_of(&cfg), PolicySpec::default(), 7).unwrap(), cfg)
}

fn job(cfg: &ClusterConfig, name: &str, class: &str, gpus: u32) -> Job {
    let yaml = format!(
        "name: {name}\nkind: training\nresidency: {class}\nreplicas: 1\nresources: {{gpus: {gpus}, cpu_milli: 100, \
         memory_mib: 128}}\n"
    );
    cfg.jobs_from_yaml("job.yaml", &yaml).unwrap().remove(0)
}

fn waiver(zone: &str, requirement: &str, expires_at_ms: u64) -> Waiver {
    Waiver {
        id: "00112233aabbccdd".into(),
        zone: zone.into(),
        requirement: requirement.into(),
        reason: "incident 42: HDS zone down".into(),
        approvers: vec!["alice".into(), "bob".into()],
        expires_at_ms,
    }
}

fn zones(e: &Engine, id: sovra_engine::JobId) -> Vec<String> {
    e.job(id)
        .unwrap()
        .placement
        .as_ref()
        .map(|d| d.replicas.iter().map(|p| p.zone.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn a_waiver_places_a_job_in_one_zone_until_it_expires() {
    let (mut e, cfg) = setup();
    // The HDS zone is full: a second job waits.
    let a = e.submit(job(&cfg, "a", "fr-health", 4), None).unwrap();
    let b = e.submit(job(&cfg, "b", "fr-health", 4), None).unwrap();
    e.schedule_at(1_000);
    assert_eq!(zones(&e, a), ["hds"]);
    assert_eq!(e.job(b).unwrap().state, JobState::Pending);

    // A waiver of another requirement, or for a zone failing two requirements, changes nothing.
    e.grant_exception(b, waiver("plain", "country", 10_000)).unwrap();
    e.schedule_at(2_000);
    assert_eq!(e.job(b).unwrap().state, JobState::Pending);
    e.grant_exception(b, waiver("de", "certification:HDS", 10_000)).unwrap();
    e.schedule_at(2_500);
    assert_eq!(e.job(b).unwrap().state, JobState::Pending, "de fails country, not HDS");

    // The right waiver: placed in `plain`, the zone it names.
    e.grant_exception(b, waiver("plain", "certification:HDS", 10_000)).unwrap();
    e.schedule_at(3_000);
    assert_eq!(e.job(b).unwrap().state, JobState::Placed);
    assert_eq!(zones(&e, b), ["plain"]);
    assert_eq!(e.next_exception_expiry(), Some(10_000));

    // Not yet expired: nothing happens.
    assert_eq!(e.expire_exceptions(9_999), (vec![], vec![]));
    // Expired: released and requeued; the HDS zone is still full, so it waits.
    let (released, ended) = e.expire_exceptions(10_000);
    assert_eq!(ended.iter().map(|e| e.0).collect::<Vec<_>>(), [b]);
    assert_eq!(released.len(), 1);
    assert!(released[0].1.contains("placement exception 00112233aabbccdd (zone plain, certification:HDS) expired"));
    assert!(e.job(b).unwrap().job.exception.is_none());
    e.schedule_at(10_001);
    assert_eq!(e.job(b).unwrap().state, JobState::Pending);
    assert!(zones(&e, b).is_empty());
}

#[test]
fn a_refused_job_is_revived_and_a_job_that_no_longer_needs_its_waiver_keeps_running() {
    let (mut e, cfg) = setup();
    // fr-secure needs SecNumCloud too: no zone has it, so the job is refused at submit.
    let err = e.submit(job(&cfg, "s", "fr-secure", 1), None).unwrap_err();
    let sovra_engine::SubmitError::Refused { id, .. } = err else { panic!("{err:?}") };
    assert_eq!(e.job(id).unwrap().state, JobState::Refused);
    e.grant_exception(id, waiver("hds", "certification:SecNumCloud", 5_000)).unwrap();
    assert_eq!(e.job(id).unwrap().state, JobState::Pending);
    e.schedule_at(1_000);
    assert_eq!(zones(&e, id), ["hds"]);

    // A job in a compliant zone whose (unused) waiver expires keeps running.
    let c = e.submit(job(&cfg, "c", "fr-health", 1), None).unwrap();
    e.grant_exception(c, waiver("plain", "certification:HDS", 5_000)).unwrap();
    e.schedule_at(1_500);
    assert_eq!(zones(&e, c), ["hds"], "h1 has room left in the compliant zone");
    let (released, ended) = e.expire_exceptions(5_000);
    assert_eq!(ended.len(), 2);
    assert_eq!(released.iter().map(|r| r.0).collect::<Vec<_>>(), [id], "only the job placed by its waiver");
    assert_eq!(e.job(c).unwrap().state, JobState::Placed);

    // Finished jobs take no waiver.
    e.cancel(c).unwrap();
    assert!(e.grant_exception(c, waiver("plain", "certification:HDS", 9_000)).is_err());
}
