//! Building what readers see: after each group commit the writer patches the previous [`Snapshot`] with what the
//! round changed — the jobs it touched, the nodes whose state epoch moved — and swaps it in.

use super::apply::Changes;
use super::jobs::info;
use super::snapshot::{NodeView, Snapshot};
use super::writer::Writer;
use sovra_api::v1::{NodeInfo, PoolInfo, QueueInfo};
use sovra_domain::Health;
use std::sync::Arc;

/// Node views by name, pools, and per pool GPU milli free, used and unavailable.
type Views = (imbl::OrdMap<String, Arc<NodeView>>, Vec<PoolInfo>, Vec<[u64; 3]>);

impl Writer {
    /// What the daemons reported of a job's replicas, in replica order.
    fn runs_of(&self, id: sovra_engine::JobId) -> Vec<sovra_api::v1::ReplicaStatus> {
        self.runs.get(&id).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// The view of node `i` of the engine's topology.
    fn node_view(&self, i: usize) -> NodeView {
        let state = self.engine.state();
        let topo = state.topology();
        let n = &topo.nodes[i];
        let pool = &topo.pools[n.pool as usize];
        let ready = state.node_ready(i as u32);
        let (mut used, mut free, mut unavailable) = (0u64, 0u64, 0u64);
        for d in topo.device_range(i as u32) {
            let u = u64::from(state.device_used(d));
            used += u;
            if ready && state.device_healthy(d) {
                free += 1000 - u;
            } else {
                unavailable += 1000 - u;
            }
        }
        let reported = self.reported.get(&n.name);
        let unhealthy = self
            .position(&n.name)
            .and_then(|p| self.cluster.nodes.get(p))
            .map(|c| {
                c.gpus
                    .iter()
                    .enumerate()
                    .filter_map(|(g, gpu)| match &gpu.health {
                        Health::Unhealthy { reason } => Some(format!("{g}: {reason}")),
                        Health::Healthy => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        NodeView {
            info: NodeInfo {
                name: n.name.clone(),
                pool: pool.id.clone(),
                zone: topo.zones[pool.zone].id.clone(),
                ready,
                gpus: u32::from(n.dev_count),
                healthy_gpus: u32::from(state.summary(i as u32).healthy),
                used_milli: used,
                backend: reported.map_or_else(|| "config".into(), |r| r.backend.clone()),
                connected: false,
                heartbeat_age_ms: 0,
                driver_version: reported.map(|r| r.driver_version.clone()).unwrap_or_default(),
                gpu_error: reported.map(|r| r.gpu_error.clone()).unwrap_or_default(),
                unhealthy,
                isolation: self.isolation.get(&n.name).cloned().unwrap_or_default(),
            },
            pool: n.pool as usize,
            free_milli: free,
            unavailable_milli: unavailable,
        }
    }

    fn queue_infos(&self) -> Vec<QueueInfo> {
        self.engine
            .queue_stats()
            .into_iter()
            .map(|q| QueueInfo {
                name: q.spec.name,
                weight: q.spec.weight,
                quota_milli: q.spec.quota_milli.into_iter().collect(),
                pending: q.pending,
                running: q.running,
                gpu_milli_held: q.gpu_milli_held,
                share: q.share,
            })
            .collect()
    }

    /// Every node's view and the pools, from scratch (at start, and when the topology changed).
    fn all_views(&mut self) -> Views {
        let topo = self.engine.state().topology().clone();
        let mut nodes = imbl::OrdMap::new();
        let mut milli = vec![[0u64; 3]; topo.pools.len()];
        self.epochs = (0..topo.nodes.len()).map(|i| self.engine.state().epoch(i as u32)).collect();
        self.generation = topo.generation();
        for i in 0..topo.nodes.len() {
            let v = self.node_view(i);
            let m = &mut milli[v.pool];
            m[0] += v.free_milli;
            m[1] += v.info.used_milli;
            m[2] += v.unavailable_milli;
            nodes.insert(v.info.name.clone(), Arc::new(v));
        }
        let pools = topo
            .pools
            .iter()
            .enumerate()
            .map(|(p, pool)| PoolInfo {
                id: pool.id.clone(),
                zone: topo.zones[pool.zone].id.clone(),
                purpose: pool.purpose.to_string(),
                nodes: topo.pool_nodes[p].len() as u32,
                capacity_milli: topo.pool_nodes[p]
                    .iter()
                    .map(|&n| u64::from(topo.nodes[n as usize].dev_count) * 1000)
                    .sum(),
                used_milli: milli[p][1],
            })
            .collect();
        (nodes, pools, milli)
    }

    /// The first snapshot, at start.
    pub(crate) fn initial_snapshot(&mut self) -> Snapshot {
        let (nodes, pools, milli) = self.all_views();
        // Revisions start at the wall clock in microseconds, so that they keep increasing across restarts (one
        // commit takes far longer than a microsecond); a watch cannot resume across a restart (`compacted`):
        // the watcher lists again.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64)
            .max(1);
        let jobs = self
            .engine
            .jobs()
            .map(|r| {
                let mut i = info(r);
                i.runs = self.runs_of(r.id);
                i.revision = start;
                (r.id, Arc::new(i))
            })
            .collect();
        Snapshot {
            revision: start,
            compacted: start,
            jobs,
            nodes,
            pools: Arc::new(pools),
            pool_milli: Arc::new(milli),
            queues: Arc::new(self.queue_infos()),
            base: Arc::new(self.base.clone()),
            stopped: None,
        }
    }

    /// Publishes what a committed round changed, and tells watchers.
    pub(crate) fn publish(&mut self, ch: &Changes) {
        let old = self.snap.load_full();
        let topo = self.engine.state().topology().clone();
        let topology_changed = topo.generation() != self.generation || topo.nodes.len() != self.epochs.len();
        let nothing = ch.jobs.is_empty() && ch.archive.is_empty() && ch.views.is_empty() && !ch.cycle;
        if nothing && !topology_changed {
            return;
        }
        let revision = old.revision + 1;
        let mut s = Snapshot::clone(&old);
        s.revision = revision;
        let mut updates = Vec::with_capacity(ch.jobs.len());
        for id in &ch.jobs {
            match self.engine.job(*id) {
                Some(r) => {
                    let mut i = info(r);
                    i.runs = self.runs_of(r.id);
                    i.revision = revision;
                    let i = Arc::new(i);
                    s.jobs.insert(*id, i.clone());
                    updates.push(i);
                }
                None => {
                    s.jobs.remove(id);
                }
            }
        }
        for id in &ch.archive {
            s.jobs.remove(id);
        }
        if !ch.archive.is_empty() {
            s.compacted = revision;
        }
        if topology_changed {
            let (nodes, pools, milli) = self.all_views();
            s.nodes = nodes;
            s.pools = Arc::new(pools);
            s.pool_milli = Arc::new(milli);
            s.base = Arc::new(self.base.clone());
        } else {
            let mut milli = Vec::clone(&old.pool_milli);
            let mut changed = false;
            for i in 0..topo.nodes.len() {
                let epoch = self.engine.state().epoch(i as u32);
                if epoch == self.epochs[i] && !ch.views.contains(&topo.nodes[i].name) {
                    continue;
                }
                self.epochs[i] = epoch;
                let v = self.node_view(i);
                if let Some(prev) = old.nodes.get(&v.info.name) {
                    let m = &mut milli[prev.pool];
                    m[0] -= prev.free_milli.min(m[0]);
                    m[1] -= prev.info.used_milli.min(m[1]);
                    m[2] -= prev.unavailable_milli.min(m[2]);
                }
                let m = &mut milli[v.pool];
                m[0] += v.free_milli;
                m[1] += v.info.used_milli;
                m[2] += v.unavailable_milli;
                s.nodes.insert(v.info.name.clone(), Arc::new(v));
                changed = true;
            }
            if changed {
                let mut pools = Vec::clone(&old.pools);
                for (p, pool) in pools.iter_mut().enumerate() {
                    pool.used_milli = milli.get(p).map_or(0, |m| m[1]);
                }
                s.pools = Arc::new(pools);
                s.pool_milli = Arc::new(milli);
            }
        }
        if ch.cycle || !ch.jobs.is_empty() || !ch.archive.is_empty() {
            s.queues = Arc::new(self.queue_infos());
        }
        self.snap.store(Arc::new(s));
        if self.watch.receiver_count() > 0 {
            for u in updates {
                let _ = self.watch.send(u);
            }
        }
    }
}
