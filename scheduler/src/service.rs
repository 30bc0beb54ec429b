//! The gRPC service (tonic) around the [`Engine`]: jobs (submit, get, list, cancel, watch), cluster views (nodes,
//! pools), admin (zones, residency classes, queues, reload) — authenticated with a bearer token — and the node
//! API, where daemons report over mutual TLS (see [`crate::tls`]). Every change is persisted before it is
//! acknowledged.
//!
//! **Liveness.** A node whose daemon has registered must send a heartbeat at least every heartbeat interval (the
//! scheduler tells the daemon the interval when it registers). The liveness check runs every quarter interval and
//! marks a node NotReady once 1.5 intervals have passed without a heartbeat, so its GPUs leave the free pool at
//! most 1.75 intervals after the last heartbeat — within 2 intervals. Jobs on a NotReady node are *lost* and
//! requeued. A daemon that restarts within the deadline loses nothing. Nodes no daemon ever reported for are
//! taken from the cluster file as they are (ready), unless the scheduler runs with `--require-daemons`, where
//! they are NotReady until their daemon registers.

use crate::metrics::Metrics;
use crate::store::{NodeRecord, Store};
use sovra_api::v1::cluster_server::Cluster;
use sovra_api::v1::nodes_server::Nodes;
use sovra_api::v1::{
    Ack, JobInfo, NodeInfo, NodeInventory, NodeReport, NodesRequest, NodesResponse, PoolInfo, PoolsRequest,
    PoolsResponse, Register, Registered, ReportReply, node_report, report_reply,
};
use sovra_domain::{ClusterConfig, Gpu, Health, MigInstance, PolicySpec};
use sovra_engine::{Engine, Event, JobId, JobRecord, QueueSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

mod admin;
mod jobs;
mod serve;

use jobs::info;
pub use serve::{serve, serve_metrics, serve_with};

/// The shortest heartbeat interval the scheduler takes (`serve --heartbeat-ms`, `sovra dev --heartbeat-ms`). Below
/// it the daemons' heartbeats and the liveness check compete with everything else on a busy machine: healthy nodes
/// flap NotReady and their jobs are re-placed over and over (at 1 ms `sovra dev`'s tour saw 277 placements for 3
/// jobs).
pub const MIN_HEARTBEAT_MS: u64 = 100;
/// The longest heartbeat interval: a dead node is noticed only after 1.5 intervals.
pub const MAX_HEARTBEAT_MS: u64 = 60_000;

/// Parses and checks a heartbeat interval in milliseconds (a clap value parser for `--heartbeat-ms`).
pub fn parse_heartbeat_ms(s: &str) -> Result<u64, String> {
    let ms: u64 = s.trim().parse().map_err(|_| format!("{s:?} is not a whole number of milliseconds"))?;
    if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&ms) {
        return Err(format!(
            "{ms} ms is out of range: use {MIN_HEARTBEAT_MS} to {MAX_HEARTBEAT_MS} ms (shorter heartbeats make \
             healthy nodes flap NotReady on a busy machine)"
        ));
    }
    Ok(ms)
}

/// How the service runs, beyond the cluster and policy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Heartbeat interval node daemons are told to keep; a node is NotReady after 1.5 intervals of silence.
    pub heartbeat: Duration,
    /// Nodes are NotReady until their daemon registers (otherwise, nodes no daemon reports for are used as the
    /// cluster file describes them).
    pub require_daemons: bool,
    /// The cluster file, for `Reload`.
    pub config_path: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options { heartbeat: Duration::from_secs(2), require_daemons: false, config_path: None }
    }
}

/// A random bearer token (128 bits from the operating system, hex), for a scheduler started without one.
pub fn random_token() -> Result<String, String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// What the scheduler knows about a node's daemon.
#[derive(Debug, Clone, Default)]
struct NodeLive {
    /// The current report stream (a newer stream replaces an older one).
    session: u64,
    /// A report stream is open.
    connected: bool,
    /// The last message (heartbeat or other), if any.
    last_seen: Option<Instant>,
}

struct Inner {
    engine: Engine,
    store: Option<Store>,
    /// The cluster file as loaded (the enrolment record: which node is in which pool).
    base: ClusterConfig,
    /// `base` with the GPUs daemons reported: what the engine runs on.
    cluster: ClusterConfig,
    /// What daemons reported, by node.
    reported: BTreeMap<String, NodeRecord>,
    /// Daemon liveness, by node (only nodes a daemon reported for, or all with `require_daemons`).
    live: BTreeMap<String, NodeLive>,
    next_session: u64,
    opts: Options,
    watch: tokio::sync::broadcast::Sender<JobInfo>,
    metrics: Arc<Metrics>,
}

