//! The extender's cache: which nodes exist and what runs on them (`nodeCacheCapable: true` needs one).
//!
//! Nodes come from the Sovra cluster config (`nodes:`) and, with `--kube`, from the Kubernetes API: a Node that is
//! not in the config joins the pool named by its `node-restriction.kubernetes.io/sovra-pool` label (a label a
//! kubelet cannot set on itself), with GPUs from its allocatable `nvidia.com/gpu` and GPU feature discovery labels.
//! A node's zone is always its pool's zone in the config; a node whose pool (hence zone) is unknown is never
//! offered. Pods bound to a node (seen through the API, or bound by this extender) are accounted on it.
//!
//! Readers take an immutable [`Snapshot`] (an `Arc`), so filter and prioritize calls never wait for each other;
//! writers update the cache and mark it dirty, and the next reader publishes a new snapshot.

use crate::pod::{GPU_RESOURCE, PodRequest};
use sovra_domain::{ClusterConfig, GPU_MILLI, Gpu, Health, Job, Node, PolicySpec};
use sovra_placement::{ClusterState, DEFAULT_SEED, Decision, DeviceAssignment, NodeIdx, Placer, ReplicaPlacement};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Label naming a node's Sovra pool. Under the NodeRestriction admission plugin a kubelet cannot set labels with
/// the `node-restriction.kubernetes.io/` prefix, so the pool (and through it the zone) comes from an
/// administrator, never from the node itself (docs/design.md invariant 2).
pub const POOL_LABEL: &str = "node-restriction.kubernetes.io/sovra-pool";
/// GPU feature discovery label: the GPU product, e.g. `NVIDIA-H100-80GB-HBM3`.
pub const PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// GPU feature discovery label: memory of one GPU in MiB.
pub const MEMORY_LABEL: &str = "nvidia.com/gpu.memory";
/// GPU feature discovery label: number of GPUs.
pub const COUNT_LABEL: &str = "nvidia.com/gpu.count";
/// Annotation with the node's NVLink islands as JSON (`[[0,1,2,3],[4,5,6,7]]`), published with the labels.
pub const ISLANDS_ANNOTATION: &str = "sovra.io/gpu-nvlink-islands";

/// Pod requests remembered from filter calls (so that bind can account a pod before the watch reports it).
const MAX_PENDING: usize = 20_000;

/// A Node as read from the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubeNode {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Allocatable CPU, milli-cores.
    pub cpu_milli: u64,
    /// Allocatable memory, MiB.
    pub memory_mib: u64,
    /// Allocatable `nvidia.com/gpu`.
    pub gpus: u32,
    /// Allocatable MIG slices by profile (`nvidia.com/mig-<profile>`).
    pub mig: BTreeMap<String, u32>,
    /// `Ready` condition true and not cordoned.
    pub ready: bool,
}

/// A pod as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    /// UID.
    pub uid: String,
    /// `namespace/name`.
    pub key: String,
    /// The node it is bound to.
    pub node: Option<String>,
    /// What it asks for, or why that could not be read.
    pub request: Result<PodRequest, String>,
    /// The devices recorded on it at bind ([`crate::assign`]); accounted as recorded when they fit.
    pub devices: Option<crate::assign::Assigned>,
}

/// Members of a gang the cache knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GangCount {
    /// Pods of the group (not finished).
    pub members: u32,
    /// Of which bound to a node.
    pub bound: u32,
}

/// An immutable view for one request.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The placement core's state: nodes and what is in use.
    pub state: ClusterState,
    /// Nodes that are known but never offered, with the reason (no pool, unknown pool, bad inventory).
    pub not_offered: BTreeMap<String, Arc<str>>,
    /// Gangs by `namespace/group`.
    pub gangs: BTreeMap<String, GangCount>,
    /// Node name → index in the state's topology (a hash map: filter looks up every candidate).
    pub index: Arc<NameIndex>,
}

/// Node names → node indices.
pub type NameIndex = rustc_hash::FxHashMap<String, NodeIdx>;

impl Snapshot {
    /// The index of a node that may be offered (known, with a known pool and zone).
    #[inline]
    pub fn node_index(&self, name: &str) -> Option<NodeIdx> {
        self.index.get(name).copied()
    }
}

fn name_index(state: &ClusterState) -> Arc<NameIndex> {
    Arc::new(state.topology().nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i as NodeIdx)).collect())
}

