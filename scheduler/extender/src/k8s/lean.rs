//! Lean watch objects: what the Node and Pod watches decode, instead of the full `k8s_openapi` types. Only the
//! fields Sovra reads are kept once an object is decoded (a Node's pool, GPU and NVLink labels, its allocatable
//! amounts and readiness; a Pod's identity, requests, labels, node and phase); everything else (managed fields,
//! images, statuses, environment, volumes) is skipped while decoding. Nothing keeps a copy of the objects: the
//! watch turns each one into the cache's own record and drops it.

use crate::cache::{COUNT_LABEL, ISLANDS_ANNOTATION, KubeNode, MEMORY_LABEL, POOL_LABEL, PRODUCT_LABEL};
use crate::pod::GPU_RESOURCE;
use crate::quantity;
use crate::wire::{ObjectMeta as WireMeta, Pod as WirePod, QuantityText};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// The Node labels Sovra reads; the others are dropped as the Node is decoded.
pub const NODE_LABELS_READ: [&str; 4] = [POOL_LABEL, PRODUCT_LABEL, MEMORY_LABEL, COUNT_LABEL];

/// Whether Sovra reads a Node label: [`NODE_LABELS_READ`], and the memory of a MIG profile
/// (`nvidia.com/mig-<profile>.memory`, GPU feature discovery).
pub fn label_read(key: &str) -> bool {
    NODE_LABELS_READ.contains(&key) || key.strip_suffix(".memory").is_some_and(|k| crate::mig::mig_profile(k).is_some())
}

/// The identity a watch needs of an object (name, namespace, UID, resource version), as kube-rs types it.
fn identity(m: &WireMeta) -> ObjectMeta {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    ObjectMeta {
        name: some(&m.name),
        namespace: some(&m.namespace),
        uid: some(&m.uid),
        resource_version: some(&m.resource_version),
        ..Default::default()
    }
}

/// A Node as the watch decodes it: its identity and the [`KubeNode`] the cache keeps.
#[derive(Debug, Clone)]
pub struct LeanNode {
    meta: ObjectMeta,
    /// What Sovra reads of the Node.
    pub node: KubeNode,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct NodeSpec {
    unschedulable: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct NodeStatus {
    allocatable: Option<BTreeMap<String, QuantityText>>,
    conditions: Option<Vec<Condition>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct RawNode {
    metadata: WireMeta,
    spec: Option<NodeSpec>,
    status: Option<NodeStatus>,
}

impl<'de> Deserialize<'de> for LeanNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawNode::deserialize(d)?;
        let status = raw.status.unwrap_or_default();
        let alloc = status.allocatable.unwrap_or_default();
        let amount = |key: &str, read: fn(&str) -> Result<u64, quantity::QuantityError>| {
            alloc.get(key).and_then(|q| read(&q.0).ok()).unwrap_or(0)
        };
        let ready = status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True")
            && !raw.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let meta = identity(&raw.metadata);
        let WireMeta { name, labels, annotations, .. } = raw.metadata;
        let node = KubeNode {
            labels: labels.0.into_iter().filter(|(k, _)| label_read(k)).collect(),
            annotations: annotations.0.into_iter().filter(|(k, _)| k == ISLANDS_ANNOTATION).collect(),
            cpu_milli: amount("cpu", quantity::cpu_milli),
            memory_mib: amount("memory", quantity::memory_mib),
            gpus: u32::try_from(amount(GPU_RESOURCE, quantity::count)).unwrap_or(u32::MAX),
            mig: alloc
                .iter()
                .filter_map(|(k, q)| {
                    let profile = crate::mig::mig_profile(k)?;
                    let n = quantity::count(&q.0).ok().and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0)?;
                    Some((profile.to_string(), n))
                })
                .collect(),
            ready,
            name,
        };
        Ok(LeanNode { meta, node })
    }
}

/// A Pod as the watch decodes it: the extender's lenient reader of the fields it uses.
#[derive(Debug, Clone)]
pub struct LeanPod {
    meta: ObjectMeta,
    /// The fields the extender reads.
    pub pod: WirePod,
}

impl<'de> Deserialize<'de> for LeanPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pod = WirePod::deserialize(d)?;
        Ok(LeanPod { meta: identity(&pod.metadata), pod })
    }
}

macro_rules! core_v1 {
    ($t:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl k8s_openapi::Resource for $t {
            const API_VERSION: &'static str = "v1";
            const GROUP: &'static str = "";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }
        impl k8s_openapi::Metadata for $t {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.meta
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.meta
            }
        }
    };
}

core_v1!(LeanNode, "Node", "nodes", k8s_openapi::ClusterResourceScope);
core_v1!(LeanPod, "Pod", "pods", k8s_openapi::NamespaceResourceScope);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_only_what_sovra_reads() {
        let n: LeanNode = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "uid": "u", "resourceVersion": "7",
                "labels": {POOL_LABEL: "fr-train", "kubernetes.io/hostname": "n1", PRODUCT_LABEL: "NVIDIA-H100"},
                "annotations": {ISLANDS_ANNOTATION: "[[0,1]]", "node.alpha.kubernetes.io/ttl": "0"},
                "managedFields": [{"manager": "kubelet"}]},
            "spec": {"unschedulable": false},
            "status": {"allocatable": {"cpu": "64", "memory": "1Gi", GPU_RESOURCE: "8"},
                       "conditions": [{"type": "Ready", "status": "True"}], "images": [{"names": ["x"]}]}}))
        .unwrap();
        assert_eq!(n.meta.resource_version.as_deref(), Some("7"));
        assert_eq!(n.node.labels.keys().collect::<Vec<_>>(), vec![POOL_LABEL, PRODUCT_LABEL]);
        assert_eq!(n.node.annotations.keys().collect::<Vec<_>>(), vec![ISLANDS_ANNOTATION]);
        assert_eq!((n.node.cpu_milli, n.node.memory_mib, n.node.gpus, n.node.ready), (64_000, 1024, 8, true));
        let cordoned: LeanNode = serde_json::from_value(serde_json::json!({"metadata": {"name": "n2"},
            "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap();
        assert!(!cordoned.node.ready);
    }
}
