//! Gated promotion across data zones: every gate allowing and denying, approvals (N of M; unknown, duplicate,
//! mismatched, expired), break-glass exceptions (and their expiry), the stage order, bad input (nothing written,
//! nothing promoted), promotion statements and the audit log.

mod support;

use sovra_domain::datazone::{DataZone, Stage};
use sovra_oms::dsse::Envelope;
use sovra_promotion::service::STATEMENT_TYPE;
use sovra_promotion::{PromoteError, Promoter, PromotionConfig};
use sovra_registry::Registry;
use support::{Fx, at_registry, denied, failed_gates};

#[test]
fn full_flow_training_registry_inference_with_two_approvals() {
    let fx = Fx::new();
    let p = fx.promoter();
    let v = p.push(&fx.push_req("eu-restricted")).unwrap();
    assert_eq!(v.locations[0].data_zone.to_string(), "fr-par-secnum/training");
    let r = p.promote("resnet", None, Stage::Registry, None, &[]).unwrap();
    assert!(r.gates.iter().all(|g| g.result == "pass"), "{:?}", r.gates);
    assert!(!r.under_exception);
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("bob"), None, true).unwrap();
    let r = p.promote("resnet", None, Stage::Inference, Some("de-fra-c5"), &[]).unwrap();
    assert_eq!(r.to.to_string(), "de-fra-c5/inference");
    // Blobs are in the target data zone and verify there.
    for f in &r.version.files {
        p.registry.blobs().verify(&r.to, &f.digest).unwrap();
    }
    // The promotion statement is an in-toto statement signed by the service key.
    let env: Envelope = serde_json::from_value(r.record.envelope.clone()).unwrap();
    let payload = env.verify(STATEMENT_TYPE, &p.config.service_public_key).unwrap();
    let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(st["predicateType"], "https://sovra.dev/promotion/v1");
    assert_eq!(st["subject"][0]["digest"]["sha256"], v.digest.as_str());
    assert_eq!(st["predicate"]["from"]["stage"], "registry");
    assert_eq!(st["predicate"]["to"]["zone"], "de-fra-c5");
    assert_eq!(st["predicate"]["policyDigest"], p.gates.digest());
    assert_eq!(st["predicate"]["approvals"].as_array().unwrap().len(), 2);
    // Pull from inference gives back the same files, which verify against the bundle.
    let out = fx.p("pulled");
    let from = sovra_promotion::PullFrom { stage: Some(Stage::Inference), zone: None };
    p.pull("resnet", None, &from, &out, &fx.p("pulled.sig"), "ci-runner-7").unwrap();
    sovra_oms::verify_model(&out, &fx.p("pulled.sig"), &fx.p("keys/signer.pub.pem"), &Default::default()).unwrap();
    // Every step is on the audit log, and the chain verifies.
    let kinds: Vec<String> = p.registry.audit_entries().unwrap().into_iter().map(|e| e.event.kind).collect();
    assert_eq!(kinds, ["push", "promotion", "approval", "approval", "promotion", "pull"]);
    let pull = p.registry.audit_entries().unwrap().pop().unwrap();
    assert_eq!(
        (pull.event.actor.as_str(), pull.event.details["data_zone"].as_str()),
        ("ci-runner-7", Some("de-fra-c5/inference"))
    );
    assert!(p.registry.verify_audit().unwrap().ok());
    // Nothing is promoted twice into the same data zone, nor into training.
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(d[0].0, "stage_order");
    assert!(d[0].1[0].contains("already in fr-par-secnum/registry"), "{d:?}");
    assert_eq!(failed_gates(p.promote("resnet", None, Stage::Training, None, &[])), ["stage_order"]);
    // A version fans out to another inference zone, from the registry stage, through the gates again.
    let r = p.promote("resnet", None, Stage::Inference, Some("fr-par-secnum"), &[]).unwrap();
    assert_eq!(r.from.to_string(), "fr-par-secnum/registry");
    assert_eq!(
        failed_gates(p.promote("resnet", None, Stage::Inference, Some("de-fra-hyperscaler"), &[])),
        ["residency"]
    );
}