/// The scheduler service; cheap to clone (shared state).
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Mutex<Inner>>,
    metrics: Arc<Metrics>,
}

/// The cluster's queues; a cluster without any (e.g. built in code) gets one `default` queue, as a cluster file
/// without a `queues:` section does.
fn queues_of(cluster: &ClusterConfig) -> Vec<QueueSpec> {
    let mut queues: Vec<QueueSpec> = cluster
        .queues
        .iter()
        .map(|q| QueueSpec { name: q.name.clone(), weight: q.weight, quota_milli: q.quota_milli.clone() })
        .collect();
    if queues.is_empty() {
        queues.push(QueueSpec::new("default"));
    }
    queues
}

/// `base` with each reported node's GPUs replaced by what its daemon reported.
fn overlay(base: &ClusterConfig, reported: &BTreeMap<String, NodeRecord>) -> ClusterConfig {
    let mut c = base.clone();
    for n in &mut c.nodes {
        if let Some(r) = reported.get(&n.name) {
            n.gpus = r.gpus.clone();
        }
    }
    c
}

impl Scheduler {
    /// A scheduler over `cluster` with default [`Options`]; with a store, the jobs it holds are restored first.
    pub fn new(
        cluster: ClusterConfig,
        policy: PolicySpec,
        seed: u64,
        store: Option<Store>,
    ) -> Result<Scheduler, String> {
        Self::with_options(cluster, policy, seed, store, Options::default())
    }

