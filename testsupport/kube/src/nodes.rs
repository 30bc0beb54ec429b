//! Node objects for a control plane without kubelets: created, then given a status (capacity, allocatable, a Ready
//! condition) through the `nodes/status` subresource, as a kubelet would report it.

use crate::HarnessError;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;

/// The label naming a node's Sovra pool (as the extender and the admission webhook read it).
pub const POOL_LABEL: &str = "node-restriction.kubernetes.io/sovra-pool";

/// What a test node has.
#[derive(Debug, Clone)]
pub struct TestNode {
    /// Node name.
    pub name: String,
    /// Sovra pool (the pool label), if any.
    pub pool: Option<String>,
    /// Whole GPUs (`nvidia.com/gpu`).
    pub gpus: u32,
    /// Extra allocatable resources (e.g. `nvidia.com/mig-1g.10gb`, `sovra.io/gpu-milli`).
    pub extra: BTreeMap<String, String>,
    /// CPU cores.
    pub cpus: u32,
    /// Memory, GiB.
    pub memory_gib: u32,
    /// GPU product label (`nvidia.com/gpu.product`).
    pub product: String,
    /// Other labels.
    pub labels: BTreeMap<String, String>,
}

impl TestNode {
    /// A ready node in `pool` with `gpus` H100s, 64 cores and 512 GiB.
    pub fn gpu(name: &str, pool: &str, gpus: u32) -> TestNode {
        TestNode {
            name: name.to_string(),
            pool: Some(pool.to_string()),
            gpus,
            extra: BTreeMap::new(),
            cpus: 64,
            memory_gib: 512,
            product: "NVIDIA-H100-80GB-HBM3".into(),
            labels: BTreeMap::new(),
        }
    }

    /// The Node object (metadata and spec only; the status is patched after creation).
    pub fn object(&self) -> Node {
        let mut labels = self.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        if let Some(p) = &self.pool {
            labels.insert(POOL_LABEL.into(), p.clone());
        }
        labels.insert("nvidia.com/gpu.product".into(), self.product.clone());
        labels.insert("nvidia.com/gpu.memory".into(), "81559".into());
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
        }))
        .unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        let mut res = serde_json::json!({
            "cpu": self.cpus.to_string(),
            "memory": format!("{}Gi", self.memory_gib),
            "pods": "110",
            "nvidia.com/gpu": self.gpus.to_string(),
        });
        for (k, v) in &self.extra {
            res[k] = v.clone().into();
        }
        serde_json::json!({"status": {
            "capacity": res, "allocatable": res,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "test node (no kubelet)",
                            "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        }})
    }

    /// Creates the node and reports its status.
    pub async fn create(&self, client: &kube::Client) -> Result<Node, HarnessError> {
        let api: Api<Node> = Api::all(client.clone());
        api.create(&PostParams::default(), &self.object())
            .await
            .map_err(|e| HarnessError::Io(format!("creating node {}: {e}", self.name)))?;
        // The TaintNodesByCondition admission plugin taints a new node not-ready; the node lifecycle controller
        // (not running here) would lift it once the kubelet reports Ready.
        api.patch(&self.name, &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"taints": null}})))
            .await
            .map_err(|e| HarnessError::Io(format!("node {} taints: {e}", self.name)))?;
        api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&self.status()))
            .await
            .map_err(|e| HarnessError::Io(format!("node {} status: {e}", self.name)))
    }
}