#[test]
fn stage_order_never_skips() {
    let fx = Fx::new();
    let p = fx.promoter();
    p.push(&fx.push_req("eu-restricted")).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Inference, None, &[]));
    assert_eq!(d[0].0, "stage_order");
    assert!(d[0].1[0].contains("would skip registry"), "{d:?}");
    assert_eq!(p.registry.audit_entries().unwrap().last().unwrap().event.kind, "denial");
}

#[test]
fn signature_gate_denies_a_signer_not_allowed() {
    let fx = Fx::new();
    fx.sign("model", "rogue");
    let p = fx.promoter();
    let mut req = fx.push_req("eu-restricted");
    req.public_key = Some(fx.p("keys/rogue.pub.pem"));
    p.push(&req).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].0, "signature");
    assert!(d[0].1[0].contains("not among the allowed signers"), "{d:?}");
}

#[test]
fn signature_gate_denies_a_tampered_blob_in_the_source_zone() {
    let fx = Fx::new();
    let p = fx.promoter();
    let v = p.push(&fx.push_req("eu-restricted")).unwrap();
    let f = v.files.iter().find(|f| f.name == "weights/w0.bin").unwrap();
    let blob =
        fx.p("registry/blobs").join(sovra_registry::BlobStore::location(&v.locations[0].data_zone, &f.digest).as_ref());
    std::fs::write(blob, b"tampered").unwrap();
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(d[0].0, "signature");
    assert!(d[0].1[0].contains("does not verify"), "{d:?}");
    assert!(p.registry.resolve("resnet", None).unwrap().locations.len() == 1, "nothing promoted");
}

#[test]
fn residency_gate_denies_a_target_zone_failing_the_class_and_allows_one_that_satisfies_it() {
    let fx = Fx::new();
    let p = fx.promoter();
    at_registry(&fx, &p, "fr-health");
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("carol"), None, true).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Inference, Some("de-fra-c5"), &[]));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].0, "residency");
    assert!(d[0].1[0].contains("fails residency class fr-health"), "{d:?}");
    let r = p.promote("resnet", None, Stage::Inference, Some("fr-par-secnum"), &[]).unwrap();
    assert!(r.gates.iter().any(|g| g.gate == "residency" && g.result == "pass"));
}

#[test]
fn residency_gate_denies_the_us_owned_sovereign_region_for_eu_restricted() {
    let fx = Fx::new();
    let p = fx.promoter();
    at_registry(&fx, &p, "eu-restricted");
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("bob"), None, true).unwrap();
    assert_eq!(
        failed_gates(p.promote("resnet", None, Stage::Inference, Some("de-fra-hyperscaler"), &[])),
        ["residency"]
    );
}

#[test]
fn training_zone_gate_denies_missing_unpermitted_and_non_resident_training_zones() {
    let fx = Fx::new();
    let p = fx.promoter();
    // Trained in a zone that is not permitted (nl-ams-general holds a training data zone, but training_zones
    // leaves it out).
    std::fs::write(fx.p("provenance.yaml"), "training_job: j\ntraining_zone: nl-ams-general\n").unwrap();
    p.push(&fx.push_req("eu-any")).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(d[0].0, "training_zone");
    assert!(d[0].1[0].contains("not a permitted training zone"), "{d:?}");
    // No training zone at all.
    fx.make_model("model", b"weights-v2");
    fx.sign("model", "signer");
    std::fs::write(fx.p("provenance.yaml"), "training_job: j\n").unwrap();
    p.push(&fx.push_req("eu-any")).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert!(d[0].1[0].contains("does not name the training zone"), "{d:?}");
    // Trained in a permitted zone that fails the model's class.
    fx.make_model("model", b"weights-v3");
    fx.sign("model", "signer");
    std::fs::write(fx.p("provenance.yaml"), "training_job: j\ntraining_zone: de-fra-c5\n").unwrap();
    p.push(&fx.push_req("fr-health")).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(d[0].0, "training_zone");
    assert!(d[0].1.iter().any(|r| r.contains("fails the model's residency class fr-health")), "{d:?}");
    // And allowed: trained in fr-par-secnum.
    fx.make_model("model", b"weights-v4");
    fx.sign("model", "signer");
    std::fs::write(fx.p("provenance.yaml"), "training_job: j\ntraining_zone: fr-par-secnum\n").unwrap();
    p.push(&fx.push_req("fr-health")).unwrap();
    p.promote("resnet", None, Stage::Registry, None, &[]).unwrap();
}

