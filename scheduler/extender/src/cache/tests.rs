//! Unit tests of the node cache.

use super::*;
use crate::pod::{PodRequest, pod_request};

const CLUSTER: &str = r#"
zones: [{id: fr, country: FR, region: r, jurisdiction: EU, operator: o, operator_hq: FR}]
pools: [{id: fr-train, zone: fr, purpose: training}]
residency_classes: [{name: eu-any, jurisdictions: [EU]}]
nodes:
  - {name: cfg-1, pool: fr-train, cpu_milli: 64000, memory_mib: 65536, gpus: {model: H100, count: 8, memory_mib: 81920}}
"#;

fn cache() -> Cache {
    Cache::new(ClusterConfig::from_yaml("c.yaml", CLUSTER).unwrap()).unwrap()
}

fn kube(name: &str, pool: Option<&str>, ready: bool) -> KubeNode {
    let mut labels = BTreeMap::new();
    if let Some(p) = pool {
        labels.insert(POOL_LABEL.to_string(), p.to_string());
    }
    labels.insert(PRODUCT_LABEL.to_string(), "NVIDIA-L4".to_string());
    KubeNode { name: name.into(), labels, cpu_milli: 8000, memory_mib: 16384, gpus: 4, ready, ..Default::default() }
}

fn request(gpus: &str) -> PodRequest {
    let pod: crate::wire::Pod = serde_json::from_str(&format!(
        r#"{{"metadata":{{"name":"p","labels":{{"sovra.io/residency":"eu-any"}}}},
            "spec":{{"containers":[{{"resources":{{"requests":{{"nvidia.com/gpu":"{gpus}"}}}}}}]}}}}"#
    ))
    .unwrap();
    pod_request(&pod).unwrap()
}

#[test]
fn api_nodes_join_pools_change_readiness_in_place_and_leave() {
    let c = cache();
    c.upsert_node(kube("k-1", Some("fr-train"), true));
    c.upsert_node(kube("k-nopool", None, true));
    let s = c.snapshot();
    let i = s.node_index("k-1").expect("joined its pool");
    assert_eq!(s.state.topology().nodes[i as usize].dev_count, 4);
    assert_eq!(
        s.state.topology().models[s.state.topology().devices[s.state.topology().device_range(i).start].model as usize],
        "L4"
    );
    assert!(s.node_index("k-nopool").is_none() && s.not_offered.contains_key("k-nopool"));
    let topo = Arc::as_ptr(s.state.topology());
    // Readiness: in place, same topology.
    c.upsert_node(kube("k-1", Some("fr-train"), false));
    let s = c.snapshot();
    assert!(!s.state.node_ready(i));
    assert_eq!(Arc::as_ptr(s.state.topology()), topo, "no rebuild for readiness");
    // A heartbeat (nothing changed): the snapshot is reused.
    c.upsert_node(kube("k-1", Some("fr-train"), false));
    assert!(Arc::ptr_eq(&s, &c.snapshot()));
    c.remove_node("k-1");
    assert!(c.snapshot().node_index("k-1").is_none());
    assert!(c.snapshot().node_index("cfg-1").is_some(), "config nodes stay");
}

#[test]
fn bound_pods_are_accounted_and_released_across_rebuilds() {
    let c = cache();
    let rec = |uid: &str, gpus: &str| PodRecord {
        uid: uid.into(),
        key: format!("ns/{uid}"),
        node: Some("cfg-1".into()),
        request: Ok(request(gpus)),
        devices: None,
    };
    c.upsert_pod(rec("a", "2"));
    c.upsert_pod(rec("b", "4"));
    assert_eq!(c.snapshot().state.summary(0).free_whole, 2);
    // A new node rebuilds the topology; the pods are accounted again.
    c.upsert_node(kube("k-1", Some("fr-train"), true));
    assert_eq!(c.snapshot().state.summary(0).free_whole, 2);
    assert_eq!(c.accounted_pods(), 2);
    c.remove_pod("a");
    assert_eq!(c.snapshot().state.summary(0).free_whole, 4);
    // A pod that does not fit any more is logged, not accounted; nothing panics.
    c.upsert_pod(rec("c", "8"));
    assert_eq!(c.accounted_pods(), 1);
    c.retain_pods(&std::collections::BTreeSet::new());
    assert_eq!(c.snapshot().state.summary(0).free_whole, 8);
    assert_eq!(c.accounted_pods(), 0);
}

#[test]
fn pending_memory_is_bounded() {
    let c = cache();
    for i in 0..(MAX_PENDING + 10) {
        c.remember(
            PodRecord {
                uid: format!("u{i}"),
                key: format!("ns/p{i}"),
                node: None,
                request: Ok(request("1")),
                devices: None,
            },
            false,
        );
    }
    assert!(c.record("u0").is_none(), "the oldest was forgotten");
    assert!(c.record(&format!("u{}", MAX_PENDING + 9)).is_some());
    assert!(c.lock().pending.len() <= MAX_PENDING);
}

#[test]
fn a_pod_this_extender_bound_keeps_its_devices_until_the_watch_shows_it_bound() {
    use crate::assign::Assigned;
    use sovra_placement::DeviceAssignment;
    let c = cache();
    let pending = |uid: &str| PodRecord {
        uid: uid.into(),
        key: format!("ns/{uid}"),
        node: None,
        request: Ok(request("2")),
        devices: None,
    };
    c.remember(pending("a"), false);
    let chosen = Assigned {
        node: "cfg-1".into(),
        devices: vec![DeviceAssignment { device: 5, milli: 1000 }, DeviceAssignment { device: 6, milli: 1000 }],
    };
    assert!(c.assume_bound_on("a", "ns/a", "cfg-1", Some(chosen.clone())));
    let used = |c: &Cache| {
        let s = c.snapshot();
        s.state.topology().device_range(0).map(|d| s.state.device_used(d)).collect::<Vec<_>>()
    };
    assert_eq!(used(&c), [0, 0, 0, 0, 0, 1000, 1000, 0], "accounted on the chosen devices, not the lowest free");
    // The watch shows the pod annotated but not yet bound (the patch before the Binding): still held.
    c.upsert_pod(PodRecord { devices: Some(chosen.clone()), ..pending("a") });
    assert_eq!(used(&c), [0, 0, 0, 0, 0, 1000, 1000, 0]);
    // Then bound: the same devices, from the annotation.
    c.upsert_pod(PodRecord { node: Some("cfg-1".into()), devices: Some(chosen.clone()), ..pending("a") });
    assert_eq!(used(&c), [0, 0, 0, 0, 0, 1000, 1000, 0]);
    // Recorded devices on another node, or not what the pod asks for, fall back to the core's choice.
    c.upsert_pod(PodRecord {
        node: Some("cfg-1".into()),
        devices: Some(Assigned { node: "elsewhere".into(), ..chosen.clone() }),
        ..pending("a")
    });
    assert_eq!(used(&c), [1000, 1000, 0, 0, 0, 0, 0, 0]);
    c.upsert_pod(PodRecord {
        node: Some("cfg-1".into()),
        devices: Some(Assigned { devices: vec![DeviceAssignment { device: 3, milli: 1000 }], ..chosen }),
        ..pending("a")
    });
    assert_eq!(used(&c), [1000, 1000, 0, 0, 0, 0, 0, 0]);
    c.remove_pod("a");
    assert_eq!(used(&c), [0; 8]);
}