#[derive(Debug)]
struct Inner {
    config: ClusterConfig,
    kube_nodes: BTreeMap<String, KubeNode>,
    pods: BTreeMap<String, PodRecord>,
    /// Requests seen in filter calls, by UID, with insertion order for eviction.
    pending: BTreeMap<String, (u64, PodRecord)>,
    pending_order: VecDeque<(u64, String)>,
    pending_seq: u64,
    state: ClusterState,
    index: Arc<NameIndex>,
    not_offered: BTreeMap<String, Arc<str>>,
    accounted: BTreeMap<String, Decision>,
    /// Pods this extender bound that the watch has not shown bound yet: an older, unbound version of them (e.g.
    /// the device annotation written just before the Binding) does not release what they hold.
    assumed: BTreeMap<String, (String, Option<crate::assign::Assigned>)>,
    /// The node set changed: rebuild the topology before publishing.
    rebuild: bool,
}

/// The cache (see the module documentation).
#[derive(Debug)]
pub struct Cache {
    inner: Mutex<Inner>,
    published: RwLock<Arc<Snapshot>>,
    dirty: AtomicBool,
    readiness: crate::readiness::Readiness,
}

/// A cache that could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build the node cache: {0}")]
pub struct CacheError(pub String);

impl Cache {
    /// The config's FGD target workload (`scheduling.fgd_target_workload`; empty: learn it).
    pub fn fgd_target_workload(&self) -> Vec<sovra_domain::WorkloadShare> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).config.scheduling.fgd_target_workload.clone()
    }

    /// The config's search cap (`scheduling.max_feasible_nodes`; 0: score every node).
    pub fn max_feasible_nodes(&self) -> u32 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).config.scheduling.max_feasible_nodes
    }

    /// A cache holding the config's nodes (all ready, nothing running).
    pub fn new(config: ClusterConfig) -> Result<Cache, CacheError> {
        let state = ClusterState::from_config(&config).map_err(|e| CacheError(e.to_string()))?;
        let index = name_index(&state);
        let snapshot = Snapshot {
            state: state.clone(),
            not_offered: BTreeMap::new(),
            gangs: BTreeMap::new(),
            index: index.clone(),
        };
        Ok(Cache {
            inner: Mutex::new(Inner {
                config,
                kube_nodes: BTreeMap::new(),
                pods: BTreeMap::new(),
                pending: BTreeMap::new(),
                pending_order: VecDeque::new(),
                pending_seq: 0,
                state,
                index,
                not_offered: BTreeMap::new(),
                accounted: BTreeMap::new(),
                assumed: BTreeMap::new(),
                rebuild: false,
            }),
            published: RwLock::new(Arc::new(snapshot)),
            dirty: AtomicBool::new(false),
            readiness: Default::default(),
        })
    }

    /// Whether the watches that fill the cache have synced (ready at once when nothing watches).
    pub fn readiness(&self) -> &crate::readiness::Readiness {
        &self.readiness
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the cache half-updated in a way that matters more than
        // refusing every later request would: keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current snapshot, publishing pending changes first.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        if self.dirty.load(Ordering::Acquire) {
            let mut inner = self.lock();
            if self.dirty.swap(false, Ordering::AcqRel) {
                let snap = inner.publish();
                *self.published.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
            }
        }
        self.published.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Adds or updates a Node seen through the API.
    pub fn upsert_node(&self, node: KubeNode) {
        let mut inner = self.lock();
        let Some(old) = inner.kube_nodes.get(&node.name) else {
            inner.kube_nodes.insert(node.name.clone(), node);
            inner.rebuild = true;
            self.changed();
            return;
        };
        if *old == node {
            return; // e.g. a heartbeat: nothing Sovra reads changed
        }
        let only_readiness = KubeNode { ready: old.ready, ..node.clone() } == *old;
        let idx = inner.index.get(&node.name).copied();
        let (name, ready) = (node.name.clone(), node.ready);
        inner.kube_nodes.insert(name, node);
        match idx {
            // Readiness alone changes in place; anything else rebuilds the topology.
            Some(i) if only_readiness && !inner.rebuild => inner.state.set_node_ready(i, ready),
            _ => inner.rebuild = true,
        }
        self.changed();
    }

    /// Removes a Node.
    pub fn remove_node(&self, name: &str) {
        let mut inner = self.lock();
        if inner.kube_nodes.remove(name).is_some() {
            inner.rebuild = true;
            self.changed();
        }
    }

    /// Keeps only these API nodes (after a watch restart lists them all again).
    pub fn retain_nodes(&self, names: &std::collections::BTreeSet<String>) {
        let mut inner = self.lock();
        let before = inner.kube_nodes.len();
        inner.kube_nodes.retain(|n, _| names.contains(n));
        if inner.kube_nodes.len() != before {
            inner.rebuild = true;
            self.changed();
        }
    }

    /// Adds or updates a pod (from the API). A finished pod should be removed instead.
    pub fn upsert_pod(&self, mut pod: PodRecord) {
        let mut inner = self.lock();
        if pod.node.is_some() {
            inner.assumed.remove(&pod.uid);
        } else if let Some((node, devices)) = inner.assumed.get(&pod.uid) {
            pod.node = Some(node.clone());
            pod.devices = devices.clone();
        }
        if inner.pods.get(&pod.uid) == Some(&pod) {
            return;
        }
        inner.pending.remove(&pod.uid);
        inner.pods.insert(pod.uid.clone(), pod.clone());
        inner.reaccount(&pod.uid);
        self.changed();
    }

    /// Removes a pod (deleted or finished), releasing what it held.
    pub fn remove_pod(&self, uid: &str) {
        let mut inner = self.lock();
        inner.pending.remove(uid);
        inner.assumed.remove(uid);
        if inner.pods.remove(uid).is_some() {
            inner.reaccount(uid);
            self.changed();
        }
    }

    /// Keeps only these pods (after a watch restart lists them all again).
    pub fn retain_pods(&self, uids: &std::collections::BTreeSet<String>) {
        let mut inner = self.lock();
        let gone: Vec<String> = inner.pods.keys().filter(|u| !uids.contains(*u)).cloned().collect();
        for uid in &gone {
            inner.pods.remove(uid);
            inner.assumed.remove(uid);
            inner.reaccount(uid);
        }
        if !gone.is_empty() {
            self.changed();
        }
    }

    /// Remembers a pod's request from a filter call (pods not yet seen through the API). Bounded. `counts` says
    /// whether the record changes what readers see (a gang member is counted in its gang at once).
    pub fn remember(&self, pod: PodRecord, counts: bool) {
        if pod.uid.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.pods.contains_key(&pod.uid) || inner.pending.contains_key(&pod.uid) {
            return;
        }
        if counts {
            self.changed();
        }
        inner.pending_seq += 1;
        let seq = inner.pending_seq;
        inner.pending_order.push_back((seq, pod.uid.clone()));
        inner.pending.insert(pod.uid.clone(), (seq, pod));
        while inner.pending.len() > MAX_PENDING || inner.pending_order.len() > 2 * MAX_PENDING {
            let Some((s, uid)) = inner.pending_order.pop_front() else { break };
            if inner.pending.get(&uid).is_some_and(|(seq, _)| *seq == s) {
                inner.pending.remove(&uid);
            }
        }
    }

    /// What the pods with these UIDs hold, where Sovra accounted them.
    pub fn accounted<'a>(&self, uids: impl IntoIterator<Item = &'a str>) -> Vec<Decision> {
        let inner = self.lock();
        uids.into_iter().filter_map(|u| inner.accounted.get(u).cloned()).collect()
    }

    /// How many pods are accounted on nodes.
    pub fn accounted_pods(&self) -> usize {
        self.lock().accounted.len()
    }

    /// What the cache knows of a pod: from the API, or remembered from a filter call.
    pub fn record(&self, uid: &str) -> Option<PodRecord> {
        if uid.is_empty() {
            return None;
        }
        let inner = self.lock();
        inner.pods.get(uid).cloned().or_else(|| inner.pending.get(uid).map(|(_, p)| p.clone()))
    }

    /// Records that this extender bound a pod (accounted at once; the watch confirms it later). Returns false when
    /// the pod's request is unknown (it is then accounted when the watch reports it).
    pub fn assume_bound(&self, uid: &str, key: &str, node: &str) -> bool {
        self.assume_bound_on(uid, key, node, None)
    }

    /// [`Cache::assume_bound`] on the devices chosen at bind (`None`: the placement core's choice).
    pub fn assume_bound_on(&self, uid: &str, key: &str, node: &str, devices: Option<crate::assign::Assigned>) -> bool {
        let mut inner = self.lock();
        let record = match inner.pods.get(uid).cloned().or_else(|| inner.pending.remove(uid).map(|(_, p)| p)) {
            Some(p) => p,
            None => return false,
        };
        let devices = devices.or(record.devices.clone());
        inner.assumed.insert(uid.to_string(), (node.to_string(), devices.clone()));
        let record = PodRecord { node: Some(node.to_string()), key: key.to_string(), devices, ..record };
        inner.pods.insert(uid.to_string(), record);
        inner.reaccount(uid);
        self.changed();
        true
    }
}