    /// A scheduler over `cluster`; with a store, the node inventories and jobs it holds are restored first (a
    /// restart): nodes a daemon had reported for get one heartbeat deadline from now to reconnect.
    pub fn with_options(
        cluster: ClusterConfig,
        policy: PolicySpec,
        seed: u64,
        store: Option<Store>,
        opts: Options,
    ) -> Result<Scheduler, String> {
        let (records, nodes) = match &store {
            Some(s) => (s.load()?, s.load_nodes()?),
            None => (vec![], vec![]),
        };
        let enrolled: std::collections::BTreeSet<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        let reported: BTreeMap<String, NodeRecord> =
            nodes.into_iter().filter(|(n, _)| enrolled.contains(n.as_str())).collect();
        let live_cluster = overlay(&cluster, &reported);
        let (mut engine, requeued) =
            Engine::restore(&live_cluster, queues_of(&cluster), policy, seed, records).map_err(|e| e.to_string())?;
        if let Some(s) = &store {
            let m = s.manifest();
            engine.continue_after(m.last_id, m.last_seq);
        }
        for id in &requeued {
            tracing::warn!(job = id, "placement no longer fits the configuration: requeued");
        }
        let now = Instant::now();
        let mut live = BTreeMap::new();
        let mut lost = Vec::new();
        for n in &cluster.nodes {
            if reported.contains_key(&n.name) {
                live.insert(n.name.clone(), NodeLive { last_seen: Some(now), ..Default::default() });
            } else if opts.require_daemons {
                live.insert(n.name.clone(), NodeLive::default());
                lost.extend(engine.node_lost(&n.name));
            }
        }
        let metrics = Arc::new(Metrics::new());
        let (watch, _) = tokio::sync::broadcast::channel(4096);
        let inner = Inner {
            engine,
            store,
            base: cluster,
            cluster: live_cluster,
            reported,
            live,
            next_session: 1,
            opts,
            watch,
            metrics: metrics.clone(),
        };
        let s = Scheduler { inner: Arc::new(Mutex::new(inner)), metrics };
        s.lock()
            .map_err(|e| e.message().to_string())?
            .cycle(requeued.into_iter().chain(lost))
            .map_err(|e| e.message().to_string())?;
        Ok(s)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, Status> {
        self.inner.lock().map_err(|_| Status::internal("scheduler state poisoned by an earlier failure"))
    }

    /// The Prometheus text exposition of the metrics (see [`crate::metrics`]).
    pub fn metrics_text(&self) -> Result<String, String> {
        let inner = self.lock().map_err(|e| e.message().to_string())?;
        Ok(self.metrics.render(inner.engine.state(), &inner.engine.queue_stats()))
    }

    /// Marks NotReady every daemon-reported node silent for 1.5 heartbeat intervals at `now`; returns their names.
    pub fn check_liveness(&self, now: Instant) -> Result<Vec<String>, Status> {
        let mut inner = self.lock()?;
        let deadline = inner.opts.heartbeat.mul_f64(1.5);
        let silent: Vec<String> = inner
            .live
            .iter()
            .filter(|(_, l)| l.last_seen.is_some_and(|t| now.saturating_duration_since(t) > deadline))
            .map(|(n, _)| n.clone())
            .filter(|n| {
                let topo = inner.engine.state().topology();
                topo.node_index(n).is_some_and(|i| inner.engine.state().node_ready(i))
            })
            .collect();
        let mut lost = Vec::new();
        for n in &silent {
            let jobs = inner.engine.node_lost(n);
            tracing::warn!(node = %n, lost_jobs = ?jobs, "no heartbeat for 1.5 intervals: node NotReady");
            inner.event(&format!("node {n} NotReady: no heartbeat; jobs lost and requeued: {jobs:?}"));
            lost.extend(jobs);
        }
        if !silent.is_empty() {
            inner.cycle(lost)?;
        }
        Ok(silent)
    }

    /// Runs the liveness check every quarter heartbeat interval, for as long as the runtime runs.
    pub fn spawn_liveness(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let period = match me.lock() {
                Ok(i) => i.opts.heartbeat / 4,
                Err(_) => return,
            };
            let mut tick = tokio::time::interval(period.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.check_liveness(Instant::now()) {
                    tracing::error!(error = %e.message(), "liveness check failed");
                }
            }
        })
    }
    /// The token check of the user-facing services.
    fn token_check(token: String) -> impl tonic::service::Interceptor + Clone {
        move |req: Request<()>| -> Result<Request<()>, Status> {
            let expected = format!("Bearer {token}");
            match req.metadata().get("authorization").and_then(|v| v.to_str().ok()) {
                Some(v) if v == expected => Ok(req),
                Some(_) => {
                    Err(Status::unauthenticated("wrong token; pass the scheduler's token with --token or SOVRA_TOKEN"))
                }
                None => {
                    Err(Status::unauthenticated("no token; pass the scheduler's token with --token or SOVRA_TOKEN"))
                }
            }
        }
    }

    /// Records a registration (or a new inventory) from `node`'s daemon, on report stream `session`.
    fn register(&self, identity: &str, reg: Register) -> Result<(u64, Registered), Status> {
        if reg.node != identity {
            return Err(Status::permission_denied(format!(
                "register.node: the client certificate is node {identity:?}'s; it cannot report for {:?}",
                reg.node
            )));
        }
        let mut inner = self.lock()?;
        let Some(node) = inner.base.nodes.iter().find(|n| n.name == identity) else {
            return Err(Status::permission_denied(format!(
                "node {identity:?} is not enrolled: add it (with its pool) to the scheduler's cluster file and reload"
            )));
        };
        let Some(pool) = inner.base.pools.iter().find(|p| p.id == node.pool).cloned() else {
            return Err(Status::internal(format!("node {identity:?}: its pool {:?} is not in the cluster", node.pool)));
        };
        for (field, claimed, actual) in
            [("claimed_zone", &reg.claimed_zone, &pool.zone), ("claimed_pool", &reg.claimed_pool, &pool.id)]
        {
            if !claimed.is_empty() && claimed != actual {
                inner.event(&format!("node {identity} refused: claimed {field} {claimed:?}, enrolled in {actual:?}"));
                return Err(Status::permission_denied(format!(
                    "register.{field}: node {identity:?} is enrolled in {actual:?}, not {claimed:?}; a node's zone and \
                     pool come from the scheduler's cluster file, never from the node"
                )));
            }
        }
        let inv = reg.inventory.unwrap_or_default();
        let touched = inner.apply_inventory(identity, &inv, "register.inventory")?;
        let session = inner.next_session;
        inner.next_session += 1;
        inner.live.insert(identity.into(), NodeLive { session, connected: true, last_seen: Some(Instant::now()) });
        inner.mark_ready(identity);
        inner.event(&format!("node {identity} registered ({}, {} GPUs)", inv.backend, inv.gpus.len()));
        tracing::info!(node = identity, backend = %inv.backend, gpus = inv.gpus.len(), "node registered");
        inner.cycle(touched)?;
        let topo = inner.engine.state().topology();
        let devices = topo.node_index(identity).map_or(0, |i| u32::from(topo.nodes[i as usize].dev_count));
        let heartbeat_interval_ms = inner.opts.heartbeat.as_millis() as u64;
        Ok((
            session,
            Registered { node: identity.into(), zone: pool.zone, pool: pool.id, heartbeat_interval_ms, devices },
        ))
    }

    /// One message after the registration.
    fn on_report(&self, identity: &str, session: u64, msg: NodeReport) -> Result<Option<ReportReply>, Status> {
        self.metrics.node_reports.inc();
        let mut inner = self.lock()?;
        match inner.live.get_mut(identity) {
            Some(l) if l.session == session => l.last_seen = Some(Instant::now()),
            _ => return Err(Status::aborted("a newer report stream of this node replaced this one")),
        }
        // Heartbeats change nothing a scheduling cycle looks at, unless the node was NotReady.
        let mut changed = inner.mark_ready(identity);
        let mut touched = Vec::new();
        let reply = match msg.body {
            Some(node_report::Body::Heartbeat(h)) => {
                Some(ReportReply { body: Some(report_reply::Body::Ack(Ack { seq: h.seq })) })
            }
            Some(node_report::Body::Health(h)) => {
                let rec = inner.reported.get_mut(identity);
                let Some(gpu) = rec.and_then(|r| r.gpus.get_mut(h.gpu_index as usize)) else {
                    return Err(Status::invalid_argument(format!(
                        "health.gpu_index: node {identity} has no GPU {}",
                        h.gpu_index
                    )));
                };
                gpu.health = if h.healthy { Health::Healthy } else { Health::Unhealthy { reason: h.reason.clone() } };
                let Some(rec) = inner.reported.get(identity).cloned() else {
                    return Err(Status::internal(format!("node {identity}: its inventory is gone")));
                };
                inner.save_node(identity, &rec)?;
                if let Some(n) = inner.cluster.nodes.iter_mut().find(|n| n.name == identity) {
                    n.gpus = rec.gpus;
                }
                inner.engine.set_gpu_health(identity, h.gpu_index, h.healthy);
                let verb = if h.healthy { "healthy again" } else { "unhealthy" };
                tracing::warn!(node = identity, gpu = h.gpu_index, reason = %h.reason, "GPU {verb}");
                inner.event(&format!("node {identity} GPU {} {verb}: {}", h.gpu_index, h.reason));
                changed = true;
                None
            }
            Some(node_report::Body::Inventory(inv)) => {
                touched.extend(inner.apply_inventory(identity, &inv, "inventory")?);
                changed = true;
                None
            }
            Some(node_report::Body::Register(_)) => {
                return Err(Status::invalid_argument("register: only the first message of a stream registers"));
            }
            None => return Err(Status::invalid_argument("node report: empty message")),
        };
        if changed {
            inner.cycle(touched)?;
        }
        Ok(reply)
    }

    /// A report stream ended.
    fn disconnected(&self, identity: &str, session: u64) {
        if let Ok(mut inner) = self.lock()
            && let Some(l) = inner.live.get_mut(identity)
            && l.session == session
        {
            l.connected = false;
            inner.event(&format!("node {identity}: report stream closed"));
            tracing::info!(node = identity, "report stream closed; NotReady unless it reconnects within the deadline");
        }
    }
}

