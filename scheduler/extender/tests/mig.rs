//! MIG slices (`nvidia.com/mig-<profile>`) are Sovra's: residency, purpose and capacity are checked on the core's
//! MIG devices, for nodes of the cluster file and for Nodes from the API.

use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, KubeNode, PodRecord, wire};
use std::sync::Arc;

const CLUSTER: &str = "
zones:
  - {id: fr-par, country: FR, region: Paris, jurisdiction: EU, operator: Hexacloud SAS, operator_hq: FR, certifications: [SecNumCloud, HDS]}
  - {id: de-hyper, country: DE, region: Frankfurt, jurisdiction: EU, operator: Hyperscale Inc., operator_hq: US, certifications: [C5]}
pools:
  - {id: fr-infer, zone: fr-par, purpose: inference}
  - {id: hyper-infer, zone: de-hyper, purpose: inference}
residency_classes:
  - {name: eu-restricted, jurisdictions: [EU], operator_hq_in: [EU]}
nodes:
  - {name: fr-mig, pool: fr-infer, cpu_milli: 64000, memory_mib: 262144, gpus: {model: A100-80GB, count: 1, memory_mib: 81920, mig: [{profile: 1g.10gb, count: 7}]}}
  - {name: fr-whole, pool: fr-infer, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100-80GB, count: 8, memory_mib: 81920}}
  - {name: hyper-mig, pool: hyper-infer, cpu_milli: 64000, memory_mib: 262144, gpus: {model: A100-80GB, count: 1, memory_mib: 81920, mig: [{profile: 1g.10gb, count: 7}]}}
";

fn extender() -> Arc<Extender> {
    let cfg = ClusterConfig::from_yaml("mig.yaml", CLUSTER).unwrap();
    Arc::new(Extender::new(Arc::new(Cache::new(cfg).unwrap()), PolicySpec::default(), 0, Binder::DryRun))
}

fn pod(uid: &str, resources: serde_json::Value, node: Option<&str>) -> serde_json::Value {
    serde_json::json!({"metadata": {"name": uid, "namespace": "ml", "uid": uid,
            "labels": {"sovra.io/residency": "eu-restricted", "sovra.io/kind": "inference"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"limits": resources}}]}})
}

/// (passing nodes, failed, unresolvable) of a filter call.
fn filter(ext: &Extender, pod: serde_json::Value, nodes: &[&str]) -> serde_json::Value {
    let body = serde_json::to_vec(&serde_json::json!({"Pod": pod, "NodeNames": nodes})).unwrap();
    let args = wire::decode_args("filter", &body).unwrap();
    serde_json::from_slice(&wire::encode_filter_result(&ext.filter(&args))).unwrap()
}

fn bound(ext: &Extender, uid: &str, resources: serde_json::Value, node: &str) {
    let p: wire::Pod = serde_json::from_value(pod(uid, resources, Some(node))).unwrap();
    ext.cache().upsert_pod(PodRecord {
        uid: uid.into(),
        key: format!("ml/{uid}"),
        node: Some(node.into()),
        request: sovra_extender::pod::pod_request(&p),
        devices: None,
    });
}

#[test]
fn mig_slices_are_checked_for_residency_model_and_capacity() {
    let ext = extender();
    let nodes = ["fr-mig", "fr-whole", "hyper-mig"];
    let v = filter(&ext, pod("p", serde_json::json!({"nvidia.com/mig-1g.10gb": "2"}), None), &nodes);
    // Only the French MIG node: the H100 has no such slice (the old code counted no GPU and passed it), and the
    // US-owned zone fails the class.
    assert_eq!(v["NodeNames"], serde_json::json!(["fr-mig"]), "{v}");
    let never = &v["FailedAndUnresolvableNodes"];
    assert_eq!(never["fr-whole"], "no GPU of an allowed model [A100-80GB-MIG-1g.10gb]", "{v}");
    assert!(never["hyper-mig"].as_str().unwrap().contains("fails residency class eu-restricted"), "{v}");
    // A profile no node has: refused everywhere, never "any model".
    let v = filter(&ext, pod("q", serde_json::json!({"nvidia.com/mig-3g.40gb": "1"}), None), &nodes);
    assert_eq!(v["NodeNames"], serde_json::json!([]), "{v}");
    assert_eq!(v["FailedAndUnresolvableNodes"]["fr-mig"], "no GPU of an allowed model [*-MIG-3g.40gb]", "{v}");
    // Capacity: 6 of the 7 slices taken, 2 more do not fit now; 1 does.
    bound(&ext, "busy", serde_json::json!({"nvidia.com/mig-1g.10gb": "6"}), "fr-mig");
    assert_eq!(ext.cache().accounted_pods(), 1);
    let v = filter(&ext, pod("r", serde_json::json!({"nvidia.com/mig-1g.10gb": "2"}), None), &["fr-mig"]);
    assert_eq!(v["FailedNodes"]["fr-mig"], "fewer than 2 fully free GPUs", "{v}");
    let v = filter(&ext, pod("s", serde_json::json!({"nvidia.com/mig-1g.10gb": "1"}), None), &["fr-mig"]);
    assert_eq!(v["NodeNames"], serde_json::json!(["fr-mig"]), "{v}");
}