impl Inner {
    /// The pool a Kubernetes node belongs to, or why it has none.
    fn kube_pool(&self, k: &KubeNode) -> Result<String, String> {
        let pool = k.labels.get(POOL_LABEL).map(|p| p.trim()).filter(|p| !p.is_empty()).ok_or_else(|| {
            format!(
                "node {} is not in the Sovra cluster config and has no {POOL_LABEL} label, so its zone is unknown; \
                 add it to the config or label it with a pool",
                k.name
            )
        })?;
        let known = self.config.pools.iter().find(|p| p.id == pool).ok_or_else(|| {
            format!(
                "node {}: pool {pool:?} (label {POOL_LABEL}) is not in the Sovra cluster config, so its zone is \
                 unknown",
                k.name
            )
        })?;
        if !self.config.zones.iter().any(|z| z.id == known.zone) {
            return Err(format!("node {}: zone {} of pool {pool} is not declared", k.name, known.zone));
        }
        Ok(pool.to_string())
    }

    /// Rebuilds the state from the config and the API's nodes, then accounts every bound pod again.
    fn rebuild(&mut self) {
        let mut cfg = self.config.clone();
        let mut not_offered = BTreeMap::new();
        let configured: std::collections::BTreeSet<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
        for k in self.kube_nodes.values() {
            if configured.contains(&k.name) {
                continue;
            }
            match self.kube_pool(k) {
                Ok(pool) => cfg.nodes.push(node_from_kube(k, &pool)),
                Err(why) => {
                    not_offered.insert(k.name.clone(), Arc::from(why));
                }
            }
        }
        let state = match ClusterState::from_config(&cfg) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot rebuild the node cache; keeping the previous one");
                return;
            }
        };
        self.index = name_index(&state);
        self.state = state;
        for k in self.kube_nodes.values() {
            if let Some(i) = self.state.topology().node_index(&k.name) {
                self.state.set_node_ready(i, k.ready);
            }
        }
        self.not_offered = not_offered;
        self.accounted.clear();
        // Pods with recorded devices first, so that a pod accounted by the core's choice never takes them.
        let mut uids: Vec<(bool, String)> = self.pods.iter().map(|(u, p)| (p.devices.is_none(), u.clone())).collect();
        uids.sort();
        for (_, uid) in uids {
            self.reaccount(&uid);
        }
    }

    /// Releases what a pod held and accounts it again from its current record.
    fn reaccount(&mut self, uid: &str) {
        if self.rebuild {
            return; // the rebuild accounts every pod
        }
        if let Some(old) = self.accounted.remove(uid) {
            self.state.release(&old);
        }
        let Some(p) = self.pods.get(uid) else { return };
        let (Some(node), Ok(req)) = (&p.node, &p.request) else { return };
        let Some(idx) = self.state.topology().node_index(node) else { return };
        let topo = self.state.topology().clone();
        let job = crate::mig::job_for(req, &topo);
        let recorded = p.devices.as_ref().map(|a| {
            crate::assign::account_recorded(&mut self.state, idx, &p.key, &job, a).inspect_err(
                |why| tracing::warn!(pod = %p.key, %node, %why, "recorded devices not used; accounting as Sovra would"),
            )
        });
        match recorded.unwrap_or(Err(String::new())).or_else(|_| account(&mut self.state, idx, &p.key, &job)) {
            Ok(d) => {
                self.accounted.insert(uid.to_string(), d);
            }
            Err(why) => tracing::warn!(pod = %p.key, %node, %why, "pod bound outside Sovra's accounting"),
        }
    }

    fn publish(&mut self) -> Snapshot {
        if self.rebuild {
            self.rebuild = false;
            self.rebuild();
        }
        let mut gangs: BTreeMap<String, GangCount> = BTreeMap::new();
        for p in self.pods.values().chain(self.pending.values().map(|(_, p)| p)) {
            if let Ok(PodRequest { gang: Some(g), .. }) = &p.request {
                let c = gangs.entry(g.key.clone()).or_default();
                c.members += 1;
                c.bound += u32::from(p.node.is_some());
            }
        }
        Snapshot { state: self.state.clone(), not_offered: self.not_offered.clone(), gangs, index: self.index.clone() }
    }
}