/// Converts a reported inventory into the domain's GPUs, naming the field of the first problem.
fn gpus_of(inv: &NodeInventory, field: &str) -> Result<Vec<Gpu>, String> {
    if !inv.backend_ready {
        return Ok(vec![]);
    }
    if inv.gpus.len() as u64 > sovra_domain::config::MAX_GPUS_PER_NODE {
        return Err(format!(
            "{field}.gpus: {} GPUs; at most {} per node",
            inv.gpus.len(),
            sovra_domain::config::MAX_GPUS_PER_NODE
        ));
    }
    let mut gpus = Vec::with_capacity(inv.gpus.len());
    for (i, g) in inv.gpus.iter().enumerate() {
        let f = format!("{field}.gpus[{i}]");
        if g.index as usize != i {
            return Err(format!("{f}.index: {} where {i} was expected (GPUs are reported in index order)", g.index));
        }
        if g.model.trim().is_empty() {
            return Err(format!("{f}.model: empty"));
        }
        if g.mig.len() as u64 > sovra_domain::config::MAX_MIG_PER_GPU {
            return Err(format!(
                "{f}.mig: {} instances; a GPU has at most {}",
                g.mig.len(),
                sovra_domain::config::MAX_MIG_PER_GPU
            ));
        }
        if let Some(p) = g.nvlink_peers.iter().find(|&&p| p as usize >= inv.gpus.len() || p as usize == i) {
            return Err(format!("{f}.nvlink_peers: {p} is not another GPU of this node"));
        }
        gpus.push(Gpu {
            uuid: g.uuid.clone(),
            model: g.model.clone(),
            memory_mib: g.memory_total_mib,
            numa_node: g.numa_node,
            nvlink_peers: g.nvlink_peers.clone(),
            health: if g.healthy { Health::Healthy } else { Health::Unhealthy { reason: g.unhealthy_reason.clone() } },
            mig: g.mig.iter().map(|m| MigInstance { profile: m.profile.clone(), memory_mib: m.memory_mib }).collect(),
        });
    }
    Ok(gpus)
}