#[test]
fn evaluation_gate_denies_below_threshold_and_missing_metrics() {
    let fx = Fx::with_config("  toxicity: {max: 0.1}\n");
    let p = fx.promoter();
    std::fs::write(fx.p("metrics.json"), "{\"accuracy\": 0.85, \"toxicity\": 0.05}").unwrap();
    p.push(&fx.push_req("eu-any")).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(d[0].0, "evaluation");
    assert!(d[0].1[0].contains("accuracy = 0.85 is below the minimum 0.9"), "{d:?}");
    fx.make_model("model", b"weights-v2");
    fx.sign("model", "signer");
    std::fs::write(fx.p("metrics.json"), "{\"accuracy\": 0.95, \"toxicity\": 0.2}").unwrap();
    p.push(&fx.push_req("eu-any")).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert!(d[0].1[0].contains("toxicity = 0.2 is above the maximum 0.1"), "{d:?}");
    fx.make_model("model", b"weights-v3");
    fx.sign("model", "signer");
    std::fs::write(fx.p("metrics.json"), "{\"toxicity\": 0.01}").unwrap();
    p.push(&fx.push_req("eu-any")).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert!(d[0].1[0].contains("metric accuracy is missing"), "{d:?}");
    fx.make_model("model", b"weights-v4");
    fx.sign("model", "signer");
    std::fs::write(fx.p("metrics.json"), "{\"accuracy\": 0.95, \"toxicity\": 0.01}").unwrap();
    p.push(&fx.push_req("eu-any")).unwrap();
    p.promote("resnet", None, Stage::Registry, None, &[]).unwrap();
}

#[test]
fn inference_without_enough_approvals_is_denied() {
    let fx = Fx::new();
    let p = fx.promoter();
    at_registry(&fx, &p, "eu-restricted");
    let d = denied(p.promote("resnet", None, Stage::Inference, None, &[]));
    assert_eq!(d[0].0, "approvals");
    assert!(d[0].1[0].starts_with("0 of 2 required approvals"), "{d:?}");
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Inference, None, &[]));
    assert!(d[0].1[0].starts_with("1 of 2"), "{d:?}");
}

#[test]
fn unknown_duplicate_mismatched_and_expired_approvals_do_not_count() {
    let fx = Fx::new();
    let mut p = fx.promoter();
    at_registry(&fx, &p, "eu-restricted");
    let now = sovra_registry::now();
    p.set_now(Some(now));
    // Unknown key, twice alice, an approval for the other edge, and bob's that will have expired.
    p.approve("resnet", None, Stage::Inference, &fx.key("mallory"), None, true).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    p.approve("resnet", None, Stage::Registry, &fx.key("carol"), None, true).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("bob"), Some(60), true).unwrap();
    p.set_now(Some(now + 120));
    let d = denied(p.promote("resnet", None, Stage::Inference, None, &[]));
    let reason = &d[0].1[0];
    assert!(reason.starts_with("1 of 2"), "{reason}");
    assert!(reason.contains("unknown key"), "{reason}");
    assert!(reason.contains("duplicate approval by alice"), "{reason}");
    assert!(reason.contains("approval by carol is for"), "{reason}");
    assert!(reason.contains("approval by bob expired"), "{reason}");
    // An approval from a file (CI) counts: carol approves the right edge.
    let rec = p.approve("resnet", None, Stage::Inference, &fx.key("carol"), None, false).unwrap();
    let file = fx.p("carol.approval.json");
    std::fs::write(&file, serde_json::to_vec(&rec.envelope).unwrap()).unwrap();
    let r = p.promote("resnet", None, Stage::Inference, None, &[file]).unwrap();
    assert_eq!(r.to.stage, Stage::Inference);
}

