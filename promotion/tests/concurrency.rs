//! Concurrent promotions through one shared [`Promoter`]: no lost update (the commit compares and swaps the
//! version record and the alias, and a promotion that lost is decided again on the new state).

mod support;

use sovra_domain::datazone::Stage;
use sovra_promotion::{PromoteError, Promoter};
use std::sync::{Arc, Barrier};
use support::Fx;

fn assert_sync<T: Send + Sync>() {}

/// Runs one promotion per zone in `zones` at once, each thread starting at the same barrier.
fn promote_all(p: &Arc<Promoter>, zones: &[&'static str]) -> Vec<Result<sovra_promotion::Promoted, PromoteError>> {
    let barrier = Arc::new(Barrier::new(zones.len()));
    let handles: Vec<_> = zones
        .iter()
        .map(|zone| {
            let (p, barrier, zone) = (p.clone(), barrier.clone(), *zone);
            std::thread::spawn(move || {
                barrier.wait();
                p.promote("resnet", None, Stage::Registry, Some(zone), &[])
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("a promoting thread panicked")).collect()
}

#[test]
fn of_n_concurrent_promotions_into_one_zone_exactly_one_succeeds() {
    assert_sync::<Promoter>();
    for _round in 0..3 {
        let fx = Fx::new();
        let p = Arc::new(fx.promoter());
        p.push(&fx.push_req("eu-restricted")).unwrap();
        let results = promote_all(&p, &["fr-par-secnum"; 6]);
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            ok,
            1,
            "{:?}",
            results.iter().map(|r| r.as_ref().map(|_| ()).map_err(|e| e.to_string())).collect::<Vec<_>>()
        );
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            match r {
                PromoteError::Denied { failed, .. } => {
                    assert_eq!(failed[0].gate, "stage_order", "{r}");
                    assert!(failed[0].reasons[0].contains("already in fr-par-secnum/registry"), "{r}");
                }
                other => panic!("expected a stage_order refusal, got {other}"),
            }
        }
        let v = p.registry.version("resnet", &results.iter().find_map(|r| r.as_ref().ok()).unwrap().version.digest);
        let v = v.unwrap().unwrap();
        let zones: Vec<String> = v.locations.iter().map(|l| l.data_zone.to_string()).collect();
        assert_eq!(zones, ["fr-par-secnum/training", "fr-par-secnum/registry"]);
        let kinds: Vec<String> = p.registry.audit_entries().unwrap().into_iter().map(|e| e.event.kind).collect();
        assert_eq!(kinds.iter().filter(|k| *k == "promotion").count(), 1, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| *k == "denial").count(), 5, "{kinds:?}");
        assert!(p.registry.verify_audit().unwrap().ok());
    }
}

#[test]
fn concurrent_promotions_into_two_zones_keep_both_locations() {
    for _round in 0..3 {
        let fx = Fx::new();
        let p = Arc::new(fx.promoter());
        let pushed = p.push(&fx.push_req("eu-restricted")).unwrap();
        let results = promote_all(&p, &["fr-par-secnum", "de-fra-c5"]);
        for r in &results {
            assert!(r.is_ok(), "{:?}", r.as_ref().err().map(ToString::to_string));
        }
        let v = p.registry.version("resnet", &pushed.digest).unwrap().unwrap();
        let mut zones: Vec<String> = v.locations.iter().map(|l| l.data_zone.to_string()).collect();
        zones.sort();
        assert_eq!(zones, ["de-fra-c5/registry", "fr-par-secnum/registry", "fr-par-secnum/training"]);
        // Each location names the promotion record that brought it.
        let records = p.registry.records(&v.model, &v.digest).unwrap();
        for l in v.locations.iter().filter(|l| l.data_zone.stage == Stage::Registry) {
            assert!(l.promotion.is_some_and(|id| records.iter().any(|r| r.id == id && r.kind == "promotion")), "{l:?}");
        }
        assert!(p.registry.verify_audit().unwrap().ok());
    }
}

#[test]
fn of_concurrent_pushes_of_one_version_exactly_one_is_recorded_and_its_blobs_verify() {
    let fx = Fx::new();
    let p = Arc::new(fx.promoter());
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (p, barrier, req) = (p.clone(), barrier.clone(), fx.push_req("eu-restricted"));
            std::thread::spawn(move || {
                barrier.wait();
                p.push(&req)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("a pushing thread panicked")).collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{:?}",
        results.iter().map(|r| r.as_ref().err().map(ToString::to_string)).collect::<Vec<_>>()
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(e, PromoteError::BadInput(m) if m.contains("already in the registry")), "{e}");
    }
    let v = results.into_iter().find_map(Result::ok).unwrap();
    let dz = &v.locations[0].data_zone;
    for f in &v.files {
        p.registry.blobs().verify(dz, &f.digest).unwrap();
    }
    p.registry.blobs().verify(dz, &v.bundle).unwrap();
    assert_eq!(p.registry.audit_entries().unwrap().len(), 1);
    // And it promotes: the blobs are whole.
    p.promote("resnet", None, Stage::Registry, None, &[]).unwrap();
}