/// Whether two GPU lists describe the same devices (health and UUIDs aside).
fn same_devices(a: &[Gpu], b: &[Gpu]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (&x.model, x.memory_mib, x.numa_node, &x.nvlink_peers, &x.mig)
                == (&y.model, y.memory_mib, y.numa_node, &y.nvlink_peers, &y.mig)
        })
}

fn touched(events: &[Event]) -> Vec<JobId> {
    events
        .iter()
        .map(|e| match e {
            Event::Placed { job } | Event::Preempted { job, .. } | Event::Reserved { job, .. } => *job,
        })
        .collect()
}

impl Inner {
    /// Persists the records of `ids` (all at once, flushed) and tells watchers.
    fn persist(&self, ids: impl IntoIterator<Item = JobId>) -> Result<(), Status> {
        let mut ids: Vec<JobId> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let recs: Vec<&JobRecord> = ids.iter().filter_map(|id| self.engine.job(*id)).collect();
        if let Some(store) = &self.store {
            store.save(recs.iter().copied()).map_err(Status::unavailable)?;
        }
        if self.watch.receiver_count() > 0 {
            for r in recs {
                let _ = self.watch.send(info(r));
            }
        }
        Ok(())
    }

    /// Runs a scheduling cycle (timed, counted) and persists what it touched together with `ids`.
    fn cycle(&mut self, ids: impl IntoIterator<Item = JobId>) -> Result<(), Status> {
        let started = Instant::now();
        let events = self.engine.schedule();
        self.metrics.decision_seconds.observe(started.elapsed().as_secs_f64());
        for e in &events {
            match e {
                Event::Placed { .. } => self.metrics.placements.inc(),
                Event::Preempted { .. } => self.metrics.preemptions.inc(),
                Event::Reserved { .. } => 0,
            };
        }
        self.persist(ids.into_iter().chain(touched(&events)))
    }

