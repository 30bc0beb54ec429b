use super::*;
use crate::lookup::StaticLookup;
use crate::review::decode;

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: Hexa SAS, operator_hq: FR, certifications: [HDS, SecNumCloud]}
  - {id: us, country: DE, region: Frankfurt, jurisdiction: EU, operator: Hyper Inc., operator_hq: US, certifications: [C5]}
pools:
  - {id: fr-train, zone: fr, purpose: training}
  - {id: fr-infer, zone: fr, purpose: inference}
  - {id: us-train, zone: us, purpose: training}
residency_classes:
  - {name: fr-health, countries: [FR], certifications: [HDS]}
  - {name: eu-any, jurisdictions: [EU]}
nodes: []
"#;

fn policy() -> Policy {
    let config = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).expect("config");
    Policy::new(config, "sovra-scheduler", ["group:pool-admins".parse().expect("identity")])
}

fn lookup() -> StaticLookup {
    let mut l = StaticLookup::default();
    l.namespaces.insert("health".into(), Some("fr-health".into()));
    l.namespaces.insert("open".into(), None);
    l.namespaces.insert("typo".into(), Some("fr-helth".into()));
    l.nodes.insert("fr-1".into(), Some("fr-train".into()));
    l.nodes.insert("us-1".into(), Some("us-train".into()));
    l.nodes.insert("bare".into(), None);
    l
}

#[allow(clippy::too_many_arguments)] // one argument per review field the tests vary
fn review(
    kind: &str,
    sub: &str,
    ns: &str,
    op: &str,
    object: Value,
    old: Value,
    user: &str,
    groups: &[&str],
) -> Request {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "", "version": "v1", "kind": kind}, "subResource": sub,
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": object.pointer("/metadata/name").cloned().unwrap_or(json!("x")), "namespace": ns, "operation": op,
        "userInfo": {"username": user, "groups": groups}, "object": object, "oldObject": old}});
    decode(&serde_json::to_vec(&body).expect("json")).expect("review")
}

fn pod(spec: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": spec})
}

/// Applies a mutating verdict's `add` operations (the only kind it emits; each path's parent exists) to the object.
fn apply(mut obj: Value, v: &Verdict) -> Value {
    let Verdict::Allow(ops) = v else { panic!("denied: {v:?}") };
    for op in ops {
        assert_eq!(op.op, "add");
        let (parent, key) = op.path.rsplit_once('/').expect("path");
        obj.pointer_mut(parent).expect("parent")[key] = op.value.clone();
    }
    obj
}

fn deny(v: Verdict) -> String {
    match v {
        Verdict::Deny(why) => why,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn a_cpu_only_pod_of_a_regulated_namespace_is_confined_to_the_permitted_pools() {
    let (p, l) = (policy(), lookup());
    let cpu = pod(
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}], "schedulerName": "default-scheduler"}),
    );
    let req = review("Pod", "", "health", "CREATE", cpu.clone(), Value::Null, "alice", &[]);
    let mutated = apply(cpu, &p.mutate(&req, &l));
    assert_eq!(mutated["metadata"]["labels"][RESIDENCY_LABEL], "fr-health");
    assert_eq!(mutated["spec"]["schedulerName"], "sovra-scheduler");
    let terms = &mutated["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(terms, &json!([{"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": ["fr-train"]}]}]));
    // The validating call accepts the mutated pod, and refuses the original.
    let ok = review("Pod", "", "health", "CREATE", mutated, Value::Null, "alice", &[]);
    assert_eq!(p.validate(&ok, &l), Verdict::Allow(vec![]));
    assert!(deny(p.validate(&req, &l)).contains("sovra.io/residency"));
}