#[test]
fn a_tampered_approval_file_does_not_count() {
    let fx = Fx::new();
    let p = fx.promoter();
    at_registry(&fx, &p, "eu-restricted");
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    let rec = p.approve("resnet", None, Stage::Inference, &fx.key("bob"), None, false).unwrap();
    let mut env: Envelope = serde_json::from_value(rec.envelope).unwrap();
    env.payload = env.payload.replace('A', "B");
    let file = fx.p("bob.json");
    std::fs::write(&file, serde_json::to_vec(&env).unwrap()).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Inference, None, &[file]));
    assert!(d[0].1[0].starts_with("1 of 2"), "{d:?}");
}

#[test]
fn exception_overrides_one_gate_marks_the_promotion_and_expires_by_itself() {
    let fx = Fx::new();
    let mut p = fx.promoter();
    at_registry(&fx, &p, "eu-restricted");
    let now = sovra_registry::now();
    p.set_now(Some(now));
    // Only an admin may grant.
    let e = p.grant_exception("resnet", None, "approvals", 3600, "incident 7", &fx.key("alice")).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("not an admin key"), "{e}");
    assert!(p.grant_exception("resnet", None, "no-such-gate", 3600, "x", &fx.key("admin")).is_err());
    p.grant_exception("resnet", None, "approvals", 3600, "incident 7: hotfix", &fx.key("admin")).unwrap();
    // An hour and a second later it no longer applies.
    p.set_now(Some(now + 3601));
    assert_eq!(failed_gates(p.promote("resnet", None, Stage::Inference, None, &[])), ["approvals"]);
    // Within the hour it does, and the promotion is marked.
    p.set_now(Some(now + 10));
    let r = p.promote("resnet", None, Stage::Inference, None, &[]).unwrap();
    assert!(r.under_exception);
    let g = r.gates.iter().find(|g| g.gate == "approvals").unwrap();
    assert_eq!(g.result, "exception");
    let env: Envelope = serde_json::from_value(r.record.envelope).unwrap();
    let st: serde_json::Value =
        serde_json::from_slice(&env.verify(STATEMENT_TYPE, &p.config.service_public_key).unwrap()).unwrap();
    assert_eq!(st["predicate"]["underException"], true);
    let kinds: Vec<String> = p.registry.audit_entries().unwrap().into_iter().map(|e| e.event.kind).collect();
    assert!(kinds.contains(&"exception".to_string()));
}

#[test]
fn an_exception_for_one_gate_does_not_cover_another() {
    let fx = Fx::new();
    let p = fx.promoter();
    at_registry(&fx, &p, "fr-health");
    p.grant_exception("resnet", None, "approvals", 3600, "incident", &fx.key("admin")).unwrap();
    assert_eq!(failed_gates(p.promote("resnet", None, Stage::Inference, Some("de-fra-c5"), &[])), ["residency"]);
}

#[test]
fn a_denial_lists_every_failed_gate() {
    let fx = Fx::new();
    fx.sign("model", "rogue");
    std::fs::write(fx.p("provenance.yaml"), "training_job: j\n").unwrap();
    std::fs::write(fx.p("metrics.json"), "{\"accuracy\": 0.5}").unwrap();
    let p = fx.promoter();
    let mut req = fx.push_req("eu-any");
    req.public_key = Some(fx.p("keys/rogue.pub.pem"));
    p.push(&req).unwrap();
    let gates = failed_gates(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(gates, ["evaluation", "signature", "training_zone"]);
}

fn nothing_stored(fx: &Fx, p: &Promoter) {
    assert!(p.registry.versions(None).unwrap().is_empty());
    let blobs = fx.p("registry/blobs");
    let mut files = 0;
    let mut stack = vec![blobs];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() { stack.push(e.path()) } else { files += 1 }
        }
    }
    assert_eq!(files, 0, "no blob may be left behind");
    assert!(p.registry.audit_entries().unwrap().is_empty());
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let fx = Fx::new();
    let p = fx.promoter();
    // Corrupt bundle JSON.
    std::fs::write(fx.p("bad.sig"), b"{not json").unwrap();
    let mut req = fx.push_req("eu-any");
    req.signature = fx.p("bad.sig");
    req.public_key = Some(fx.p("keys/signer.pub.pem"));
    let e = p.push(&req).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("bad.sig"), "{e}");
    nothing_stored(&fx, &p);
    // Wrong key.
    let mut req = fx.push_req("eu-any");
    req.public_key = Some(fx.p("keys/rogue.pub.pem"));
    let e = p.push(&req).unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
    assert!(e.to_string().contains("key mismatch"), "{e}");
    nothing_stored(&fx, &p);
    // A missing file.
    std::fs::remove_file(fx.p("model/weights/w0.bin")).unwrap();
    let e = p.push(&fx.push_req("eu-any")).unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
    assert!(e.to_string().contains("weights/w0.bin"), "{e}");
    nothing_stored(&fx, &p);
    // A symlink leading outside the model.
    std::fs::write(fx.p("outside.bin"), b"secret").unwrap();
    std::os::unix::fs::symlink(fx.p("outside.bin"), fx.p("model/weights/w0.bin")).unwrap();
    let e = p.push(&fx.push_req("eu-any")).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    nothing_stored(&fx, &p);
    // Unknown residency class, unknown training zone, bad model name.
    assert_eq!(p.push(&fx.push_req("no-such-class")).unwrap_err().exit_code(), 2);
    let mut req = fx.push_req("eu-any");
    req.zone = Some("de-fra-hyperscaler".into());
    assert!(p.push(&req).unwrap_err().to_string().contains("holds no training data zone"));
    let mut req = fx.push_req("eu-any");
    req.name = "../evil".into();
    assert_eq!(p.push(&req).unwrap_err().exit_code(), 2);
    nothing_stored(&fx, &p);
}