    /// Appends to the event log (when there is a store).
    fn event(&self, line: &str) {
        if let Some(s) = &self.store
            && let Err(e) = s.event(line)
        {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }

    fn save_node(&self, name: &str, rec: &NodeRecord) -> Result<(), Status> {
        match &self.store {
            Some(s) => s.save_node(name, rec).map_err(Status::unavailable),
            None => Ok(()),
        }
    }

    /// A NotReady node that reports is ready again; true when it was not ready.
    fn mark_ready(&mut self, node: &str) -> bool {
        let topo = self.engine.state().topology();
        match topo.node_index(node) {
            Some(i) if !self.engine.state().node_ready(i) => {
                self.engine.node_ready(node);
                self.event(&format!("node {node} ready"));
                tracing::info!(node, "node ready");
                true
            }
            _ => false,
        }
    }

    /// Takes a node's reported inventory: same devices → only health changes; different devices → the topology is
    /// rebuilt (jobs whose placement no longer fits are requeued and returned).
    fn apply_inventory(&mut self, node: &str, inv: &NodeInventory, field: &str) -> Result<Vec<JobId>, Status> {
        let gpus = gpus_of(inv, field).map_err(Status::invalid_argument)?;
        if !inv.backend_ready {
            tracing::warn!(node, reason = %inv.backend_reason, "the node's daemon cannot read its GPUs: none offered");
        }
        let gpu_error = if inv.backend_ready { String::new() } else { inv.backend_reason.clone() };
        let rec =
            NodeRecord { backend: inv.backend.clone(), driver_version: inv.driver_version.clone(), gpus, gpu_error };
        self.save_node(node, &rec)?;
        let current = self.cluster.nodes.iter().find(|n| n.name == node).map(|n| n.gpus.clone()).unwrap_or_default();
        self.reported.insert(node.into(), rec.clone());
        if same_devices(&current, &rec.gpus) {
            for (i, g) in rec.gpus.iter().enumerate() {
                self.engine.set_gpu_health(node, i as u32, g.health.is_healthy());
            }
            if let Some(n) = self.cluster.nodes.iter_mut().find(|n| n.name == node) {
                n.gpus = rec.gpus;
            }
            return Ok(vec![]);
        }
        let cluster = overlay(&self.base, &self.reported);
        let requeued = self
            .engine
            .rebuild(&cluster, queues_of(&self.base))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.cluster = cluster;
        if !requeued.is_empty() {
            tracing::warn!(node, jobs = ?requeued, "the node's GPUs changed: jobs requeued");
        }
        Ok(requeued)
    }
}

/// A server stream of replies.
pub(crate) type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Cluster for Scheduler {
    async fn nodes(&self, _req: Request<NodesRequest>) -> Result<Response<NodesResponse>, Status> {
        let inner = self.lock()?;
        let now = Instant::now();
        let state = inner.engine.state();
        let topo = state.topology();
        let nodes = topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let pool = &topo.pools[n.pool as usize];
                let range = topo.device_range(i as u32);
                NodeInfo {
                    name: n.name.clone(),
                    pool: pool.id.clone(),
                    zone: topo.zones[pool.zone].id.clone(),
                    ready: state.node_ready(i as u32),
                    gpus: u32::from(n.dev_count),
                    healthy_gpus: u32::from(state.summary(i as u32).healthy),
                    used_milli: range.clone().map(|d| u64::from(state.device_used(d))).sum(),
                    backend: inner.reported.get(&n.name).map_or_else(|| "config".into(), |r| r.backend.clone()),
                    connected: inner.live.get(&n.name).is_some_and(|l| l.connected),
                    heartbeat_age_ms: inner
                        .live
                        .get(&n.name)
                        .and_then(|l| l.last_seen)
                        .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
                    driver_version: inner.reported.get(&n.name).map(|r| r.driver_version.clone()).unwrap_or_default(),
                    gpu_error: inner.reported.get(&n.name).map(|r| r.gpu_error.clone()).unwrap_or_default(),
                    unhealthy: inner
                        .cluster
                        .nodes
                        .get(i)
                        .filter(|c| c.name == n.name)
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
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(NodesResponse { nodes }))
    }

    async fn pools(&self, _req: Request<PoolsRequest>) -> Result<Response<PoolsResponse>, Status> {
        let inner = self.lock()?;
        let state = inner.engine.state();
        let topo = state.topology();
        let pools = topo
            .pools
            .iter()
            .enumerate()
            .map(|(p, pool)| {
                let nodes = &topo.pool_nodes[p];
                let devices = nodes.iter().flat_map(|&n| topo.device_range(n));
                PoolInfo {
                    id: pool.id.clone(),
                    zone: topo.zones[pool.zone].id.clone(),
                    purpose: pool.purpose.to_string(),
                    nodes: nodes.len() as u32,
                    capacity_milli: nodes.iter().map(|&n| u64::from(topo.nodes[n as usize].dev_count) * 1000).sum(),
                    used_milli: devices.map(|d| u64::from(state.device_used(d))).sum(),
                }
            })
            .collect();
        Ok(Response::new(PoolsResponse { pools }))
    }
}

#[tonic::async_trait]
impl Nodes for Scheduler {
    type ReportStream = ReplyStream<ReportReply>;

    async fn report(&self, req: Request<Streaming<NodeReport>>) -> Result<Response<Self::ReportStream>, Status> {
        let certs = req.peer_certs();
        let Some(identity) = crate::tls::peer_node(certs.as_deref().map(|v| v.as_slice())) else {
            return Err(Status::unauthenticated(
                "node reports need a client certificate issued by the scheduler's CA (mutual TLS): start the \
                 daemon with --tls-dir (or --ca, --cert, --key), and the scheduler with --tls-dir",
            ));
        };
        let mut stream = req.into_inner();
        let first =
            stream.message().await?.ok_or_else(|| Status::invalid_argument("register: the stream was empty"))?;
        let Some(node_report::Body::Register(reg)) = first.body else {
            return Err(Status::invalid_argument("register: the first message of a report stream must register"));
        };
        self.metrics.node_reports.inc();
        let (session, registered) = self.register(&identity, reg)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let _ = tx.send(Ok(ReportReply { body: Some(report_reply::Body::Registered(registered)) })).await;
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = stream.message().await {
                match me.on_report(&identity, session, msg) {
                    Ok(Some(reply)) => {
                        if tx.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
            me.disconnected(&identity, session);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
