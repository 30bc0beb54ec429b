//! The Kubernetes side, through kube-rs: Bindings, node labels, and the Node and Pod watches that keep the cache.

use crate::cache::{Cache, ISLANDS_ANNOTATION, PodRecord};
use crate::pod::{pod_key, pod_request};
use crate::readiness::Watch;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use petgraph::unionfind::UnionFind;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub mod lean;

pub use lean::{LeanNode, LeanPod};

/// Creates the pod's Binding (`POST /api/v1/namespaces/{ns}/pods/{name}/binding`) with target `Node/{node}` and
/// the pod's UID as precondition, as kube-scheduler's default binder does. Idempotent: when the API answers 409
/// Conflict (the pod is already bound) and the pod is bound to `node`, that is a success; bound elsewhere, an error.
pub async fn bind_pod(client: &kube::Client, ns: &str, name: &str, uid: &str, node: &str) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            uid: (!uid.is_empty()).then(|| uid.to_string()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    match pods.create_subresource::<_, serde_json::Value>("binding", name, &PostParams::default(), &binding).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => match pods.get(name).await {
            Ok(pod) => match pod.spec.and_then(|s| s.node_name) {
                Some(n) if n == node => Ok(()),
                Some(n) => Err(format!("pod {ns}/{name} is already bound to node {n} (API conflict 409)")),
                None => Err(format!("binding pod {ns}/{name} to {node}: API conflict 409: {}", status.message)),
            },
            Err(e) => Err(format!("binding pod {ns}/{name} to {node}: API conflict 409, then reading the pod: {e}")),
        },
        Err(kube::Error::Api(status)) => Err(format!(
            "binding pod {ns}/{name} to {node}: the API server answered {} {}: {}",
            status.code, status.reason, status.message
        )),
        Err(e) => Err(format!("binding pod {ns}/{name} to {node}: {e}")),
    }
}

/// Records the devices chosen for a pod in its annotations ([`crate::assign`]) with one JSON merge patch
/// (`PATCH /api/v1/namespaces/{ns}/pods/{name}`, field manager `sovra-extender`), the pod's UID as precondition (a
/// pod re-created under the same name has another UID, and kube-apiserver refuses the patch: 422, `metadata.uid`
/// is immutable). Done before the Binding.
pub async fn annotate_pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    uid: &str,
    assigned: &crate::assign::Assigned,
) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut metadata = serde_json::Map::new();
    if !uid.is_empty() {
        metadata.insert("uid".into(), uid.into());
    }
    metadata
        .insert("annotations".into(), serde_json::to_value(crate::assign::annotations(assigned)).unwrap_or_default());
    let patch = serde_json::json!({ "metadata": metadata });
    let params = PatchParams { field_manager: Some("sovra-extender".into()), ..Default::default() };
    match pods.patch(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(format!(
            "recording the devices of pod {ns}/{name} (annotation {}): the API server answered {} {}: {}",
            crate::assign::DEVICES_ANNOTATION,
            status.code,
            status.reason,
            status.message
        )),
        Err(e) => Err(format!("recording the devices of pod {ns}/{name}: {e}")),
    }
}

/// The parts of a node daemon inventory (the JSON `sovra-node-daemon inventory` prints) that the GPU labels need;
/// other fields are ignored, so newer inventories still read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Inventory {
    /// Driver version, e.g. `550.54.15`.
    #[serde(default)]
    pub driver_version: Option<String>,
    /// The GPUs.
    #[serde(default)]
    pub gpus: Vec<InventoryGpu>,
}

/// One GPU of an [`Inventory`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InventoryGpu {
    /// NVML index.
    #[serde(default)]
    pub index: u32,
    /// NVML name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Memory, MiB.
    pub memory_total_mib: u64,
    /// CUDA compute capability (major, minor).
    #[serde(default)]
    pub compute_capability: [i32; 2],
    /// PCI bus id.
    #[serde(default)]
    pub pci_bus_id: String,
    /// PCI bus ids of the GPUs this one has NVLink to.
    #[serde(default)]
    pub nvlink_peers: Vec<String>,
    /// MIG mode.
    #[serde(default)]
    pub mig_enabled: bool,
    /// `{"state": "healthy"}` or `{"state": "unhealthy", "reason": …}`.
    #[serde(default)]
    pub health: Option<serde_json::Value>,
}

impl InventoryGpu {
    fn healthy(&self) -> bool {
        self.health.as_ref().is_none_or(|h| h.get("state").and_then(|s| s.as_str()) == Some("healthy"))
    }
}

