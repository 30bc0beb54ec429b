//! Verification no configuration can switch off: a `signature.rego` override, a policy declaring the signature
//! package, an exception naming the signature gate, and a gate whose `deny` is undefined.

mod support;

use sovra_domain::datazone::Stage;
use sovra_oms::dsse::Envelope;
use sovra_promotion::grants::sign_exception;
use sovra_promotion::{PromoteError, PromotionConfig};
use support::*;

/// Tampers the weights blob of the pushed version in its training data zone.
fn tamper(fx: &Fx, p: &sovra_promotion::Promoter) {
    let v = p.registry.resolve("resnet", None).unwrap();
    let f = v.files.iter().find(|f| f.name == "weights/w0.bin").unwrap();
    let blob =
        fx.p("registry/blobs").join(sovra_registry::BlobStore::location(&v.locations[0].data_zone, &f.digest).as_ref());
    std::fs::write(blob, b"tampered").unwrap();
}

fn load_err(fx: &Fx) -> String {
    let config = PromotionConfig::load(&fx.p("promotion.yaml")).unwrap();
    let cluster = sovra_domain::ClusterConfig::load(&fx.p("cluster.yaml")).unwrap();
    let registry = sovra_registry::Registry::open(&fx.p("registry")).unwrap();
    match sovra_promotion::Promoter::new(registry, config, cluster) {
        Ok(_) => panic!("the policies loaded"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        }
    }
}

#[test]
fn a_signature_rego_override_is_refused_and_cannot_disable_verification() {
    let fx = Fx::with_config("policies: policies\n");
    std::fs::create_dir(fx.p("policies")).unwrap();
    std::fs::write(fx.p("policies/signature.rego"), "package sovra.gates.signature\nimport rego.v1\ndeny := set()\n")
        .unwrap();
    let e = load_err(&fx);
    assert!(e.contains("signature.rego") && e.contains("built into the promotion service"), "{e}");

    // The same package under another file name is refused too.
    std::fs::remove_file(fx.p("policies/signature.rego")).unwrap();
    std::fs::write(fx.p("policies/allow.rego"), "package sovra.gates.signature\nimport rego.v1\ndeny := set()\n")
        .unwrap();
    let e = load_err(&fx);
    assert!(e.contains("allow.rego") && e.contains("`signature`"), "{e}");
}

#[test]
fn verification_holds_with_every_policy_replaced_by_an_allow_all() {
    let fx = Fx::with_config("policies: policies\n");
    std::fs::create_dir(fx.p("policies")).unwrap();
    for gate in ["residency", "training_zone", "approvals", "evaluation"] {
        std::fs::write(
            fx.p(&format!("policies/{gate}.rego")),
            format!("package sovra.gates.{gate}\nimport rego.v1\ndeny := set()\n"),
        )
        .unwrap();
    }
    let p = fx.promoter();
    p.push(&fx.push_req("eu-restricted")).unwrap();
    tamper(&fx, &p);
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].0, "signature");
    assert!(d[0].1[0].contains("does not verify"), "{d:?}");
    let v = p.registry.resolve("resnet", None).unwrap();
    assert_eq!(v.locations.len(), 1, "nothing promoted");
    // `sovra model check` (the Verify RPC) sees it too, naming the file.
    let c = p.verify_stored(&v);
    assert_eq!(c["verified"], false, "{c}");
    assert!(c["data_zones"][0]["error"].as_str().unwrap().contains("weights/w0.bin"), "{c}");
}

#[test]
fn an_exception_for_the_signature_gate_is_refused_and_a_recorded_one_is_ignored() {
    let fx = Fx::new();
    let p = fx.promoter();
    p.push(&fx.push_req("eu-restricted")).unwrap();
    // Local mode: the admin asks for it.
    let e = p.grant_exception("resnet", None, "signature", 3600, "incident 9", &fx.key("admin")).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("no exception waives it"), "{e}");
    for check in sovra_promotion::gates::BUILT_IN_CHECKS {
        assert!(p.grant_exception("resnet", None, check, 3600, "x", &fx.key("admin")).is_err(), "{check}");
    }
    // Service mode: an envelope signed on the client by a real admin key is refused as well.
    let v = p.registry.resolve("resnet", None).unwrap();
    let key = sovra_oms::keys::SigningKey::from_pem_file(&fx.key("admin")).unwrap();
    let (env, _): (Envelope, _) =
        sign_exception(&v.model, &v.digest, "signature", "incident 9", "secops", &key, sovra_registry::now(), 3600)
            .unwrap();
    let e = p.record_exception(&env, "secops").unwrap_err();
    assert!(e.to_string().contains("no exception waives it"), "{e}");
    // Nothing was recorded, and a tampered blob is still denied.
    assert!(p.registry.records(&v.model, &v.digest).unwrap().iter().all(|r| r.kind != "exception"));
    tamper(&fx, &p);
    let d = denied(p.promote("resnet", None, Stage::Registry, None, &[]));
    assert_eq!(d[0].0, "signature");
}

#[test]
fn a_gate_whose_deny_is_undefined_is_an_error_naming_the_policy_file() {
    let fx = Fx::with_config("policies: policies\n");
    std::fs::create_dir(fx.p("policies")).unwrap();
    // A complete rule whose body does not match, with no default: undefined.
    std::fs::write(
        fx.p("policies/evaluation.rego"),
        "package sovra.gates.evaluation\nimport rego.v1\ndeny := {\"low\"} if { input.metrics.accuracy < 0 }\n",
    )
    .unwrap();
    let p = fx.promoter();
    p.push(&fx.push_req("eu-restricted")).unwrap();
    let e = p.promote("resnet", None, Stage::Registry, None, &[]).unwrap_err();
    assert!(matches!(e, PromoteError::BadInput(_)), "{e}");
    let m = e.to_string();
    assert!(m.contains("evaluation.rego") && m.contains("`deny` is undefined"), "{m}");
    assert_eq!(p.registry.resolve("resnet", None).unwrap().locations.len(), 1, "nothing promoted");

    // A package without any `deny` rule is the same error.
    drop(p);
    std::fs::write(fx.p("policies/evaluation.rego"), "package sovra.gates.evaluation\nimport rego.v1\nallow := true\n")
        .unwrap();
    let p = fx.promoter();
    let m = p.promote("resnet", None, Stage::Registry, None, &[]).unwrap_err().to_string();
    assert!(m.contains("evaluation.rego") && m.contains("undefined"), "{m}");
}
