//! The webhook's answers as kube-apiserver reads them (`Webhook::review`, the handler behind `POST /mutate` and
//! `POST /validate`): a malformed body is denied with the reason, never allowed; the counters say so.

use serde_json::json;
use sovra_admission::Policy;
use sovra_admission::http::{Source, Webhook};
use sovra_admission::lookup::StaticLookup;
use sovra_domain::ClusterConfig;
use std::sync::Arc;

fn webhook() -> Webhook {
    let config = ClusterConfig::from_yaml(
        "cluster.yaml",
        "zones: [{id: fr, country: FR, region: P, jurisdiction: EU, operator: o, operator_hq: FR}]\n\
         pools: [{id: fr-train, zone: fr, purpose: training}]\nresidency_classes: [{name: eu, jurisdictions: [EU]}]\nnodes: []\n",
    )
    .expect("config");
    let mut fixed = StaticLookup::default();
    fixed.namespaces.insert("health".into(), Some("eu".into()));
    Webhook::new(Policy::new(config, "sovra-scheduler", []), Source::Fixed(Arc::new(fixed)))
}

#[tokio::test]
async fn malformed_reviews_are_denied_on_both_hooks() {
    let w = webhook();
    for hook in ["mutate", "validate"] {
        for body in [&b"{"[..], b"[]", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#]
        {
            let out = w.review(hook, body).await;
            assert_eq!(out["kind"], "AdmissionReview");
            assert_eq!(out["response"]["allowed"], false, "{hook} {}", String::from_utf8_lossy(body));
            assert!(out["response"]["status"]["message"].as_str().is_some_and(|m| m.contains("malformed")), "{out}");
        }
    }
}

#[tokio::test]
async fn a_regulated_pod_is_patched_and_an_unregulated_one_is_not() {
    let w = webhook();
    let review = |ns: &str| {
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "abc", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "u"}, "object": {"metadata": {"name": "p"}, "spec": {"containers": []}}}}))
        .expect("json")
    };
    let out = w.review("mutate", &review("health")).await;
    assert_eq!(out["response"]["uid"], "abc");
    assert_eq!(out["response"]["allowed"], true);
    assert_eq!(out["response"]["patchType"], "JSONPatch");
    // A namespace the lookup does not know: refused (fail closed), not waved through.
    let out = w.review("mutate", &review("elsewhere")).await;
    assert_eq!(out["response"]["allowed"], false, "{out}");
}