/// The model name Sovra uses for an NVML name, as the node daemon derives it: without `NVIDIA `, spaces as `-`
/// (`NVIDIA H100 80GB HBM3` → `H100-80GB-HBM3`).
pub fn model_name(nvml_name: &str) -> String {
    nvml_name.trim().trim_start_matches("NVIDIA ").split_whitespace().collect::<Vec<_>>().join("-")
}

/// Reads a pod from the API (for a bind request about a pod the cache has not seen). `Ok(None)` when it does not
/// exist.
pub async fn fetch_pod(client: &kube::Client, ns: &str, name: &str) -> Result<Option<PodRecord>, String> {
    let pods: Api<LeanPod> = Api::namespaced(client.clone(), ns);
    match pods.get_opt(name).await {
        Ok(Some(p)) => Ok(pod_record(&p.pod)),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("reading pod {ns}/{name}: {e}")),
    }
}

/// A label value as Kubernetes accepts it: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending with an
/// alphanumeric; other characters become `-`.
pub fn label_value(v: &str) -> String {
    let s: String = v
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .take(63)
        .collect();
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// The labels (and annotations) that describe a node's GPUs, from the node daemon's inventory, in the keys NVIDIA's
/// GPU feature discovery uses — so that workloads and tools written for GFD read them unchanged:
/// `nvidia.com/gpu.count`, `nvidia.com/gpu.product` (`NVIDIA-H100-80GB-HBM3`), `nvidia.com/gpu.memory` (MiB),
/// `nvidia.com/gpu.compute.major`/`minor`, `nvidia.com/cuda.driver.major`/`minor`/`rev`, `nvidia.com/mig.capable`,
/// plus Sovra's `sovra.io/gpu.healthy` (healthy GPUs). The first GPU describes a mixed node, as in GFD. NVLink
/// islands go to the `sovra.io/gpu-nvlink-islands` annotation (label values are too short for them).
pub fn inventory_labels(inv: &Inventory) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    labels.insert("nvidia.com/gpu.count".to_string(), inv.gpus.len().to_string());
    if let Some(g) = inv.gpus.first() {
        labels.insert("nvidia.com/gpu.product".into(), label_value(&format!("NVIDIA-{}", model_name(&g.name))));
        labels.insert("nvidia.com/gpu.memory".into(), g.memory_total_mib.to_string());
        labels.insert("nvidia.com/gpu.compute.major".into(), g.compute_capability[0].to_string());
        labels.insert("nvidia.com/gpu.compute.minor".into(), g.compute_capability[1].to_string());
        labels.insert("nvidia.com/mig.capable".into(), inv.gpus.iter().any(|g| g.mig_enabled).to_string());
    }
    // Only a numeric driver version (`550.54.15`), not a fake backend's `fake`.
    if let Some(driver) = inv.driver_version.as_ref().filter(|d| d.split('.').all(|p| p.parse::<u32>().is_ok())) {
        for (part, key) in driver.split('.').zip(["major", "minor", "rev"]) {
            labels.insert(format!("nvidia.com/cuda.driver.{key}"), label_value(part));
        }
    }
    let healthy = inv.gpus.iter().filter(|g| g.healthy()).count();
    labels.insert("sovra.io/gpu.healthy".into(), healthy.to_string());
    // NVLink islands: connected components of the peer links (PCI bus ids), by position in the inventory
    // (petgraph's union-find, as the placement core's snapshot uses).
    let n = inv.gpus.len();
    let by_bus: BTreeMap<&str, usize> = inv
        .gpus
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.pci_bus_id.is_empty())
        .map(|(i, g)| (g.pci_bus_id.as_str(), i))
        .collect();
    let mut island = UnionFind::<usize>::new(n);
    for (i, g) in inv.gpus.iter().enumerate() {
        for p in g.nvlink_peers.iter().filter_map(|b| by_bus.get(b.as_str()).copied()) {
            island.union(i, p);
        }
    }
    // Islands in the order of their lowest GPU, each ascending (petgraph's roots are not the lowest member).
    let mut first: BTreeMap<usize, usize> = BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in 0..n {
        let g = *first.entry(island.find_mut(i)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    let multi: Vec<Vec<usize>> = groups.into_iter().filter(|g| g.len() > 1).collect();
    if !multi.is_empty() {
        annotations.insert(ISLANDS_ANNOTATION.to_string(), serde_json::to_string(&multi).unwrap_or_default());
    }
    (labels, annotations)
}

/// Publishes labels and annotations on a Node with one JSON merge patch (`PATCH /api/v1/nodes/{name}`,
/// `application/merge-patch+json`): only the given keys change.
pub async fn publish_labels(
    client: &kube::Client,
    node: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut metadata = serde_json::Map::new();
    metadata.insert("labels".into(), serde_json::to_value(labels).unwrap_or_default());
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), serde_json::to_value(annotations).unwrap_or_default());
    }
    let patch = serde_json::json!({ "metadata": metadata });
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("labelling node {node}: {e}"))
}

