//! The model filter through the engine: a model-bound inference job goes only to zones holding its version, waits
//! while the availability is unknown (and is refused at submit when the version does not exist), and is stopped
//! and requeued when the version leaves a zone it runs in — but not when the availability merely becomes unknown.
//!
//! Cluster: zone `fr` (pool `infer-fr`, nodes fr-a, fr-b) and zone `de` (pool `infer-de`, node de-a), 4 GPUs each.

use sovra_domain::{ClusterConfig, Job, ModelAvailability, PolicySpec};
use sovra_engine::{Engine, JobState, SubmitError, queues_of};
use std::collections::BTreeSet;
use std::sync::Arc;

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}
  - {id: de, country: DE, region: Frankfurt, jurisdiction: EU, operator: h, operator_hq: DE}
pools:
  - {id: infer-fr, zone: fr, purpose: inference}
  - {id: infer-de, zone: de, purpose: inference}
residency_classes:
  - {name: eu, jurisdictions: [EU]}
  - {name: fr-only, countries: [FR]}
nodes:
  - {name: fr-a, pool: infer-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
  - {name: fr-b, pool: infer-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
  - {name: de-a, pool: infer-de, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
"#;

const DIGEST: &str = "3f9c2a1b00112233";

fn setup() -> (Engine, ClusterConfig) {
    let cfg = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    (Engine::new(&cfg, queues_of(&cfg), PolicySpec::default(), 7).unwrap(), cfg)
}

fn job(cfg: &ClusterConfig, name: &str, class: &str, model: &str) -> Job {
    let yaml = format!(
        "name: {name}\nkind: inference\nresidency: {class}\nreplicas: 2\nmodel: {model}\nresources: {{gpus: 1, \
         cpu_milli: 100, memory_mib: 128}}\n"
    );
    cfg.jobs_from_yaml("job.yaml", &yaml).unwrap().remove(0)
}

fn facts(zones: &[&str]) -> Arc<ModelAvailability> {
    let mut a = ModelAvailability::default();
    let set: BTreeSet<String> = zones.iter().map(|z| z.to_string()).collect();
    a.models.entry("radiology".into()).or_default().insert(DIGEST.into(), set);
    Arc::new(a)
}

#[test]
fn model_bound_jobs_follow_the_models_availability() {
    let (mut e, cfg) = setup();
    // Unknown availability: accepted, held with the reason.
    e.set_models(Arc::new(ModelAvailability { unavailable: Some("service down".into()), ..Default::default() }));
    let a = e.submit(job(&cfg, "a", "eu", "radiology@3f9c2a1b"), None).unwrap();
    e.schedule();
    let r = e.job(a).unwrap();
    assert_eq!(r.state, JobState::Pending);
    let why = &r.explanation.as_ref().unwrap().summary;
    assert!(why.contains("cannot be known now: service down"), "{why}");

    // Known, in `de` only: placed there although `fr` comes first.
    assert!(e.set_models(facts(&["de"])).is_empty());
    e.schedule();
    let r = e.job(a).unwrap();
    assert_eq!(r.state, JobState::Placed);
    assert!(r.placement.as_ref().unwrap().replicas.iter().all(|p| p.zone == "de"));

    // A class `de` fails: waits, naming the model filter and why the zone fails the class.
    let b = e.submit(job(&cfg, "b", "fr-only", "radiology@3f9c2a1b"), None).unwrap();
    e.schedule();
    let x = e.job(b).unwrap().explanation.clone().unwrap();
    assert!(
        x.summary.contains("is promoted to de only, which fails fr-only: country DE is not in [FR]"),
        "{}",
        x.summary
    );
    let model = x.filters.iter().find(|f| f.filter == sovra_placement::FilterKind::Model).unwrap();
    assert_eq!(model.rejected_nodes, 2, "fr-a and fr-b");

    // A version that does not exist: refused at submit, naming it.
    match e.submit(job(&cfg, "c", "eu", "radiology@ffffffff"), None) {
        Err(SubmitError::Refused { explanation, .. }) => {
            assert!(explanation.summary.contains("radiology@ffffffff"), "{}", explanation.summary)
        }
        other => panic!("{other:?}"),
    }

    // Unknown again: what runs keeps running.
    let down = Arc::new(ModelAvailability { unavailable: Some("down".into()), ..Default::default() });
    assert!(e.set_models(down).is_empty());
    assert_eq!(e.job(a).unwrap().state, JobState::Placed);

    // Withdrawn from `de`, promoted to `fr`: `a` is stopped and requeued, then placed in `fr`; `b` too.
    let stopped = e.set_models(facts(&["fr"]));
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].0, a);
    assert!(stopped[0].1.contains("withdrawn from zone de"), "{}", stopped[0].1);
    assert_eq!(e.job(a).unwrap().state, JobState::Pending);
    e.schedule();
    for id in [a, b] {
        let r = e.job(id).unwrap();
        assert_eq!(r.state, JobState::Placed, "job {id}");
        assert!(r.placement.as_ref().unwrap().replicas.iter().all(|p| p.zone == "fr"));
    }
}