#[test]
fn bad_mig_requests_are_refused_with_the_reason() {
    let ext = extender();
    for (resources, want) in [
        (
            serde_json::json!({"nvidia.com/mig-1g.10gb": "1", "nvidia.com/mig-3g.40gb": "1"}),
            "two profiles (nvidia.com/mig-1g.10gb and nvidia.com/mig-3g.40gb)",
        ),
        (serde_json::json!({"nvidia.com/mig-1g.10gb": "1", "nvidia.com/gpu": "1"}), "asks for both nvidia.com/gpu"),
        (serde_json::json!({"nvidia.com/mig-1g.10gb": "1000"}), "at most 448 MIG slices"),
    ] {
        let v = filter(&ext, pod("bad", resources, None), &["fr-mig"]);
        let why = v["FailedAndUnresolvableNodes"]["fr-mig"].as_str().unwrap();
        assert!(why.contains(want), "{why}");
    }
}

#[test]
fn api_nodes_offer_their_allocatable_mig_slices() {
    // The cluster file without its nodes: the node comes from the API.
    let zones_pools_classes = CLUSTER.split("nodes:").next().unwrap();
    let cfg = ClusterConfig::from_yaml("mig.yaml", &format!("{zones_pools_classes}nodes: []\n")).unwrap();
    let ext = Arc::new(Extender::new(Arc::new(Cache::new(cfg).unwrap()), PolicySpec::default(), 0, Binder::DryRun));
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("node-restriction.kubernetes.io/sovra-pool".to_string(), "fr-infer".to_string());
    labels.insert("nvidia.com/gpu.product".to_string(), "NVIDIA-A100-SXM4-80GB".to_string());
    labels.insert("nvidia.com/gpu.count".to_string(), "2".to_string());
    ext.cache().upsert_node(KubeNode {
        name: "k8s-mig".into(),
        labels,
        cpu_milli: 64_000,
        memory_mib: 262_144,
        gpus: 0,
        mig: [("3g.40gb".to_string(), 4)].into_iter().collect(),
        ready: true,
        ..Default::default()
    });
    let snap = ext.cache().snapshot();
    let i = snap.node_index("k8s-mig").unwrap();
    assert_eq!(snap.state.topology().nodes[i as usize].dev_count, 4, "4 slices, not the 2 GPUs of the count label");
    let v = filter(&ext, pod("p", serde_json::json!({"nvidia.com/mig-3g.40gb": "4"}), None), &["k8s-mig"]);
    assert_eq!(v["NodeNames"], serde_json::json!(["k8s-mig"]), "{v}");
    let v = filter(&ext, pod("q", serde_json::json!({"nvidia.com/mig-3g.40gb": "5"}), None), &["k8s-mig"]);
    assert_eq!(v["NodeNames"], serde_json::json!([]), "{v}");
}

#[test]
fn the_scheduler_config_manages_the_common_mig_profiles() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/scheduler-config.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    for profile in ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.5gb", "3g.20gb", "7g.40gb"] {
        assert!(text.contains(&format!("- name: nvidia.com/mig-{profile}\n")), "managedResources lacks mig-{profile}");
    }
}