#[test]
fn a_manifest_naming_a_path_outside_the_model_is_refused() {
    use sovra_oms::manifest::{Manifest, Method, Resource, Serialization};
    let fx = Fx::new();
    let p = fx.promoter();
    let manifest = Manifest {
        model_name: "model".into(),
        resources: vec![Resource {
            name: "../outside.bin".into(),
            algorithm: "sha256".into(),
            digest: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        }],
        serialization: Serialization {
            method: Method::Files,
            hash_type: "sha256".into(),
            allow_symlinks: false,
            ignore_paths: vec![],
        },
    };
    let key = sovra_oms::SigningKey::from_pem_file(&fx.key("signer")).unwrap();
    std::fs::write(fx.p("evil.sig"), sovra_oms::sign_manifest(&manifest, &key).unwrap()).unwrap();
    let mut req = fx.push_req("eu-any");
    req.signature = fx.p("evil.sig");
    let e = p.push(&req).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("outside the model directory"), "{e}");
    nothing_stored(&fx, &p);
}

#[test]
fn a_corrupt_approval_file_promotes_nothing() {
    let fx = Fx::new();
    let p = fx.promoter();
    p.push(&fx.push_req("eu-any")).unwrap();
    std::fs::write(fx.p("a.json"), b"[1,2").unwrap();
    let e = p.promote("resnet", None, Stage::Registry, None, &[fx.p("a.json")]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(p.registry.resolve("resnet", None).unwrap().locations.len(), 1);
}

#[test]
fn policies_can_be_overridden_from_a_directory() {
    let fx = Fx::with_config("policies: policies\n");
    std::fs::create_dir(fx.p("policies")).unwrap();
    // Replace the evaluation gate by one that always passes, and add a gate of our own.
    std::fs::write(fx.p("policies/evaluation.rego"), "package sovra.gates.evaluation\nimport rego.v1\ndeny := set()\n")
        .unwrap();
    std::fs::write(
        fx.p("policies/naming.rego"),
        "package sovra.gates.naming\nimport rego.v1\ndeny contains \"model names must start with prod-\" if {\n  not startswith(input.model.name, \"prod-\")\n}\n",
    )
    .unwrap();
    std::fs::write(fx.p("metrics.json"), "{\"accuracy\": 0.1}").unwrap();
    let p = fx.promoter();
    p.push(&fx.push_req("eu-any")).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(d, [("naming".to_string(), vec!["model names must start with prod-".to_string()])]);
}

#[test]
fn config_errors_name_the_field() {
    let fx = Fx::with_config("bogus: 1\n");
    let e = PromotionConfig::load(&fx.p("promotion.yaml")).unwrap_err();
    assert!(e.contains("promotion.yaml") && e.contains("bogus"), "{e}");
    let fx = Fx::new();
    let text = std::fs::read_to_string(fx.p("promotion.yaml")).unwrap().replace("inference: 2", "inference: 5");
    std::fs::write(fx.p("promotion.yaml"), text).unwrap();
    let e = PromotionConfig::load(&fx.p("promotion.yaml")).unwrap_err();
    assert!(e.contains("approvals.inference"), "{e}");
}

#[test]
fn a_version_that_reached_registry_without_a_signed_promotion_cannot_go_to_inference() {
    let fx = Fx::new();
    let p = fx.promoter();
    let mut v = p.push(&fx.push_req("eu-restricted")).unwrap();
    // Someone writes a registry location straight into the metadata, bypassing the promotion service.
    v.locations.push(sovra_registry::Location {
        data_zone: DataZone::new("fr-par-secnum", Stage::Registry).unwrap(),
        since: v.pushed_at + 1,
        promotion: None,
    });
    let event = sovra_registry::AuditEvent {
        kind: "forged".into(),
        subject: "resnet".into(),
        actor: "mallory".into(),
        details: serde_json::json!({}),
    };
    p.registry.commit(&[Registry::version_write(&v)], event).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("alice"), None, true).unwrap();
    p.approve("resnet", None, Stage::Inference, &fx.key("bob"), None, true).unwrap();
    p.grant_exception("resnet", None, "approvals", 3600, "even with an exception", &fx.key("admin")).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Inference, None, &[]));
    assert_eq!(d[0].0, "chain");
    assert!(d[0].1[0].contains("no verified promotion record"), "{d:?}");
}

