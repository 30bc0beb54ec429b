//! The pod source of a real node: the Kubernetes API, listing pods with the field selector
//! `spec.nodeName=<node>` (the service account needs `list` on pods; deploy/device-plugin.yaml grants it).

use crate::lookup::{ContainerView, LookupError, PodSource, PodView};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, ListParams};
use sovra_domain::gpu_devices::{GPU_DEVICES_ANNOTATION, GPU_DEVICES_NODE_ANNOTATION};

/// The resource this plugin serves.
pub const GPU_MILLI_RESOURCE: &str = "sovra.io/gpu-milli";

/// Lists the pods of one node through kube-rs.
pub struct KubePods {
    client: kube::Client,
    node: String,
}

impl KubePods {
    /// A source for `node`.
    pub fn new(client: kube::Client, node: &str) -> KubePods {
        KubePods { client, node: node.to_string() }
    }
}

fn milli(c: &Container) -> u64 {
    let r = c.resources.as_ref();
    let pick = |m: Option<
        &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| { m.and_then(|m| m.get(GPU_MILLI_RESOURCE)).map(|q| q.0.clone()) };
    // Requests win; for extended resources Kubernetes copies limits into requests when only limits are set.
    let text = pick(r.and_then(|r| r.requests.as_ref())).or_else(|| pick(r.and_then(|r| r.limits.as_ref())));
    // Extended resources are whole numbers (the API server refuses others); anything else asks for none here,
    // so such a container is never a candidate.
    text.and_then(|t| t.trim().parse::<u64>().ok()).unwrap_or(0)
}

/// The plugin's view of a Kubernetes pod.
pub fn pod_view(p: &Pod) -> PodView {
    let meta = &p.metadata;
    let spec = p.spec.as_ref();
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    let containers = spec
        .map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()).collect::<Vec<_>>())
        .unwrap_or_default();
    PodView {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        created_s: meta.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0),
        starting: meta.deletion_timestamp.is_none() && matches!(phase, None | Some("Pending")),
        gpu_devices: meta.annotations.as_ref().and_then(|a| a.get(GPU_DEVICES_ANNOTATION)).cloned(),
        gpu_devices_node: meta.annotations.as_ref().and_then(|a| a.get(GPU_DEVICES_NODE_ANNOTATION)).cloned(),
        containers: containers
            .into_iter()
            .map(|c| ContainerView { name: c.name.clone(), gpu_milli: milli(c) })
            .collect(),
    }
}

impl PodSource for KubePods {
    async fn pods_on_node(&self) -> Result<Vec<PodView>, LookupError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let params = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        let list = pods.list(&params).await.map_err(|e| LookupError {
            node: self.node.clone(),
            message: format!("the Kubernetes API answered: {e}"),
        })?;
        Ok(list.items.iter().map(pod_view).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> PodView {
        pod_view(&serde_json::from_value::<Pod>(json).unwrap())
    }

    #[test]
    fn reads_requests_limits_phase_deletion_and_the_annotation() {
        let v = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ml", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:10Z",
                         "annotations": {"sovra.io/gpu-devices": "1:300", "sovra.io/gpu-devices-node": "n1"}},
            "spec": {"initContainers": [{"name": "init", "resources": {"requests": {"sovra.io/gpu-milli": "100"},
                                                                         "limits": {"sovra.io/gpu-milli": "999"}}}],
                     "containers": [{"name": "main", "resources": {"limits": {"sovra.io/gpu-milli": "200"}}},
                                    {"name": "side", "resources": {"requests": {"cpu": "1"}}},
                                    {"name": "odd", "resources": {"requests": {"sovra.io/gpu-milli": "1k"}}}]},
            "status": {"phase": "Pending"}}));
        assert_eq!((v.namespace.as_str(), v.name.as_str(), v.uid.as_str()), ("ml", "p", "u1"));
        assert_eq!(v.created_s, 1_767_225_610);
        assert!(v.starting);
        assert_eq!(v.gpu_devices.as_deref(), Some("1:300"));
        assert_eq!(v.gpu_devices_node.as_deref(), Some("n1"));
        let milli: Vec<(&str, u64)> = v.containers.iter().map(|c| (c.name.as_str(), c.gpu_milli)).collect();
        assert_eq!(milli, [("init", 100), ("main", 200), ("side", 0), ("odd", 0)]);
        let deleting = pod(serde_json::json!({
            "metadata": {"name": "d", "deletionTimestamp": "2026-01-01T00:00:10Z"},
            "spec": {"containers": []}, "status": {"phase": "Pending"}}));
        assert!(!deleting.starting);
        let running = pod(serde_json::json!({"metadata": {"name": "r"}, "spec": {"containers": []},
            "status": {"phase": "Running"}}));
        assert!(!running.starting);
        let fresh = pod(serde_json::json!({"metadata": {"name": "f"}, "spec": {"containers": []}}));
        assert!(fresh.starting && fresh.gpu_devices.is_none());
    }
}
