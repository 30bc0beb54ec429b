//! Conformance of the extender server with the kube-scheduler extender protocol: the 13-point checklist of
//! `reference/k8s-scheduler-extender-protocol.md` §6, over loopback HTTP with JSON fixtures shaped as
//! kube-scheduler sends them (`tests/fixtures/`). Points 11 and 13 need a real kube-scheduler: they are covered by
//! `scripts/k8s-e2e.sh` (and point 11's configuration by `deploy_config_has_managed_resources_and_cache_mode`);
//! point 12 (TLS/mTLS) is in `tests/tls.rs`; point 9's API side in `tests/kube_api.rs`.

mod common;

use common::*;
use sovra_extender::extender::Binder;
use sovra_extender::wire::{self, scheduler_contribution};
use std::collections::BTreeSet;

const ALL: [&str; 6] = ["gpu-fr-1", "gpu-hyper-1", "gpu-nl-1", "gpu-fr-infer-1", "gpu-fr-small", "ghost-node"];

/// Checklist 1: the exact PascalCase JSON of types_test.go decodes, and so does its all-lower-case variant, to the
/// same values. Responses are written in Go's field names.
#[test]
fn checklist_1_decodes_pascal_and_lowercase_and_encodes_pascal() {
    for suffix in ["", "_lowercase"] {
        let body = fixture(&format!("types_extender_args{suffix}.json"));
        let a = wire::decode_args("filter", &body).unwrap();
        assert_eq!(a.pod.as_ref().unwrap().metadata.name, "podname", "{suffix}");
        assert_eq!(a.node_names.unwrap(), vec!["node1"]);
        let nodes = a.nodes.unwrap();
        assert_eq!(nodes.items.len(), 1);
        assert_eq!(nodes.items[0].0, "nodename");

        let p = wire::decode_preemption(&fixture(&format!("types_preemption_args{suffix}.json"))).unwrap();
        assert_eq!(p.pod.unwrap().metadata.name, "podname");
        let full = p.node_name_to_victims.unwrap();
        let v = full["foo"].as_ref().unwrap();
        assert_eq!((v.pods.len(), v.num_pdb_violations), (1, 1));
        let meta = p.node_name_to_meta_victims.unwrap();
        let m = meta["foo"].as_ref().unwrap();
        assert_eq!(m.pods[0].as_ref().unwrap().uid, "myuid");
        assert_eq!(m.num_pdb_violations, 1);

        let b = wire::decode_binding(&fixture(&format!("types_binding_args{suffix}.json"))).unwrap();
        assert_eq!(
            (b.pod_name.as_str(), b.pod_namespace.as_str(), b.pod_uid.as_str(), b.node.as_str()),
            ("mypodname", "mypodnamespace", "mypoduid", "mynode")
        );
    }
    // Responses: the exact strings Go writes for these values.
    let mut f =
        wire::ExtenderFilterResult { node_names: Some(vec!["node1"]), error: "myerror".into(), ..Default::default() };
    f.failed_nodes.insert("foo", "bar");
    f.failed_and_unresolvable_nodes.insert("baz", "qux");
    assert_eq!(
        serde_json::to_string(&f).unwrap(),
        r#"{"Nodes":null,"NodeNames":["node1"],"FailedNodes":{"foo":"bar"},"FailedAndUnresolvableNodes":{"baz":"qux"},"Error":"myerror"}"#
    );
    let list = vec![wire::HostPriority { host: "node1", score: 1 }, wire::HostPriority { host: "node2", score: 2 }];
    assert_eq!(serde_json::to_string(&list).unwrap(), r#"[{"Host":"node1","Score":1},{"Host":"node2","Score":2}]"#);
    assert_eq!(
        serde_json::to_string(&wire::ExtenderBindingResult { error: "myerror".into() }).unwrap(),
        r#"{"Error":"myerror"}"#
    );
    let mut pr = wire::ExtenderPreemptionResult::default();
    pr.node_name_to_meta_victims.insert(
        "foo".into(),
        wire::MetaVictimsOut { pods: vec![wire::MetaPodOut { uid: "myuid".into() }], num_pdb_violations: 1 },
    );
    assert_eq!(
        serde_json::to_string(&pr).unwrap(),
        r#"{"NodeNameToMetaVictims":{"foo":{"Pods":[{"UID":"myuid"}],"NumPDBViolations":1}}}"#
    );
}

/// Checklist 2: `null` for Nodes, NodeNames, maps, lists and victims; missing keys; unknown keys inside Pod and
/// Node; camelCase top-level keys.
#[tokio::test]
async fn checklist_2_nulls_missing_and_unknown_keys() {
    let (addr, _srv) = start(extender(Binder::DryRun)).await;
    let (s, pascal) = post(addr, "/sovra/filter", fixture("filter_cache_mode.json")).await;
    assert_eq!(s, 200);
    for f in ["filter_nulls.json", "filter_camelcase_keys.json"] {
        let (s, b) = post(addr, "/sovra/filter", fixture(f)).await;
        assert_eq!(s, 200, "{f}");
        assert_eq!(json(&b), json(&pascal), "{f} decodes to the same request");
    }
    // Both candidate fields null: no candidates, nothing passes (answered in cache form).
    let (s, b) = post(addr, "/sovra/filter", fixture("filter_names_null.json")).await;
    assert_eq!((s, json(&b)["NodeNames"].clone()), (200, serde_json::json!([])));
    // `{}`: no Pod → an Error (kube-scheduler always sends one).
    let (s, b) = post(addr, "/sovra/filter", fixture("empty_object.json")).await;
    assert_eq!(s, 200);
    assert!(json(&b)["Error"].as_str().unwrap().contains("no Pod"));
    // Preemption with null victims maps and null entries.
    let (s, b) =
        post(addr, "/sovra/preempt", br#"{"Pod":null,"NodeNameToVictims":null,"NodeNameToMetaVictims":null}"#.to_vec())
            .await;
    assert_eq!((s, json(&b)), (200, serde_json::json!({"NodeNameToMetaVictims":{}})));
    let (s, _) = post(addr, "/sovra/bind", b"null".to_vec()).await;
    assert_eq!(s, 200);
    // The nulls fixture really has nulls in the places Go writes them.
    let raw = String::from_utf8(fixture("filter_nulls.json")).unwrap();
    for n in [r#""annotations":null"#, r#""limits":null"#, r#""status":null"#, r#""app":null"#, r#""Nodes":null"#] {
        assert!(raw.contains(n), "{n}");
    }
}

/// Checklist 3: in cache mode the answer is a subset of NodeNames, in input order; never a name not asked about.
#[tokio::test]
async fn checklist_3_cache_mode_subset_in_input_order() {
    let (addr, _srv) = start(extender(Binder::DryRun)).await;
    let (s, b) = post(addr, "/sovra/filter", fixture("filter_cache_mode.json")).await;
    assert_eq!(s, 200);
    let passed = scheduler_applies_filter(&ALL, s, &b, false).unwrap();
    assert_eq!(passed, vec!["gpu-fr-1", "gpu-nl-1"]);
    assert!(json(&b)["Nodes"].is_null());
    // Every order of the input gives the same set in that order.
    let mut req = json(&fixture("filter_cache_mode.json"));
    for order in [vec![5, 4, 3, 2, 1, 0], vec![2, 0, 5, 1, 4, 3], vec![2, 2, 0]] {
        let names: Vec<&str> = order.iter().map(|&i| ALL[i]).collect();
        req["NodeNames"] = serde_json::json!(names);
        let (s, b) = post(addr, "/sovra/filter", serde_json::to_vec(&req).unwrap()).await;
        let passed = scheduler_applies_filter(&names, s, &b, false).unwrap();
        let want: Vec<&str> = names.iter().copied().filter(|n| *n == "gpu-fr-1" || *n == "gpu-nl-1").collect();
        assert_eq!(passed, want);
        let v = json(&b);
        let failed: BTreeSet<&str> = v["FailedNodes"].as_object().unwrap().keys().map(String::as_str).collect();
        let unres: BTreeSet<&str> =
            v["FailedAndUnresolvableNodes"].as_object().unwrap().keys().map(String::as_str).collect();
        for n in failed.iter().chain(&unres) {
            assert!(names.contains(n), "{n} was not asked about");
        }
    }
    // Non-cache mode: the passing Node objects come back verbatim, NodeNames is null.
    let (s, b) = post(addr, "/sovra/filter", fixture("filter_nodes_mode.json")).await;
    let v = json(&b);
    assert!(v["NodeNames"].is_null());
    assert_eq!(v["Nodes"]["metadata"], serde_json::json!({}));
    let req = json(&fixture("filter_nodes_mode.json"));
    assert_eq!(v["Nodes"]["items"][0], req["Nodes"]["items"][0], "echoed unchanged");
    assert_eq!(scheduler_applies_filter(&ALL, s, &b, false).unwrap(), vec!["gpu-fr-1", "gpu-nl-1"]);
}

/// Checklist 4: "accept all" echoes the input; `{}` and `{"NodeNames":null}` answers would reject everything, so
/// Sovra never sends them for a pod it can judge.
#[tokio::test]
async fn checklist_4_accept_all_echoes_and_null_rejects_all() {
    let (addr, _srv) = start(extender(Binder::DryRun)).await;
    let mut req = json(&fixture("filter_cache_mode.json"));
    req["Pod"]["metadata"]["labels"]["sovra.io/residency"] = "eu-any".into();
    req["Pod"]["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"nvidia.com/gpu": "1"}});
    let names = ["gpu-fr-1", "gpu-fr-2", "gpu-hyper-1", "gpu-nl-1", "gpu-fr-small"];
    req["NodeNames"] = serde_json::json!(names);
    let (s, b) = post(addr, "/sovra/filter", serde_json::to_vec(&req).unwrap()).await;
    assert_eq!(json(&b)["NodeNames"], serde_json::json!(names), "every node passes: the input is echoed");
    assert_eq!(scheduler_applies_filter(&names, s, &b, false).unwrap(), names);
    // What the scheduler makes of empty answers: nothing passes.
    assert!(scheduler_applies_filter(&names, 200, b"{}", false).unwrap().is_empty());
    assert!(scheduler_applies_filter(&names, 200, br#"{"NodeNames":null}"#, false).unwrap().is_empty());
    assert!(scheduler_applies_filter(&names, 200, br#"{"nodenames":null,"nodes":null}"#, false).unwrap().is_empty());
}

/// Checklist 5: residency and purpose violations, unknown zones and too-small hardware are unresolvable, with a
/// readable reason; capacity and unknown names are plain failures.
#[tokio::test]
async fn checklist_5_unresolvable_reasons() {
    let ext = extender(Binder::DryRun);
    let (addr, _srv) = start(ext.clone()).await;
    let (_, b) = post(addr, "/sovra/filter", fixture("filter_cache_mode.json")).await;
    let v = json(&b);
    let unres = &v["FailedAndUnresolvableNodes"];
    let hyper = unres["gpu-hyper-1"].as_str().unwrap();
    assert!(hyper.contains("zone de-hyper fails residency class eu-restricted"), "{hyper}");
    assert!(hyper.contains("headquartered in US, not in [EU]"), "{hyper}");
    assert_eq!(unres["gpu-fr-infer-1"], "inference pool, the pod is training (label sovra.io/kind)");
    assert!(unres["gpu-fr-small"].as_str().unwrap().contains("node too small: 2 GPUs"), "{unres}");
    let ghost = v["FailedNodes"]["ghost-node"].as_str().unwrap();
    assert!(ghost.contains("not in Sovra's node cache"), "{ghost}");
    assert_eq!(v["FailedNodes"].as_object().unwrap().len(), 1);

    // A pod without a residency label: unresolvable everywhere, saying what to add.
    let (_, b) = post(addr, "/sovra/filter", fixture("filter_no_residency.json")).await;
    let v = json(&b);
    assert_eq!(v["NodeNames"], serde_json::json!([]));
    assert_eq!(v["FailedAndUnresolvableNodes"].as_object().unwrap().len(), ALL.len());
    assert!(v["FailedAndUnresolvableNodes"]["gpu-fr-1"].as_str().unwrap().contains("add one naming a residency class"));

    // Capacity: fill gpu-fr-1 and gpu-nl-1 through binds; the next 8-GPU pod fails there (resolvable).
    for (i, node) in ["gpu-fr-1", "gpu-nl-1"].iter().enumerate() {
        let mut req = json(&fixture("filter_cache_mode.json"));
        let uid = format!("fill-{i}");
        req["Pod"]["metadata"]["uid"] = uid.clone().into();
        post(addr, "/sovra/filter", serde_json::to_vec(&req).unwrap()).await;
        let bind =
            serde_json::json!({"PodName": format!("fill-{i}"), "PodNamespace": "ml", "PodUID": uid, "Node": node});
        let (s, b) = post(addr, "/sovra/bind", serde_json::to_vec(&bind).unwrap()).await;
        assert_eq!((s, json(&b)), (200, serde_json::json!({"Error": ""})));
    }
    let (_, b) = post(addr, "/sovra/filter", fixture("filter_cache_mode.json")).await;
    let v = json(&b);
    assert_eq!(v["NodeNames"], serde_json::json!([]));
    assert_eq!(v["FailedNodes"]["gpu-fr-1"], "fewer than 8 fully free GPUs");
    assert_eq!(v["FailedNodes"]["gpu-nl-1"], "fewer than 8 fully free GPUs");
    assert!(v["FailedAndUnresolvableNodes"]["gpu-hyper-1"].is_string(), "still unresolvable");
}

/// Checklist 6: an `Error` with HTTP 200 and a non-200 status are both failures; with `ignorable` the scheduler
/// keeps the node set, without it the attempt fails. Sovra answers bad JSON with 400 and a message.
#[tokio::test]
async fn checklist_6_errors_and_ignorable() {
    let (addr, _srv) = start(extender(Binder::DryRun)).await;
    let names = ["gpu-fr-1", "gpu-nl-1"];
    let (s, b) = post(addr, "/sovra/filter", fixture("filter_pod_missing.json")).await;
    assert_eq!(s, 200);
    assert!(scheduler_applies_filter(&names, s, &b, false).unwrap_err().contains("no Pod"));
    assert_eq!(scheduler_applies_filter(&names, s, &b, true).unwrap(), names);
    for f in ["malformed_truncated.json", "malformed_wrong_type.json"] {
        let (s, b) = post(addr, "/sovra/filter", fixture(f)).await;
        assert_eq!(s, 400, "{f}");
        let msg = String::from_utf8(b.clone()).unwrap();
        assert!(msg.contains("cannot decode the filter request") && msg.contains("line"), "{f}: {msg}");
        assert!(scheduler_applies_filter(&names, s, &b, false).is_err());
        assert_eq!(scheduler_applies_filter(&names, s, &b, true).unwrap(), names);
    }
    for verb in ["prioritize", "preempt", "bind"] {
        let (s, b) = post(addr, &format!("/sovra/{verb}"), b"{\"Pod\":[".to_vec()).await;
        assert_eq!(s, 400, "{verb}");
        assert!(String::from_utf8(b).unwrap().contains(&format!("cannot decode the {verb} request")));
    }
    // Over the body limit (1 MiB in these tests): 413.
    let big = format!("{{\"NodeNames\":[{}]}}", vec!["\"n\""; 300_000].join(","));
    let (s, _) = post(addr, "/sovra/filter", big.into_bytes()).await;
    assert_eq!(s, 413);
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(metrics.contains("sovra_extender_bad_requests_total 5"), "{metrics}");
}

/// Checklist 7: prioritize answers a top-level array, scores in 0..=10, every host from the input; the core's
/// choice gets 10. Golden table of what kube-scheduler adds (score × weight × 10).
#[tokio::test]
async fn checklist_7_prioritize_array_clamped_and_weighted() {
    let (addr, _srv) = start(extender(Binder::DryRun)).await;
    let (s, b) = post(addr, "/sovra/prioritize", fixture("prioritize_cache_mode.json")).await;
    assert_eq!(s, 200);
    let v = json(&b);
    let list = v.as_array().expect("a top-level array");
    let hosts: Vec<&str> = list.iter().map(|h| h["Host"].as_str().unwrap()).collect();
    assert_eq!(hosts, vec!["gpu-fr-1", "gpu-nl-1", "gpu-fr-2"]);
    let scores: Vec<i64> = list.iter().map(|h| h["Score"].as_i64().unwrap()).collect();
    assert!(scores.iter().all(|s| (0..=10).contains(s)), "{scores:?}");
    assert_eq!(scores.iter().filter(|&&s| s == 10).count(), 1, "exactly one top node: {scores:?}");
    // All three are empty 8-GPU nodes of equal best-fit score, but only gpu-nl-1 and gpu-fr-2 hold 8 GPUs on one
    // NVLink island (gpu-fr-1 has two islands of 4): they score higher; their tie goes to the seeded order (10, 9).
    assert!(scores[0] < 9 && scores[1] >= 9 && scores[2] >= 9, "{scores:?}");
    // Unknown and rejected hosts get 0; the input order is kept.
    let mut req = json(&fixture("prioritize_cache_mode.json"));
    req["NodeNames"] = serde_json::json!(["ghost", "gpu-hyper-1", "gpu-fr-1"]);
    let (_, b) = post(addr, "/sovra/prioritize", serde_json::to_vec(&req).unwrap()).await;
    assert_eq!(
        json(&b),
        serde_json::json!([{"Host":"ghost","Score":0},{"Host":"gpu-hyper-1","Score":0},{"Host":"gpu-fr-1","Score":10}])
    );
    // Packing: with a 4-GPU pod on gpu-fr-1, a 4-GPU pod prefers gpu-fr-1 (best fit) over the empty nodes.
    let mut fill = json(&fixture("filter_cache_mode.json"));
    fill["Pod"]["metadata"]["uid"] = "half".into();
    fill["Pod"]["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"nvidia.com/gpu": "4"}});
    post(addr, "/sovra/filter", serde_json::to_vec(&fill).unwrap()).await;
    let bind = serde_json::json!({"PodName":"half","PodNamespace":"ml","PodUID":"half","Node":"gpu-fr-1"});
    post(addr, "/sovra/bind", serde_json::to_vec(&bind).unwrap()).await;
    let mut req = json(&fixture("prioritize_cache_mode.json"));
    req["Pod"]["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"nvidia.com/gpu": "4"}});
    req["NodeNames"] = serde_json::json!(["gpu-nl-1", "gpu-fr-2", "gpu-fr-1"]);
    let (_, b) = post(addr, "/sovra/prioritize", serde_json::to_vec(&req).unwrap()).await;
    let v = json(&b);
    assert_eq!(v[2], serde_json::json!({"Host":"gpu-fr-1","Score":10}), "{v}");
    assert!(v[0]["Score"].as_i64().unwrap() < 10 && v[1]["Score"].as_i64().unwrap() < 10);
    // Golden table: (score, weight) → points added to the node's plugin score sum.
    for (score, weight, points) in [(10, 1, 100), (0, 5, 0), (3, 5, 150), (10, 5, 500), (7, 2, 140), (9, 1, 90)] {
        assert_eq!(scheduler_contribution(score, weight), points, "score {score} weight {weight}");
    }
    for (raw, clamped) in [(-3, 0), (0, 0), (5, 5), (10, 10), (11, 10), (i64::MAX, 10)] {
        assert_eq!(wire::clamp_score(raw), clamped);
    }
}

/// Checklist 8 (functional half; the latency half is the release benchmark in BENCHMARKS.md): concurrent filter
/// and prioritize calls on 600 nodes all succeed and agree with a sequential answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checklist_8_concurrent_calls_are_safe_and_deterministic() {
    let mut cfg = cluster();
    let template = cfg.nodes[0].clone();
    for i in 0..600 {
        let mut n = template.clone();
        n.name = format!("gpu-fr-bulk-{i:03}");
        cfg.nodes.push(n);
    }
    let cache = std::sync::Arc::new(sovra_extender::Cache::new(cfg).unwrap());
    let ext = std::sync::Arc::new(sovra_extender::Extender::new(cache, Default::default(), 0, Binder::DryRun));
    let (addr, _srv) = start(ext).await;
    let mut req = json(&fixture("filter_cache_mode.json"));
    let names: Vec<String> = (0..600).map(|i| format!("gpu-fr-bulk-{i:03}")).chain(ALL.map(String::from)).collect();
    req["NodeNames"] = serde_json::json!(names);
    let body = serde_json::to_vec(&req).unwrap();
    let (_, want_f) = post(addr, "/sovra/filter", body.clone()).await;
    let (_, want_p) = post(addr, "/sovra/prioritize", body.clone()).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let body = body.clone();
        let (want_f, want_p) = (want_f.clone(), want_p.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let (s, f) = post(addr, "/sovra/filter", body.clone()).await;
                assert_eq!((s, json(&f)), (200, json(&want_f)));
                let (s, p) = post(addr, "/sovra/prioritize", body.clone()).await;
                assert_eq!((s, json(&p)), (200, json(&want_p)));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(json(&want_f)["NodeNames"].as_array().unwrap().len(), 602);
}

/// Checklist 9 (extender side): bind is idempotent on retry, refuses a node the pod may not use and a second node.
/// The API side (exactly one Binding POST, 409 handling) is in tests/kube_api.rs.
#[tokio::test]
async fn checklist_9_bind_idempotent_and_refuses_mismatch() {
    let (addr, _srv) = start(extender(Binder::DryRun)).await;
    post(addr, "/sovra/filter", fixture("filter_cache_mode.json")).await;
    for _ in 0..2 {
        let (s, b) = post(addr, "/sovra/bind", fixture("bind.json")).await;
        assert_eq!((s, json(&b)), (200, serde_json::json!({"Error": ""})));
    }
    let mut other = json(&fixture("bind.json"));
    other["Node"] = "gpu-nl-1".into();
    let (_, b) = post(addr, "/sovra/bind", serde_json::to_vec(&other).unwrap()).await;
    assert_eq!(json(&b)["Error"], "pod ml/train-0 is already bound to node gpu-fr-1");
    // A pod of class eu-restricted may not be bound in the US-owned zone, whatever the scheduler asks.
    let mut req = json(&fixture("filter_cache_mode.json"));
    req["Pod"]["metadata"]["uid"] = "u2".into();
    post(addr, "/sovra/filter", serde_json::to_vec(&req).unwrap()).await;
    let bad = serde_json::json!({"PodName":"train-1","PodNamespace":"ml","PodUID":"u2","Node":"gpu-hyper-1"});
    let (_, b) = post(addr, "/sovra/bind", serde_json::to_vec(&bad).unwrap()).await;
    let e = json(&b)["Error"].as_str().unwrap().to_string();
    assert!(e.starts_with("refusing to bind ml/train-1 to gpu-hyper-1: zone de-hyper fails"), "{e}");
    let unknown = serde_json::json!({"PodName":"x","PodNamespace":"ml","PodUID":"u3","Node":"ghost"});
    let (_, b) = post(addr, "/sovra/bind", serde_json::to_vec(&unknown).unwrap()).await;
    assert!(json(&b)["Error"].as_str().unwrap().contains("not in Sovra's node cache"));
    let (_, b) = post(addr, "/sovra/bind", b"{}".to_vec()).await;
    assert_eq!(json(&b)["Error"], "the bind request needs PodName and Node");
}

/// Checklist 10: preempt answers in meta form whatever the request's form; every node keeps at least one victim,
/// every UID is one the scheduler offered for that node; nodes the pod may not use are dropped.
#[tokio::test]
async fn checklist_10_preempt_meta_form_subset_of_offered() {
    let ext = extender(Binder::DryRun);
    // The victims, as the Pod watch reports them (a victim Sovra does not know is refused: its gang is unknown).
    for (uid, node) in [("victim-uid-1", "gpu-fr-1"), ("victim-uid-2", "gpu-fr-1"), ("victim-uid-3", "gpu-hyper-1")] {
        let mut pod = json(&fixture("filter_cache_mode.json"))["Pod"].clone();
        pod["metadata"]["uid"] = uid.into();
        pod["spec"]["nodeName"] = node.into();
        pod["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"nvidia.com/gpu": "1"}});
        let pod: sovra_extender::wire::Pod = serde_json::from_value(pod).unwrap();
        ext.cache().upsert_pod(sovra_extender::PodRecord {
            uid: uid.into(),
            key: format!("ml/{uid}"),
            node: Some(node.into()),
            request: sovra_extender::pod::pod_request(&pod),
            devices: None,
        });
    }
    let (addr, _srv) = start(ext).await;
    let want = serde_json::json!({"NodeNameToMetaVictims": {"gpu-fr-1": {"Pods": [{"UID": "victim-uid-1"}, {"UID": "victim-uid-2"}], "NumPDBViolations": 0}}});
    let (s, b) = post(addr, "/sovra/preempt", fixture("preempt_cache_mode.json")).await;
    assert_eq!((s, json(&b)), (200, want));
    let (s, b) = post(addr, "/sovra/preempt", fixture("preempt_full_mode.json")).await;
    let v = json(&b);
    assert_eq!(s, 200);
    assert_eq!(
        v,
        serde_json::json!({"NodeNameToMetaVictims": {"gpu-fr-1": {"Pods": [{"UID": "victim-uid-1"}, {"UID": "victim-uid-2"}], "NumPDBViolations": 1}}})
    );
}

/// Checklist 10, with Sovra's accounting: a node is kept only when evicting its victims makes room by Sovra's GPU
/// accounting.
#[tokio::test]
async fn preempt_keeps_only_nodes_where_the_victims_make_room() {
    let ext = extender(Binder::DryRun);
    let (addr, _srv) = start(ext.clone()).await;
    // Two 4-GPU pods run on gpu-fr-1 (seen by the cache as the watch would report them).
    for uid in ["victim-uid-1", "victim-uid-2"] {
        let mut pod = json(&fixture("filter_cache_mode.json"))["Pod"].clone();
        pod["metadata"]["uid"] = uid.into();
        pod["metadata"]["name"] = uid.into();
        pod["spec"]["nodeName"] = "gpu-fr-1".into();
        pod["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"nvidia.com/gpu": "4"}});
        let pod: sovra_extender::wire::Pod = serde_json::from_value(pod).unwrap();
        ext.cache().upsert_pod(sovra_extender::PodRecord {
            uid: uid.into(),
            key: format!("ml/{uid}"),
            node: Some("gpu-fr-1".into()),
            request: sovra_extender::pod::pod_request(&pod),
            devices: None,
        });
    }
    let mut req = json(&fixture("preempt_cache_mode.json"));
    req["NodeNameToMetaVictims"]["gpu-fr-1"]["Pods"] = serde_json::json!([{"UID": "victim-uid-1"}]);
    let (_, b) = post(addr, "/sovra/preempt", serde_json::to_vec(&req).unwrap()).await;
    assert_eq!(json(&b), serde_json::json!({"NodeNameToMetaVictims": {}}), "4 GPUs freed, 8 needed");
    let (_, b) = post(addr, "/sovra/preempt", fixture("preempt_cache_mode.json")).await;
    assert_eq!(json(&b)["NodeNameToMetaVictims"]["gpu-fr-1"]["Pods"].as_array().unwrap().len(), 2);
}

/// Checklist 11 (configuration half): the shipped KubeSchedulerConfiguration calls Sovra only for GPU pods, in cache
/// mode, with Sovra first (it returns unresolvable nodes), HTTPS, and the verbs this server serves.
#[test]
fn deploy_config_has_managed_resources_and_cache_mode() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/scheduler-config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    // The ConfigMap holds the KubeSchedulerConfiguration as a string.
    let outer: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let inner = outer["data"]["scheduler-config.yaml"].as_str().expect("data.scheduler-config.yaml");
    let cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(inner).unwrap();
    assert_eq!(cfg["apiVersion"], "kubescheduler.config.k8s.io/v1");
    let ext = &cfg["extenders"][0];
    assert_eq!(ext["nodeCacheCapable"], true);
    assert_eq!(ext["enableHTTPS"], true);
    for (k, v) in
        [("filterVerb", "filter"), ("prioritizeVerb", "prioritize"), ("preemptVerb", "preempt"), ("bindVerb", "bind")]
    {
        assert_eq!(ext[k], v, "{k}");
    }
    assert!(ext["weight"].as_i64().unwrap() > 0);
    let managed: Vec<(String, bool)> = ext["managedResources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), m["ignoredByScheduler"].as_bool().unwrap()))
        .collect();
    assert_eq!(managed[..2], [("nvidia.com/gpu".to_string(), false), ("sovra.io/gpu-milli".to_string(), false)]);
    // The rest: MIG slices, advertised by the device plugin (so not ignored by the scheduler), each name once.
    let mig: std::collections::BTreeSet<&str> = managed[2..].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(mig.len(), managed.len() - 2, "no MIG resource listed twice");
    assert!(managed[2..].iter().all(|(n, ignored)| n.starts_with("nvidia.com/mig-") && !ignored), "{managed:?}");
    assert_eq!(ext["ignorable"], false);
    assert!(ext["urlPrefix"].as_str().unwrap().starts_with("https://"));
}

/// Every manifest in deploy/ is well-formed YAML with a kind, and the Sovra cluster file shipped in the extender's
/// ConfigMap loads.
#[test]
fn deploy_manifests_parse_and_the_shipped_cluster_file_loads() {
    use serde::Deserialize;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut kinds = Vec::new();
    for file in ["rbac.yaml", "extender.yaml", "scheduler-config.yaml", "scheduler.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = serde_yaml_ng::Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            kinds.push(format!(
                "{file}:{}",
                v["kind"].as_str().unwrap_or_else(|| panic!("{file}: a document without kind"))
            ));
            if v["kind"] == "ConfigMap" && v["metadata"]["name"] == "sovra-cluster" {
                let cluster = v["data"]["cluster.yaml"].as_str().unwrap();
                sovra_domain::ClusterConfig::from_yaml("deploy/extender.yaml#cluster.yaml", cluster).unwrap();
            }
        }
    }
    for want in
        ["extender.yaml:Deployment", "extender.yaml:Service", "rbac.yaml:ClusterRole", "scheduler.yaml:Deployment"]
    {
        assert!(kinds.iter().any(|k| k == want), "{want} in {kinds:?}");
    }
}

/// Gangs: a member passes only when the whole gang can be placed; until then every node answers `FailedNodes`
/// (resolvable: the pod is retried) and nothing is held.
#[tokio::test]
async fn gang_members_wait_until_the_whole_gang_fits() {
    let (addr, _srv) = start(extender(Binder::DryRun)).await;
    let names = ["gpu-fr-1", "gpu-fr-2", "gpu-nl-1", "gpu-hyper-1"];
    let member = |group: &str, min: u32, i: u32| {
        let mut req = json(&fixture("filter_cache_mode.json"));
        req["Pod"]["metadata"]["name"] = format!("{group}-{i}").into();
        req["Pod"]["metadata"]["uid"] = format!("uid-{group}-{i}").into();
        req["Pod"]["metadata"]["labels"]["sovra.io/pod-group"] = group.into();
        req["Pod"]["metadata"]["annotations"]["sovra.io/pod-group-min-member"] = min.to_string().into();
        req["NodeNames"] = serde_json::json!(names);
        serde_json::to_vec(&req).unwrap()
    };
    // Three members of 8 GPUs; three permitted 8-GPU nodes.
    for i in 0..2 {
        let (_, b) = post(addr, "/sovra/filter", member("trio", 3, i)).await;
        let v = json(&b);
        assert_eq!(v["NodeNames"], serde_json::json!([]), "member {i} waits");
        assert_eq!(
            v["FailedNodes"]["gpu-fr-1"],
            format!("gang ml/trio waits for its members: {} of 3 pods exist; it holds no GPU while it waits", i + 1)
        );
        assert!(v["FailedAndUnresolvableNodes"]["gpu-hyper-1"].is_string(), "residency still unresolvable");
    }
    // Four members of 8 GPUs can never fit three nodes: the core's verdict is unresolvable, and the extender answers
    // it as such (`FailedAndUnresolvableNodes`: preemption cannot help), saying why. Before, its own gang check
    // called it "not now".
    for i in 0..4 {
        let (_, b) = post(addr, "/sovra/filter", member("quad", 4, i)).await;
        let v = json(&b);
        assert_eq!(v["NodeNames"], serde_json::json!([]));
        if i == 3 {
            assert!(v["FailedNodes"].get("gpu-fr-1").is_none(), "{v}");
            let why = v["FailedAndUnresolvableNodes"]["gpu-fr-1"].as_str().unwrap();
            assert!(why.starts_with("gang ml/quad: its 4 unbound pods can never fit together"), "{why}");
        }
    }
    let (_, b) = post(addr, "/sovra/filter", member("trio", 3, 2)).await;
    assert_eq!(json(&b)["NodeNames"], serde_json::json!(["gpu-fr-1", "gpu-fr-2", "gpu-nl-1"]), "the gang fits");
    // (The trio's members are now reserved: see tests/gang_reserve.rs.) Binding one trio member leaves two to place:
    // they still fit on the two other nodes.
    let bind = serde_json::json!({"PodName":"trio-0","PodNamespace":"ml","PodUID":"uid-trio-0","Node":"gpu-fr-1"});
    let (_, b) = post(addr, "/sovra/bind", serde_json::to_vec(&bind).unwrap()).await;
    assert_eq!(json(&b)["Error"], "");
    let (_, b) = post(addr, "/sovra/filter", member("trio", 3, 1)).await;
    assert_eq!(json(&b)["NodeNames"], serde_json::json!(["gpu-fr-2", "gpu-nl-1"]));
}