#[test]
fn evaluate_is_a_dry_run_that_records_nothing() {
    let fx = Fx::new();
    let p = fx.promoter();
    at_registry(&fx, &p, "eu-restricted");
    let before = p.registry.audit_entries().unwrap().len();
    let d = p.evaluate("resnet", None, Stage::Inference, None, &[]).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.gates.iter().filter(|g| !g.allows()).map(|g| g.gate.as_str()).collect::<Vec<_>>(), ["approvals"]);
    assert_eq!(d.input["approvals"]["required"], 2);
    assert_eq!(d.input["target"]["zone"]["id"], "fr-par-secnum");
    assert_eq!(p.registry.audit_entries().unwrap().len(), before);
    assert_eq!(p.registry.resolve("resnet", None).unwrap().locations.len(), 2);
}

#[test]
fn a_hostile_approval_file_is_set_aside_without_panicking() {
    let fx = Fx::new();
    let p = fx.promoter();
    at_registry(&fx, &p, "eu-restricted");
    let env = Envelope {
        payload: "!!not base64!!".into(),
        payload_type: "application/vnd.sovra.approval.v1+json".into(),
        signatures: vec![sovra_oms::dsse::EnvelopeSignature { keyid: "é".repeat(20), sig: "x".into() }],
    };
    std::fs::write(fx.p("hostile.json"), serde_json::to_vec(&env).unwrap()).unwrap();
    let d = denied(p.promote("resnet", None, Stage::Inference, None, &[fx.p("hostile.json")]));
    assert!(d[0].1[0].contains("approval by unknown key éééééééééééé"), "{d:?}");
}