/// A domain node for an API Node that is not in the config: GPUs from allocatable `nvidia.com/gpu` (or the
/// `nvidia.com/gpu.count` label), model from `nvidia.com/gpu.product` without its `NVIDIA-` prefix (the names the
/// node daemon and cluster files use), memory from `nvidia.com/gpu.memory`, NVLink islands from the
/// `sovra.io/gpu-nvlink-islands` annotation.
pub fn node_from_kube(k: &KubeNode, pool: &str) -> Node {
    // The count label counts GPUs in MIG mode too: only a node advertising no MIG slices falls back on it.
    let count = if k.gpus > 0 || !k.mig.is_empty() {
        k.gpus
    } else {
        k.labels.get(COUNT_LABEL).and_then(|c| c.parse().ok()).unwrap_or(0)
    }
    .min(64);
    let model = k
        .labels
        .get(PRODUCT_LABEL)
        .map(|p| p.trim_start_matches("NVIDIA-").to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let memory_mib = k.labels.get(MEMORY_LABEL).and_then(|m| m.parse().ok()).unwrap_or(0);
    let islands: Vec<Vec<u32>> =
        k.annotations.get(ISLANDS_ANNOTATION).and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
    let mig = crate::mig::mig_gpus(k, &model, 64 - count as usize);
    Node {
        name: k.name.clone(),
        pool: pool.to_string(),
        cpu_milli: k.cpu_milli,
        memory_mib: k.memory_mib,
        gpus: (0..count)
            .map(|i| Gpu {
                uuid: format!("{}/{GPU_RESOURCE}/{i}", k.name),
                model: model.clone(),
                memory_mib,
                numa_node: None,
                nvlink_peers: islands
                    .iter()
                    .find(|isl| isl.contains(&i))
                    .map(|isl| isl.iter().copied().filter(|&p| p != i && p < count).collect())
                    .unwrap_or_default(),
                health: Health::Healthy,
                mig: vec![],
            })
            .chain(mig)
            .collect(),
    }
}

/// Accounts a pod bound to `node` on the devices the placement core gives it there (the scheduler service's
/// choice: for whole GPUs with an NVLink wish the best-fitting island, else the lowest-index fully free devices; a
/// share on the device with the least free milli that holds it), CPU and memory. If the core would not put it
/// there (it was bound by something else), whole GPUs go on the lowest-index fully free devices, and if the node
/// cannot hold it, CPU and memory are left out, then the GPUs: what cannot be accounted is logged.
pub fn account(state: &mut ClusterState, node: NodeIdx, key: &str, job: &Job) -> Result<Decision, String> {
    let one = Job { replicas: 1, ..job.clone() };
    if let Ok(mut d) = Placer::new(PolicySpec::default(), DEFAULT_SEED).place_on(state, &one, node) {
        d.job = key.to_string();
        if state.apply(&d).is_ok() {
            return Ok(d);
        }
    }
    let r = &job.resources;
    let topo = state.topology().clone();
    let range = topo.device_range(node);
    let start = range.start;
    let devices: Vec<DeviceAssignment> = if r.gpus == 0 {
        vec![]
    } else if r.is_sharing() {
        let milli = r.gpu_milli as u16;
        range
            .clone()
            .filter(|&d| state.device_free(d) >= milli)
            .min_by_key(|&d| (state.device_free(d), d))
            .map(|d| vec![DeviceAssignment { device: (d - start) as u16, milli }])
            .unwrap_or_default()
    } else {
        let free: Vec<usize> =
            range.clone().filter(|&d| u32::from(state.device_free(d)) == GPU_MILLI).take(r.gpus as usize).collect();
        if free.len() == r.gpus as usize {
            free.into_iter().map(|d| DeviceAssignment { device: (d - start) as u16, milli: GPU_MILLI as u16 }).collect()
        } else {
            vec![]
        }
    };
    let info = &topo.nodes[node as usize];
    let pool = &topo.pools[info.pool as usize];
    let mut decision = Decision {
        job: key.to_string(),
        replicas: vec![ReplicaPlacement {
            replica: 0,
            node,
            node_name: info.name.clone(),
            pool: pool.id.clone(),
            zone: topo.zones[pool.zone].id.clone(),
            devices,
            cpu_milli: r.cpu_milli,
            memory_mib: r.memory_mib,
            scores: Default::default(),
            feasible_nodes: 0,
        }],
    };
    let gpus_found = r.gpus == 0 || !decision.replicas[0].devices.is_empty();
    if gpus_found && state.apply(&decision).is_ok() {
        return Ok(decision);
    }
    decision.replicas[0].cpu_milli = 0;
    decision.replicas[0].memory_mib = 0;
    if gpus_found && state.apply(&decision).is_ok() {
        tracing::warn!(pod = %key, node = %info.name, "CPU or memory over the node's allocatable; GPUs accounted");
        return Ok(decision);
    }
    Err(format!("{key}: node {} has no room left for its {} GPU(s) in Sovra's accounting", info.name, r.gpus))
}

mod gangs;

#[cfg(test)]
mod tests;
