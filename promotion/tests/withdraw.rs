//! Withdrawing a version from a data zone: pulls refused with the reason, status, the audit log, blobs gone from
//! that zone only, and a re-promotion that needs fresh approvals.

mod support;

use sovra_domain::datazone::Stage;
use sovra_promotion::{PromoteError, PullFrom};
use support::*;

fn from(zone: &str, stage: Stage) -> PullFrom {
    PullFrom { stage: Some(stage), zone: Some(zone.into()) }
}

#[test]
fn a_withdrawn_version_cannot_be_pulled_shows_in_status_and_needs_fresh_approvals() {
    let fx = Fx::new();
    let mut p = fx.promoter();
    let now = sovra_registry::now();
    p.set_now(Some(now));
    at_registry(&fx, &p, "eu-restricted");
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("bob"), None, true).unwrap();
    p.promote("resnet", None, Stage::Inference, Some("de-fra-c5"), &[]).unwrap();
    let v = p.registry.resolve("resnet", None).unwrap();
    let dz = v.locations.last().unwrap().data_zone.clone();
    assert_eq!(dz.to_string(), "de-fra-c5/inference");

    // Only an admin may withdraw, with a reason, from a zone the version is in.
    let e = p.withdraw("resnet", None, "de-fra-c5", None, "CVE-2026-1", &fx.key("alice")).unwrap_err();
    assert!(e.to_string().contains("not an admin key"), "{e}");
    let e = p.withdraw("resnet", None, "de-fra-c5", None, " ", &fx.key("admin")).unwrap_err();
    assert!(e.to_string().contains("--reason"), "{e}");
    let e = p.withdraw("resnet", None, "nl-ams-general", None, "x", &fx.key("admin")).unwrap_err();
    assert!(e.to_string().contains("is not there"), "{e}");
    // fr-par-secnum holds training and registry: the stage must be named.
    let e = p.withdraw("resnet", None, "fr-par-secnum", None, "x", &fx.key("admin")).unwrap_err();
    assert!(e.to_string().contains("--stage"), "{e}");

    p.set_now(Some(now + 10));
    let rec = p.withdraw("resnet", None, "de-fra-c5", None, "CVE-2026-1: poisoned weights", &fx.key("admin")).unwrap();
    assert_eq!(rec.kind, "withdrawal");
    let v = p.registry.resolve("resnet", None).unwrap();
    assert!(v.locations.iter().all(|l| l.data_zone != dz), "{:?}", v.locations);
    assert_eq!(v.withdrawn.len(), 1);
    assert_eq!(v.withdrawn[0].reason, "CVE-2026-1: poisoned weights");
    // The blobs are gone from that data zone and only from it.
    assert!(!p.registry.blobs().exists(&dz, &v.files[0].digest).unwrap());
    let reg = v.locations.iter().find(|l| l.data_zone.stage == Stage::Registry).unwrap();
    assert!(p.registry.blobs().exists(&reg.data_zone, &v.files[0].digest).unwrap());

    // Pulls from that zone are refused with the reason; from the registry zone they still work.
    let e =
        p.pull("resnet", None, &from("de-fra-c5", Stage::Inference), &fx.p("out"), &fx.p("out.sig"), "ci").unwrap_err();
    assert!(matches!(e, PromoteError::Verification(_)), "{e}");
    assert!(e.to_string().contains("withdrawn") && e.to_string().contains("poisoned weights"), "{e}");
    assert!(!fx.p("out").exists() && !fx.p("out.sig").exists(), "nothing written");
    let e =
        p.pull("resnet", None, &PullFrom { stage: Some(Stage::Inference), zone: None }, &fx.p("o"), &fx.p("o.s"), "x");
    assert!(e.unwrap_err().to_string().contains("withdrawn"));
    p.pull("resnet", None, &from("fr-par-secnum", Stage::Registry), &fx.p("out"), &fx.p("out.sig"), "ci").unwrap();

    // Status shows it; the audit log has the withdrawal, the two refused pulls (audited as refusals) and the pull.
    let s = p.status("resnet", None).unwrap();
    assert_eq!(s["withdrawn"][0]["reason"], "CVE-2026-1: poisoned weights");
    assert_eq!(s["withdrawn"][0]["by"], "secops");
    assert!(s["approvals"].as_array().unwrap().iter().all(|a| a["withdrawn_since"] == true), "{s}");
    let kinds: Vec<String> = p.registry.audit_entries().unwrap().into_iter().map(|e| e.event.kind).collect();
    assert_eq!(kinds[kinds.len() - 4..], ["withdrawal", "refusal", "refusal", "pull"]);

    // Re-promotion into the zone: the old approvals no longer count; fresh ones do.
    p.set_now(Some(now + 20));
    let d = denied(p.promote("resnet", None, Stage::Inference, Some("de-fra-c5"), &[]));
    assert_eq!(d[0].0, "approvals", "{d:?}");
    assert!(d[0].1.iter().any(|r| r.contains("before the version's withdrawal")), "{d:?}");
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("carol"), None, true).unwrap();
    p.promote("resnet", None, Stage::Inference, Some("de-fra-c5"), &[]).unwrap();
    p.pull("resnet", None, &from("de-fra-c5", Stage::Inference), &fx.p("again"), &fx.p("again.sig"), "ci").unwrap();
    // The old withdrawal cannot be replayed against this new stay.
    let env: sovra_oms::dsse::Envelope = serde_json::from_value(rec.envelope).unwrap();
    let e = p.record_withdrawal(&env, "replayer").unwrap_err();
    assert!(e.to_string().contains("sign a new one"), "{e}");
}

#[test]
fn a_withdrawal_signed_by_a_non_admin_or_tampered_is_refused_by_the_recorder() {
    let fx = Fx::new();
    let p = fx.promoter();
    let v = p.push(&fx.push_req("eu-restricted")).unwrap();
    let dz = v.locations[0].data_zone.clone();
    let alice = sovra_oms::keys::SigningKey::from_pem_file(&fx.key("alice")).unwrap();
    let env = sovra_promotion::sign_withdrawal(&v.model, &v.digest, &dz, "r", "secops", &alice, 0).unwrap();
    let e = p.record_withdrawal(&env, "client-x").unwrap_err();
    assert!(e.to_string().contains("not an admin key"), "{e}");
    let admin = sovra_oms::keys::SigningKey::from_pem_file(&fx.key("admin")).unwrap();
    let mut env = sovra_promotion::sign_withdrawal(&v.model, &v.digest, &dz, "r", "secops", &admin, 0).unwrap();
    env.payload = env.payload.replace('A', "B");
    assert!(p.record_withdrawal(&env, "client-x").is_err());
    assert!(p.registry.resolve("resnet", None).unwrap().withdrawn.is_empty(), "nothing recorded");
}