/// What the cache needs of a Pod; `None` for a finished pod (it holds nothing).
pub fn pod_record(pod: &crate::wire::Pod) -> Option<PodRecord> {
    if pod.status.phase == "Succeeded" || pod.status.phase == "Failed" {
        return None;
    }
    let node = (!pod.spec.node_name.is_empty()).then(|| pod.spec.node_name.clone());
    let key = pod_key(pod);
    let devices = crate::assign::from_annotations(&pod.metadata.annotations.0).and_then(|r| {
        r.inspect_err(
            |e| tracing::warn!(pod = %key, error = %e, "recorded devices unreadable; accounting as Sovra would"),
        )
        .ok()
    });
    Some(PodRecord { uid: pod.metadata.uid.clone(), key, node, request: pod_request(pod), devices })
}

/// Watches Nodes and Pods (kube-rs watchers with backoff, decoding only what Sovra reads: [`lean`]) and keeps the
/// cache in step, forever. No copy of the objects is kept: each event updates the cache's own records. Pods that
/// finished are released; after a watch restart, objects that are gone are dropped.
///
/// Calling it (before the future is polled) marks the cache not ready: every verb refuses and `/readyz` answers
/// 503 until both watches have delivered their initial list.
pub fn watch(client: kube::Client, cache: Arc<Cache>) -> impl std::future::Future<Output = ()> + Send {
    cache.readiness().expect_watches();
    watch_forever(client, cache)
}

async fn watch_forever(client: kube::Client, cache: Arc<Cache>) {
    let nodes = {
        let cache = cache.clone();
        let stream = watcher(Api::<LeanNode>::all(client.clone()), watcher::Config::default()).default_backoff();
        async move {
            let mut stream = std::pin::pin!(stream);
            let mut seen: Option<BTreeSet<String>> = None;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(n)) => cache.upsert_node(n.node),
                    Ok(watcher::Event::Delete(n)) => cache.remove_node(&n.node.name),
                    Ok(watcher::Event::Init) => seen = Some(BTreeSet::new()),
                    Ok(watcher::Event::InitApply(n)) => {
                        if let Some(s) = seen.as_mut() {
                            s.insert(n.node.name.clone());
                        }
                        cache.upsert_node(n.node);
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(s) = seen.take() {
                            cache.retain_nodes(&s);
                        }
                        cache.readiness().synced(Watch::Nodes);
                    }
                    Err(e) => tracing::warn!(error = %e, "node watch error (retrying)"),
                }
            }
        }
    };
    let pods = {
        let cache = cache.clone();
        let config = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        let stream = watcher(Api::<LeanPod>::all(client.clone()), config).default_backoff();
        async move {
            let mut stream = std::pin::pin!(stream);
            let mut seen: Option<BTreeSet<String>> = None;
            let apply = |p: &LeanPod, seen: &mut Option<BTreeSet<String>>| {
                let uid = p.pod.metadata.uid.clone();
                match pod_record(&p.pod) {
                    Some(r) => {
                        if let Some(s) = seen.as_mut() {
                            s.insert(uid);
                        }
                        cache.upsert_pod(r)
                    }
                    None => cache.remove_pod(&uid),
                }
            };
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(p)) => apply(&p, &mut None),
                    Ok(watcher::Event::Delete(p)) => cache.remove_pod(&p.pod.metadata.uid),
                    Ok(watcher::Event::Init) => seen = Some(BTreeSet::new()),
                    Ok(watcher::Event::InitApply(p)) => apply(&p, &mut seen),
                    Ok(watcher::Event::InitDone) => {
                        if let Some(s) = seen.take() {
                            cache.retain_pods(&s);
                        }
                        cache.readiness().synced(Watch::Pods);
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch error (retrying)"),
                }
            }
        }
    };
    tokio::join!(nodes, pods);
}