#[test]
fn existing_affinity_terms_each_get_the_requirement() {
    let (p, l) = (policy(), lookup());
    let spec = json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["us-1"]}]}]}},
        "podAntiAffinity": {"x": 1}}});
    let req = review("Pod", "", "health", "CREATE", pod(spec.clone()), Value::Null, "alice", &[]);
    let m = apply(pod(spec), &p.mutate(&req, &l));
    let terms =
        m["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    assert_eq!(terms.len(), 2);
    for t in &terms {
        assert!(t["matchExpressions"].as_array().is_some_and(|e| e.iter().any(|e| e["key"] == POOL_LABEL)), "{t}");
    }
    assert_eq!(m["spec"]["affinity"]["podAntiAffinity"], json!({"x": 1}), "other affinity kept");
    // A term without the requirement (added by someone after Sovra) is refused.
    let mut tampered = m.clone();
    tampered["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array_mut()
        .expect("terms")
        .push(json!({"matchExpressions": [{"key": "b", "operator": "Exists"}]}));
    assert!(
        deny(p.validate(&review("Pod", "", "health", "CREATE", tampered, Value::Null, "a", &[]), &l))
            .contains("every required node-affinity term")
    );
}

#[test]
fn inference_pods_go_to_inference_pools_and_unregulated_namespaces_are_untouched() {
    let (p, l) = (policy(), lookup());
    let inf = json!({"metadata": {"name": "s", "labels": {KIND_LABEL: "inference"}}, "spec": {"containers": []}});
    let m = apply(inf.clone(), &p.mutate(&review("Pod", "", "health", "CREATE", inf, Value::Null, "a", &[]), &l));
    assert_eq!(
        m["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            ["matchExpressions"][0]["values"],
        json!(["fr-infer"])
    );
    let open = review("Pod", "", "open", "CREATE", pod(json!({"containers": []})), Value::Null, "a", &[]);
    assert_eq!(p.mutate(&open, &l), Verdict::Allow(vec![]));
    assert_eq!(p.validate(&open, &l), Verdict::Allow(vec![]));
}

#[test]
fn a_preset_node_name_outside_the_permitted_pools_is_refused() {
    let (p, l) = (policy(), lookup());
    for (node, needle) in [("us-1", "pool (us-train)"), ("bare", "no pool label"), ("ghost", "does not exist")] {
        let req = review(
            "Pod",
            "",
            "health",
            "CREATE",
            pod(json!({"containers": [], "nodeName": node})),
            Value::Null,
            "a",
            &[],
        );
        assert!(deny(p.mutate(&req, &l)).contains(needle), "{node}");
    }
    let ok = review(
        "Pod",
        "",
        "health",
        "CREATE",
        pod(json!({"containers": [], "nodeName": "fr-1"})),
        Value::Null,
        "a",
        &[],
    );
    assert!(matches!(p.mutate(&ok, &l), Verdict::Allow(ops) if !ops.is_empty()));
}

#[test]
fn unknown_classes_other_schedulers_contradicting_labels_and_unknown_namespaces_are_refused() {
    let (p, l) = (policy(), lookup());
    let r = |ns: &str, obj: Value| review("Pod", "", ns, "CREATE", obj, Value::Null, "a", &[]);
    let why = deny(p.mutate(&r("typo", pod(json!({"containers": []}))), &l));
    assert!(why.contains("fr-helth") && why.contains(RESIDENCY_LABEL) && why.contains("known classes"), "{why}");
    assert!(deny(p.validate(&r("typo", pod(json!({"containers": []}))), &l)).contains("fr-helth"));
    assert!(
        deny(p.mutate(&r("health", pod(json!({"containers": [], "schedulerName": "volcano"}))), &l))
            .contains("volcano")
    );
    let labelled = json!({"metadata": {"name": "p", "labels": {RESIDENCY_LABEL: "eu-any"}}, "spec": {}});
    assert!(deny(p.mutate(&r("health", labelled), &l)).contains("contradicts"));
    assert!(deny(p.mutate(&r("nowhere", pod(json!({}))), &l)).contains("does not exist"));
    let bad_kind = json!({"metadata": {"name": "p", "labels": {KIND_LABEL: "batch"}}, "spec": {}});
    assert!(deny(p.mutate(&r("health", bad_kind), &l)).contains(KIND_LABEL));
}

#[test]
fn bindings_to_nodes_outside_the_class_are_refused() {
    let (p, l) = (policy(), lookup());
    let b = |node: &str| {
        review(
            "Binding",
            "binding",
            "health",
            "CREATE",
            json!({"metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}}),
            Value::Null,
            "a",
            &[],
        )
    };
    assert_eq!(p.validate(&b("fr-1"), &l), Verdict::Allow(vec![]));
    assert!(deny(p.validate(&b("us-1"), &l)).contains("us-train"));
    assert!(deny(p.validate(&b("ghost"), &l)).contains("does not exist"));
}

#[test]
fn only_admins_set_change_or_remove_pool_and_residency_labels() {
    let (p, l) = (policy(), lookup());
    let node = |pool: Option<&str>| match pool {
        Some(pool) => json!({"metadata": {"name": "n", "labels": {POOL_LABEL: pool, "other": "x"}}}),
        None => json!({"metadata": {"name": "n", "labels": {"other": "x"}}}),
    };
    let upd = |old, new, user: &str, groups: &[&str]| review("Node", "", "", "UPDATE", new, old, user, groups);
    let why = deny(
        p.validate(&upd(node(Some("fr-train")), node(Some("us-train")), "mallory", &["system:authenticated"]), &l),
    );
    assert!(
        why.contains("mallory")
            && why.contains("fr-train")
            && why.contains("us-train")
            && why.contains("group:pool-admins"),
        "{why}"
    );
    assert!(deny(p.validate(&upd(node(Some("fr-train")), node(None), "mallory", &[]), &l)).contains("unset"));
    assert!(matches!(
        p.validate(
            &review("Node", "", "", "CREATE", node(Some("fr-train")), Value::Null, "system:node:n", &["system:nodes"]),
            &l
        ),
        Verdict::Deny(_)
    ));
    assert_eq!(
        p.validate(&upd(node(Some("fr-train")), node(Some("us-train")), "ops", &["pool-admins"]), &l),
        Verdict::Allow(vec![])
    );
    // Other label changes (a heartbeat, GFD labels) pass.
    let mut other = node(Some("fr-train"));
    other["metadata"]["labels"]["other"] = "y".into();
    assert_eq!(p.validate(&upd(node(Some("fr-train")), other, "system:node:n", &[]), &l), Verdict::Allow(vec![]));
    let ns = |class: &str| json!({"metadata": {"name": "health", "labels": {RESIDENCY_LABEL: class}}});
    let why = deny(p.validate(&review("Namespace", "", "", "UPDATE", ns("eu-any"), ns("fr-health"), "dev", &[]), &l));
    assert!(why.contains("namespace health") && why.contains(RESIDENCY_LABEL), "{why}");
    // No admin configured: nobody.
    let nobody = Policy::new(ClusterConfig::from_yaml("cluster.yaml", CLUSTER).expect("config"), "s", []);
    assert!(
        deny(nobody.validate(&upd(node(Some("fr-train")), node(Some("us-train")), "ops", &["pool-admins"]), &l))
            .contains("nobody")
    );
}

#[test]
fn identities_parse_or_say_how_to_write_them() {
    assert_eq!("user:alice".parse::<Identity>(), Ok(Identity::User("alice".into())));
    assert_eq!("group:system:masters".parse::<Identity>(), Ok(Identity::Group("system:masters".into())));
    assert!("alice".parse::<Identity>().expect_err("bad").contains("user:NAME"));
}
