//! Preempt treats a gang as one unit: it never approves evicting part of a running gang, and never approves
//! preemption for a gang member when the gang still cannot be placed together after the evictions.

mod common;

use common::*;
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{PodRecord, wire};
use std::sync::Arc;

/// A pod of class eu-restricted asking for `gpus` whole GPUs, in gang `group` of `min` members when given, bound
/// to `node` when given; recorded in the cache as the Pod watch would.
fn pod(ext: &Extender, uid: &str, gpus: u32, gang: Option<(&str, u32)>, node: Option<&str>) -> serde_json::Value {
    let mut labels = serde_json::json!({"sovra.io/residency": "eu-restricted"});
    let mut annotations = serde_json::json!({});
    if let Some((group, min)) = gang {
        labels["sovra.io/pod-group"] = group.into();
        annotations["sovra.io/pod-group-min-member"] = min.to_string().into();
    }
    let v = serde_json::json!({"metadata": {"name": uid, "namespace": "ml", "uid": uid, "labels": labels,
            "annotations": annotations},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": gpus.to_string()}}}]},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}});
    let p: wire::Pod = serde_json::from_value(v.clone()).unwrap();
    ext.cache().upsert_pod(PodRecord {
        uid: uid.into(),
        key: format!("ml/{uid}"),
        node: node.map(String::from),
        request: sovra_extender::pod::pod_request(&p),
        devices: None,
    });
    v
}

fn preempt(ext: &Extender, preemptor: serde_json::Value, nodes: &[(&str, &[&str])]) -> serde_json::Value {
    let victims: serde_json::Map<String, serde_json::Value> = nodes
        .iter()
        .map(|(n, uids)| {
            let pods: Vec<serde_json::Value> = uids.iter().map(|u| serde_json::json!({"UID": u})).collect();
            (n.to_string(), serde_json::json!({"Pods": pods, "NumPDBViolations": 0}))
        })
        .collect();
    let body = serde_json::json!({"Pod": preemptor, "NodeNameToMetaVictims": victims});
    let body = serde_json::to_vec(&body).unwrap();
    let args = wire::decode_preemption(&body).unwrap();
    serde_json::to_value(ext.preempt(&args)).unwrap()
}

fn kept(v: &serde_json::Value) -> Vec<String> {
    v["NodeNameToMetaVictims"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn part_of_a_running_gang_is_never_evicted() {
    let ext: Arc<Extender> = extender(Binder::DryRun);
    // Gang ml/low: a and b on gpu-fr-1 (4 GPUs each); gang ml/wide: c on gpu-fr-2, d on gpu-nl-1.
    pod(&ext, "a", 4, Some(("low", 2)), Some("gpu-fr-1"));
    pod(&ext, "b", 4, Some(("low", 2)), Some("gpu-fr-1"));
    pod(&ext, "c", 8, Some(("wide", 2)), Some("gpu-fr-2"));
    pod(&ext, "d", 8, Some(("wide", 2)), Some("gpu-nl-1"));
    let high = pod(&ext, "high", 4, None, None);
    // Only a of gang low: refused (the old code approved it: 4 GPUs freed, 4 needed).
    assert_eq!(kept(&preempt(&ext, high.clone(), &[("gpu-fr-1", &["a"])])), Vec::<String>::new());
    // The whole gang: approved, with both victims.
    let v = preempt(&ext, high.clone(), &[("gpu-fr-1", &["a", "b"])]);
    assert_eq!(v["NodeNameToMetaVictims"]["gpu-fr-1"]["Pods"], serde_json::json!([{"UID": "a"}, {"UID": "b"}]));
    // A gang across two nodes: evicting its member on one node is partial, whichever node.
    assert_eq!(kept(&preempt(&ext, high.clone(), &[("gpu-fr-2", &["c"]), ("gpu-nl-1", &["d"])])), Vec::<String>::new());
    // A victim Sovra does not know: whether it is in a gang cannot be checked, so the node is refused.
    assert_eq!(kept(&preempt(&ext, high, &[("gpu-fr-2", &["stranger"])])), Vec::<String>::new());
}

#[test]
fn no_preemption_for_a_gang_that_still_cannot_fit() {
    let ext: Arc<Extender> = extender(Binder::DryRun);
    // Every 8-GPU node the class may use is full: gpu-fr-1, gpu-fr-2, gpu-nl-1.
    pod(&ext, "v1", 8, None, Some("gpu-fr-1"));
    pod(&ext, "v2", 8, None, Some("gpu-fr-2"));
    pod(&ext, "v3", 8, None, Some("gpu-nl-1"));
    // Gang ml/big: two pending members of 8 GPUs each.
    let m0 = pod(&ext, "m0", 8, Some(("big", 2)), None);
    pod(&ext, "m1", 8, Some(("big", 2)), None);
    // Evicting v1 frees one node; the gang needs two: refused (the old code approved it: the pod alone fits).
    assert_eq!(kept(&preempt(&ext, m0.clone(), &[("gpu-fr-1", &["v1"])])), Vec::<String>::new());
    // Once gpu-fr-2 is free, evicting v1 lets the whole gang fit: approved.
    ext.cache().remove_pod("v2");
    assert_eq!(kept(&preempt(&ext, m0.clone(), &[("gpu-fr-1", &["v1"])])), vec!["gpu-fr-1".to_string()]);
    // A gang still waiting for members is never preempted for.
    let lone = pod(&ext, "w0", 8, Some(("waiting", 3)), None);
    assert_eq!(kept(&preempt(&ext, lone, &[("gpu-fr-1", &["v1"])])), Vec::<String>::new());
}

#[test]
fn each_node_is_judged_with_only_its_own_victims_freed() {
    let ext: Arc<Extender> = extender(Binder::DryRun);
    pod(&ext, "v1", 8, None, Some("gpu-fr-1"));
    pod(&ext, "v2", 8, None, Some("gpu-fr-2"));
    pod(&ext, "v3", 8, None, Some("gpu-nl-1"));
    let m0 = pod(&ext, "m0", 8, Some(("big", 2)), None);
    pod(&ext, "m1", 8, Some(("big", 2)), None);
    // Two candidates, one victim each: kube-scheduler evicts the victims of one node only, so neither node's
    // eviction makes room for the gang of two (freeing both at once would wrongly approve both).
    let v = preempt(&ext, m0, &[("gpu-fr-1", &["v1"]), ("gpu-fr-2", &["v2"])]);
    assert_eq!(kept(&v), Vec::<String>::new());
}