/// Issue #14: grants signed on a client and recorded by the service are verified before anything is recorded.
#[test]
fn record_approval_and_exception_verify_signer_payload_and_limits() {
    use sovra_oms::keys::SigningKey;
    use sovra_promotion::{sign_approval, sign_exception};
    let fx = Fx::new();
    let p = fx.promoter().with_now(1_000_000);
    let v = p.push(&fx.push_req("eu-restricted")).unwrap();
    let key = |k: &str| SigningKey::from_pem_file(&fx.key(k)).unwrap();
    let before = p.registry.records(&v.model, &v.digest).unwrap().len();
    let now = 1_000_000;
    let cases = [
        // Not an approver's key.
        sign_approval(&v.model, &v.digest, Stage::Inference, "mallory", &key("mallory"), now, 60).unwrap().0,
        // Names another approver than the key's.
        sign_approval(&v.model, &v.digest, Stage::Inference, "bob", &key("alice"), now, 60).unwrap().0,
        // Expired, issued in the future, too long, unknown digest.
        sign_approval(&v.model, &v.digest, Stage::Inference, "alice", &key("alice"), now - 120, 60).unwrap().0,
        sign_approval(&v.model, &v.digest, Stage::Inference, "alice", &key("alice"), now + 3600, 60).unwrap().0,
        sign_approval(&v.model, &v.digest, Stage::Inference, "alice", &key("alice"), now, 8 * 86_400).unwrap().0,
        sign_approval(&v.model, &"0".repeat(64), Stage::Inference, "alice", &key("alice"), now, 60).unwrap().0,
    ];
    for env in &cases {
        assert!(p.record_approval(env, "ci").is_err(), "{env:?}");
    }
    // A tampered payload does not verify.
    let (mut env, _) = sign_approval(&v.model, &v.digest, Stage::Inference, "alice", &key("alice"), now, 60).unwrap();
    let good = env.clone();
    env.payload = env.payload.chars().rev().collect();
    assert!(matches!(p.record_approval(&env, "ci"), Err(PromoteError::Verification(_))));
    let exceptions = [
        sign_exception(&v.model, &v.digest, "approvals", "x", "secops", &key("alice"), now, 60).unwrap().0,
        sign_exception(&v.model, &v.digest, "no-such-gate", "x", "secops", &key("admin"), now, 60).unwrap().0,
        sign_exception(&v.model, &v.digest, "approvals", " ", "secops", &key("admin"), now, 60).unwrap().0,
        sign_exception(&v.model, &v.digest, "approvals", "x", "secops", &key("admin"), now, 2 * 86_400).unwrap().0,
    ];
    for env in &exceptions {
        assert!(p.record_exception(env, "ci").is_err(), "{env:?}");
    }
    assert_eq!(p.registry.records(&v.model, &v.digest).unwrap().len(), before, "nothing recorded");
    // The good ones are recorded, with the caller as the audited actor.
    p.record_approval(&good, "alice-ci").unwrap();
    let (ex, _) =
        sign_exception(&v.model, &v.digest, "approvals", "incident", "secops", &key("admin"), now, 60).unwrap();
    p.record_exception(&ex, "secops-ci").unwrap();
    let actors: Vec<String> = p.registry.audit_entries().unwrap().into_iter().map(|e| e.event.actor).collect();
    assert!(actors.ends_with(&["alice-ci".to_string(), "secops-ci".to_string()]), "{actors:?}");
}

/// Issue #14: the service's public key verifies; its private key is read only to sign, and must be its pair.
#[test]
fn the_service_key_is_split_and_read_only_to_sign() {
    let fx = Fx::new();
    let text = std::fs::read_to_string(fx.p("promotion.yaml")).unwrap();
    // Only the public key: loads, but cannot sign (the error names the field).
    let public_only = text.replace("service_key: keys/service.pem", "service_public_key: keys/service.pub.pem");
    std::fs::write(fx.p("promotion.yaml"), &public_only).unwrap();
    let c = PromotionConfig::load(&fx.p("promotion.yaml")).unwrap();
    assert!(c.service_signer().unwrap_err().contains("field `service_key`"));
    // Neither: refused at load, naming service_public_key.
    std::fs::write(fx.p("promotion.yaml"), text.replace("service_key: keys/service.pem\n", "")).unwrap();
    assert!(PromotionConfig::load(&fx.p("promotion.yaml")).unwrap_err().contains("service_public_key"));
    // A private key that is not the public key's pair is refused when signing.
    let mismatched = text.replace(
        "service_key: keys/service.pem",
        "service_public_key: keys/service.pub.pem\nservice_key: keys/rogue.pem",
    );
    std::fs::write(fx.p("promotion.yaml"), mismatched).unwrap();
    let c = PromotionConfig::load(&fx.p("promotion.yaml")).unwrap();
    assert!(c.service_signer().unwrap_err().contains("not the private key of `service_public_key`"));
    // Both, matching: the pair signs.
    let both = text.replace(
        "service_key: keys/service.pem",
        "service_public_key: keys/service.pub.pem\nservice_key: keys/service.pem",
    );
    std::fs::write(fx.p("promotion.yaml"), both).unwrap();
    let c = PromotionConfig::load(&fx.p("promotion.yaml")).unwrap();
    assert_eq!(c.service_signer().unwrap().public_key().hint(), c.service_public_key.hint());
}
