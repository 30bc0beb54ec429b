//! What the webhook knows of namespaces and nodes: metadata-only watches (labels only are kept), and a direct read
//! whenever the cache could let a pod through — a namespace the cache does not know or knows as unregulated, a
//! node it does not know. A read that fails refuses the request ([`crate::policy::Lookup`] returns `Err`).

use crate::policy::Lookup;
use crate::review::Request;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use serde_json::Value;
use sovra_extender::cache::POOL_LABEL;
use sovra_extender::pod::RESIDENCY_LABEL;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Labels of namespaces and nodes, kept by watches.
#[derive(Default)]
pub struct Labels {
    namespaces: RwLock<BTreeMap<String, Option<String>>>,
    nodes: RwLock<BTreeMap<String, Option<String>>>,
    namespaces_synced: AtomicBool,
    nodes_synced: AtomicBool,
}

impl Labels {
    /// Whether both watches have delivered their first full list.
    pub fn synced(&self) -> bool {
        self.namespaces_synced.load(Ordering::Acquire) && self.nodes_synced.load(Ordering::Acquire)
    }

    fn get(map: &RwLock<BTreeMap<String, Option<String>>>, key: &str) -> Option<Option<String>> {
        map.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }
}

/// One request's view: the cache, overlaid with what was read from the API for it.
pub struct View<'a> {
    labels: &'a Labels,
    namespace: Option<Result<Option<String>, String>>,
    node: Option<Result<Option<String>, String>>,
}

impl Lookup for View<'_> {
    fn namespace_class(&self, namespace: &str) -> Result<Option<String>, String> {
        if let Some(r) = &self.namespace {
            return r.clone();
        }
        Labels::get(&self.labels.namespaces, namespace)
            .ok_or_else(|| format!("namespace {namespace} is not known to the webhook yet; retry"))
    }

    fn node_pool(&self, node: &str) -> Result<Option<String>, String> {
        if let Some(r) = &self.node {
            return r.clone();
        }
        Labels::get(&self.labels.nodes, node).ok_or_else(|| format!("node {node} is not known to the webhook; retry"))
    }
}

fn label(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> Option<String> {
    meta.labels.as_ref().and_then(|l| l.get(key)).cloned()
}

/// The cache plus a client to read what it misses.
#[derive(Clone)]
pub struct KubeLookup {
    /// The watched labels.
    pub labels: Arc<Labels>,
    client: kube::Client,
}

impl KubeLookup {
    /// Starts the namespace and node watches (metadata only) on the current runtime.
    pub fn start(client: kube::Client) -> KubeLookup {
        let labels = Arc::new(Labels::default());
        tokio::spawn(watch_labels::<Namespace>(client.clone(), labels.clone(), RESIDENCY_LABEL, true));
        tokio::spawn(watch_labels::<Node>(client.clone(), labels.clone(), POOL_LABEL, false));
        KubeLookup { labels, client }
    }

    /// The view for `req`: reads from the API the namespace when the cache does not say it is regulated, and the
    /// node a pod presets or a binding targets when the cache does not know it.
    pub async fn view(&self, req: &Request) -> View<'_> {
        let mut view = View { labels: &self.labels, namespace: None, node: None };
        let node = match (req.kind.kind.as_str(), req.sub_resource.as_str()) {
            ("Pod", "") => req.object.pointer("/spec/nodeName"),
            ("Binding", _) => req.object.pointer("/target/name"),
            _ => return view,
        }
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
        if !req.namespace.is_empty() && !matches!(Labels::get(&self.labels.namespaces, &req.namespace), Some(Some(_))) {
            let api: Api<Namespace> = Api::all(self.client.clone());
            view.namespace = Some(match api.get_metadata_opt(&req.namespace).await {
                Ok(Some(ns)) => Ok(label(&ns.metadata, RESIDENCY_LABEL)),
                Ok(None) => Err(format!("namespace {} does not exist", req.namespace)),
                Err(e) => Err(format!("cannot read namespace {} from the API ({e}); retry", req.namespace)),
            });
        }
        if let Some(node) = node
            && Labels::get(&self.labels.nodes, node).is_none()
        {
            let api: Api<Node> = Api::all(self.client.clone());
            view.node = Some(match api.get_metadata_opt(node).await {
                Ok(Some(n)) => Ok(label(&n.metadata, POOL_LABEL)),
                Ok(None) => Err(format!("node {node} does not exist")),
                Err(e) => Err(format!("cannot read node {node} from the API ({e}); retry")),
            });
        }
        view
    }
}

async fn watch_labels<K>(client: kube::Client, labels: Arc<Labels>, key: &'static str, namespaces: bool)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let (map, synced) = if namespaces {
        (&labels.namespaces, &labels.namespaces_synced)
    } else {
        (&labels.nodes, &labels.nodes_synced)
    };
    // `Api<PartialObjectMeta<K>>` asks for metadata only: labels are all the webhook keeps.
    let stream = watcher(Api::<PartialObjectMeta<K>>::all(client), watcher::Config::default());
    let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::default_backoff(stream));
    let mut fresh: Option<BTreeMap<String, Option<String>>> = None;
    while let Some(event) = stream.next().await {
        let name_of =
            |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.name.clone().unwrap_or_default();
        match event {
            Ok(watcher::Event::Apply(o)) => {
                map.write().unwrap_or_else(|e| e.into_inner()).insert(name_of(&o.metadata), label(&o.metadata, key));
            }
            Ok(watcher::Event::Delete(o)) => {
                map.write().unwrap_or_else(|e| e.into_inner()).remove(&name_of(&o.metadata));
            }
            Ok(watcher::Event::Init) => fresh = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(f) = fresh.as_mut() {
                    f.insert(name_of(&o.metadata), label(&o.metadata, key));
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(f) = fresh.take() {
                    *map.write().unwrap_or_else(|e| e.into_inner()) = f;
                }
                synced.store(true, Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "{} watch error (retrying)", K::kind(&())),
        }
    }
}

/// A lookup from fixed maps (tests, dry runs).
#[derive(Debug, Clone, Default)]
pub struct StaticLookup {
    /// Namespace → residency label.
    pub namespaces: BTreeMap<String, Option<String>>,
    /// Node → pool label.
    pub nodes: BTreeMap<String, Option<String>>,
}

impl Lookup for StaticLookup {
    fn namespace_class(&self, namespace: &str) -> Result<Option<String>, String> {
        self.namespaces.get(namespace).cloned().ok_or_else(|| format!("namespace {namespace} does not exist"))
    }

    fn node_pool(&self, node: &str) -> Result<Option<String>, String> {
        self.nodes.get(node).cloned().ok_or_else(|| format!("node {node} does not exist"))
    }
}
