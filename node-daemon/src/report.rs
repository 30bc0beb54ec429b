//! Reporting to the scheduler: one gRPC stream (`sovra.v1.Nodes/Report`) over mutual TLS.
//!
//! On connect the daemon registers with its full inventory; then it sends a heartbeat every interval the scheduler
//! asked for, a health change as soon as one happens, and the full inventory again when it changes. When the
//! stream breaks it reconnects with exponential backoff (from [`Reporter::backoff_initial`], doubling, capped at
//! [`Reporter::backoff_max`]) with ±50 % random jitter, so that a fleet of daemons does not reconnect in step after
//! a scheduler restart. A new registration replaces the old one on the scheduler: a restarted daemon never
//! duplicates its inventory.
//!
//! The daemon's identity is its client certificate (CN = node name). It may state the zone and pool it believes
//! it is in (`claim_zone`, `claim_pool`) as a cross-check; the scheduler refuses a registration whose claim differs
//! from its own enrolment, and never takes a zone from a daemon.

use crate::inventory::{BackendState, GpuHealth, Inventory, to_domain_node};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sovra_api::v1::nodes_client::NodesClient;
use sovra_api::v1::{
    GpuReport, HealthChange, Heartbeat, MigReport, NodeInventory, NodeReport, Register, node_report, report_reply,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A change the GPU backend saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A GPU's health changed.
    Health {
        /// GPU index.
        gpu: u32,
        /// New health.
        health: GpuHealth,
    },
    /// The inventory changed (e.g. MIG reconfigured).
    Inventory(Inventory),
    /// A replica's state changed (from the [`crate::run`] runner).
    Replica(crate::run::Status),
}

/// The reporter's side of the job runner: where assignment sets go, what it runs now, where its logs are.
#[derive(Debug, Clone)]
pub struct RunnerLink {
    /// The runner thread's inbox of assignment sets.
    pub desired: std::sync::mpsc::Sender<crate::run::Desired>,
    /// Every replica's status now (sent whole in each registration).
    pub statuses: Arc<std::sync::Mutex<Vec<crate::run::Status>>>,
    /// The runner's state directory (replica output is read from there).
    pub state_dir: std::path::PathBuf,
    /// What it enforces (`Register.isolation`).
    pub isolation: String,
}

/// Where and as whom to report.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// Scheduler address, `https://host:port`.
    pub server: String,
    /// This node's name (must be the certificate's CN).
    pub node: String,
    /// The scheduler's CA certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// This node's client certificate (PEM).
    pub cert_pem: Vec<u8>,
    /// Its private key (PEM).
    pub key_pem: Vec<u8>,
    /// Zone the daemon believes it is in (cross-check only), if any.
    pub claim_zone: Option<String>,
    /// Pool the daemon believes it is in (cross-check only), if any.
    pub claim_pool: Option<String>,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// The job runner, when this daemon runs jobs.
    pub runner: Option<RunnerLink>,
    /// The address gang peers reach this node at (`Register.address`); empty: the scheduler's view.
    pub address: String,
}

/// The `Content-Type` of [`DaemonMetrics::render`]'s text (prometheus-client writes OpenMetrics).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The daemon's own metrics (served on `--metrics-listen`).
pub struct DaemonMetrics {
    registry: Registry,
    /// GPUs in the inventory.
    pub gpus: Gauge,
    /// Healthy GPUs.
    pub gpus_healthy: Gauge,
    /// 1 while registered with the scheduler.
    pub connected: Gauge,
    /// Messages sent to the scheduler.
    pub reports: Counter,
    /// Connection attempts after the first.
    pub reconnects: Counter,
}

impl Default for DaemonMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let (gpus, gpus_healthy, connected) = (Gauge::default(), Gauge::default(), Gauge::default());
        let (reports, reconnects) = (Counter::default(), Counter::default());
        registry.register("sovra_daemon_gpus", "GPUs in the inventory", gpus.clone());
        registry.register("sovra_daemon_gpus_healthy", "Healthy GPUs", gpus_healthy.clone());
        registry.register("sovra_daemon_connected", "1 while registered with the scheduler", connected.clone());
        registry.register("sovra_daemon_reports", "Messages sent to the scheduler", reports.clone());
        registry.register("sovra_daemon_reconnects", "Connection attempts after the first", reconnects.clone());
        DaemonMetrics { registry, gpus, gpus_healthy, connected, reports, reconnects }
    }
}

impl DaemonMetrics {
    /// The metrics in the OpenMetrics text format (serve with [`METRICS_CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn observe(&self, inv: &Inventory) {
        self.gpus.set(inv.gpus.len() as i64);
        self.gpus_healthy.set(inv.gpus.iter().filter(|g| g.health == GpuHealth::Healthy).count() as i64);
    }
}

/// The inventory as the API carries it: raw facts plus the scheduler's terms (model name, NVLink peers as
/// indices, MIG profiles), computed by the same [`to_domain_node`] the tests check.
pub fn to_proto(inv: &Inventory) -> NodeInventory {
    let node = to_domain_node(inv, "", "", 0, 0);
    let (ready, reason) = match &inv.state {
        BackendState::Ready => (true, String::new()),
        BackendState::Unavailable { reason } => (false, reason.clone()),
    };
    NodeInventory {
        backend: inv.backend.clone(),
        backend_ready: ready,
        backend_reason: reason,
        driver_version: inv.driver_version.clone().unwrap_or_default(),
        cuda_driver_version: inv.cuda_driver_version.clone().unwrap_or_default(),
        gpus: inv
            .gpus
            .iter()
            .zip(&node.gpus)
            .map(|(g, d)| GpuReport {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                model: d.model.clone(),
                memory_total_mib: g.memory_total_mib,
                memory_used_mib: g.memory_used_mib,
                compute_major: g.compute_capability[0],
                compute_minor: g.compute_capability[1],
                pci_bus_id: g.pci_bus_id.clone(),
                numa_node: g.numa_node,
                nvlink_peers: d.nvlink_peers.clone(),
                mig_enabled: g.mig_enabled,
                mig: g
                    .mig_instances
                    .iter()
                    .zip(&d.mig)
                    .map(|(m, p)| MigReport {
                        uuid: m.uuid.clone(),
                        profile: p.profile.clone(),
                        memory_mib: p.memory_mib,
                    })
                    .collect(),
                healthy: g.health == GpuHealth::Healthy,
                unhealthy_reason: match &g.health {
                    GpuHealth::Unhealthy { reason } => reason.clone(),
                    GpuHealth::Healthy => String::new(),
                },
                temperature_c: g.temperature_c,
                power_mw: g.power_mw,
                utilization_pct: g.utilization_pct,
            })
            .collect(),
    }
}

/// A replica status as the API carries it.
pub fn status_proto(s: &crate::run::Status) -> sovra_api::v1::ReplicaStatus {
    sovra_api::v1::ReplicaStatus {
        job: s.key.0,
        replica: s.key.1,
        attempt: s.key.2,
        state: s.state.clone(),
        exit_code: s.exit_code,
        signal: s.signal,
        reason: s.reason.clone(),
        restarts: s.restarts,
        pid: s.pid,
        started_ms: s.started_ms,
        ended_ms: s.ended_ms,
        cpu_ms: s.cpu_ms,
        max_rss_kib: s.max_rss_kib,
        node: String::new(),
    }
}

fn apply(inv: &mut Inventory, u: &Update) -> NodeReport {
    let body = match u {
        Update::Replica(s) => node_report::Body::Replica(status_proto(s)),
        Update::Health { gpu, health } => {
            inv.set_health(*gpu, health.clone());
            node_report::Body::Health(HealthChange {
                gpu_index: *gpu,
                healthy: *health == GpuHealth::Healthy,
                reason: match health {
                    GpuHealth::Unhealthy { reason } => reason.clone(),
                    GpuHealth::Healthy => String::new(),
                },
            })
        }
        Update::Inventory(new) => {
            *inv = new.clone();
            node_report::Body::Inventory(to_proto(inv))
        }
    };
    NodeReport { body: Some(body) }
}

/// Why a session ended (the stream broke or was refused; the reporter reconnects), and whether it had got as far as
/// registering (which resets the backoff).
struct End {
    reason: String,
    registered: bool,
}

impl Reporter {
    /// Reports `inventory` and then every update until the task is dropped. Never returns an error for network
    /// trouble (it reconnects); returns one only for unusable TLS material.
    pub async fn run(
        &self,
        mut inventory: Inventory,
        mut updates: mpsc::Receiver<Update>,
        metrics: Arc<DaemonMetrics>,
    ) -> Result<(), String> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        let endpoint = Endpoint::from_shared(self.server.clone())
            .map_err(|e| format!("server: {:?} is not a valid address: {e}", self.server))?
            .tls_config(tls)
            .map_err(|e| format!("TLS settings: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        metrics.observe(&inventory);
        let mut failures: u32 = 0;
        let mut updates_open = true;
        loop {
            let End { reason, registered } =
                self.session(&endpoint, &mut inventory, &mut updates, &mut updates_open, &metrics).await;
            metrics.connected.set(0);
            failures = if registered { 1 } else { failures.saturating_add(1) };
            let delay = self.backoff(failures);
            tracing::warn!(server = %self.server, %reason, retry_in_ms = delay.as_millis() as u64, "not reporting");
            tokio::time::sleep(delay).await;
            metrics.reconnects.inc();
        }
    }

    /// The delay before reconnect attempt `n` (1-based): initial × 2^(n-1), capped, times a random factor in
    /// [0.5, 1.5).
    pub fn backoff(&self, n: u32) -> Duration {
        let base = self.backoff_initial.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(self.backoff_max);
        base.mul_f64(0.5 + fastrand::f64())
    }

    async fn session(
        &self,
        endpoint: &Endpoint,
        inv: &mut Inventory,
        updates: &mut mpsc::Receiver<Update>,
        updates_open: &mut bool,
        metrics: &DaemonMetrics,
    ) -> End {
        let retry = |reason: String| End { reason, registered: false };
        // Updates that came while disconnected go into the registration itself.
        while let Ok(u) = updates.try_recv() {
            apply(inv, &u);
        }
        metrics.observe(inv);
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return retry(format!("cannot connect: {}", self.explain(&e))),
        };
        let (tx, rx) = mpsc::channel::<NodeReport>(64);
        let register = Register {
            node: self.node.clone(),
            claimed_zone: self.claim_zone.clone().unwrap_or_default(),
            claimed_pool: self.claim_pool.clone().unwrap_or_default(),
            inventory: Some(to_proto(inv)),
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            replicas: self
                .runner
                .as_ref()
                .map(|r| r.statuses.lock().map(|s| s.iter().map(status_proto).collect()).unwrap_or_default())
                .unwrap_or_default(),
            isolation: self.runner.as_ref().map(|r| r.isolation.clone()).unwrap_or_default(),
            runs_jobs: self.runner.is_some(),
            address: self.address.clone(),
        };
        let _ = tx.send(NodeReport { body: Some(node_report::Body::Register(register)) }).await;
        metrics.reports.inc();
        let mut replies = match NodesClient::new(channel).report(tokio_stream::wrappers::ReceiverStream::new(rx)).await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return retry(self.refused(&s)),
        };
        let registered = match replies.message().await {
            Ok(Some(r)) => match r.body {
                Some(report_reply::Body::Registered(r)) => r,
                _ => return retry("the scheduler did not confirm the registration".into()),
            },
            Ok(None) => return retry("the scheduler closed the stream".into()),
            Err(s) => return retry(self.refused(&s)),
        };
        metrics.connected.set(1);
        tracing::info!(
            node = %registered.node, zone = %registered.zone, pool = %registered.pool,
            devices = registered.devices, heartbeat_ms = registered.heartbeat_interval_ms,
            backend = %inv.backend, "registered with the scheduler"
        );
        let every = Duration::from_millis(registered.heartbeat_interval_ms.max(1));
        // Heartbeat a little more often than asked, so that a delayed one still arrives in time.
        let mut tick = tokio::time::interval(every.mul_f64(0.8));
        tick.tick().await;
        let mut seq = 0u64;
        let started = Instant::now();
        let mut reads: std::collections::BTreeMap<u64, Arc<std::sync::atomic::AtomicBool>> = Default::default();
        let end = |reason: String| End { reason, registered: true };
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    seq += 1;
                    if tx.send(NodeReport { body: Some(node_report::Body::Heartbeat(Heartbeat { seq })) }).await.is_err() {
                        return end("the stream closed".into());
                    }
                    metrics.reports.inc();
                }
                u = updates.recv(), if *updates_open => match u {
                    Some(u) => {
                        let msg = apply(inv, &u);
                        metrics.observe(inv);
                        if let Update::Health { gpu, health } = &u {
                            tracing::warn!(gpu, ?health, "GPU health changed");
                        }
                        if tx.send(msg).await.is_err() {
                            return end("the stream closed".into());
                        }
                        metrics.reports.inc();
                    }
                    None => *updates_open = false,
                },
                r = replies.message() => match r {
                    Ok(Some(reply)) => self.on_reply(reply, &tx, &mut reads),
                    Ok(None) => return end(format!("the scheduler closed the stream after {:.1} s", started.elapsed().as_secs_f64())),
                    Err(s) => return end(format!("{}: {}", s.code(), s.message())),
                },
            }
        }
    }
}

impl Reporter {
    /// What the scheduler sent besides acknowledgements: an assignment set for the runner, a log read, the end of
    /// one.
    fn on_reply(
        &self,
        reply: sovra_api::v1::ReportReply,
        tx: &mpsc::Sender<NodeReport>,
        reads: &mut std::collections::BTreeMap<u64, Arc<std::sync::atomic::AtomicBool>>,
    ) {
        use std::sync::atomic::Ordering;
        match reply.body {
            Some(report_reply::Body::Assignments(a)) => match &self.runner {
                Some(r) => {
                    let _ = r.desired.send(crate::run::desired_from(&a));
                }
                None if !a.replicas.is_empty() => {
                    tracing::warn!(
                        replicas = a.replicas.len(),
                        "assigned work, but this daemon runs no jobs (no state_dir)"
                    );
                }
                None => {}
            },
            Some(report_reply::Body::LogRead(l)) => {
                reads.retain(|_, c| Arc::strong_count(c) > 1);
                let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
                reads.insert(l.request, cancel.clone());
                let tx = tx.clone();
                let dir =
                    self.runner.as_ref().and_then(|r| crate::run::logs::latest_dir(&r.state_dir, l.job, l.replica));
                tokio::task::spawn_blocking(move || {
                    let msg = |data: Vec<u8>, eof: bool, error: String| NodeReport {
                        body: Some(node_report::Body::Logs(sovra_api::v1::LogData {
                            request: l.request,
                            data,
                            eof,
                            error,
                        })),
                    };
                    let result = match dir {
                        Some(dir) => crate::run::logs::read(&dir, l.tail_lines as usize, l.follow, &cancel, |chunk| {
                            tx.blocking_send(msg(chunk, false, String::new())).is_ok()
                        }),
                        None => Err(format!("this node has no output of job {} replica {}", l.job, l.replica)),
                    };
                    let _ = tx.blocking_send(msg(Vec::new(), true, result.err().unwrap_or_default()));
                });
            }
            Some(report_reply::Body::LogCancel(id)) => {
                if let Some(c) = reads.remove(&id) {
                    c.store(true, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    /// A failed connection in words: which TLS or network problem it is ([`crate::tls_check::diagnose`]).
    fn explain(&self, e: &(dyn std::error::Error + 'static)) -> String {
        crate::tls_check::diagnose(e).explain(&self.server, "the daemon's CA file (--ca, or ca.pem in --tls-dir)")
    }

    /// A refused registration: the scheduler's own refusal (its code and message), or the TLS or network problem
    /// underneath a transport failure.
    fn refused(&self, s: &tonic::Status) -> String {
        match crate::tls_check::diagnose(s) {
            crate::tls_check::ConnectProblem::Other(chain) if std::error::Error::source(s).is_some() => {
                format!("registration failed: {}: {} ({chain})", s.code(), s.message())
            }
            crate::tls_check::ConnectProblem::Other(_) => {
                format!("registration refused: {}: {}", s.code(), s.message())
            }
            problem => format!("registration failed: {}", problem.explain(&self.server, "the daemon's CA file")),
        }
    }
}

/// Polls a GPU backend for health changes and sends them as [`Update`]s.
pub mod sources {
    use super::Update;
    use crate::fake::FakeBackend;
    use crate::health::HealthPolicy;
    use crate::inventory::Inventory;
    use crate::nvml::apply_events;
    use std::time::{Duration, Instant};
    use tokio::sync::mpsc;

    fn changes(inv: &mut Inventory, events: &[crate::XidEvent], policy: &HealthPolicy) -> Vec<Update> {
        for e in events {
            tracing::info!(gpu = e.gpu, xid = e.xid, "XID event");
        }
        apply_events(inv, events, policy)
            .into_iter()
            .filter_map(|e| inv.gpus.iter().find(|g| g.index == e.gpu).map(|g| (e.gpu, g.health.clone())))
            .map(|(gpu, health)| Update::Health { gpu, health })
            .collect()
    }

    /// The fake backend: its inventory, and a task playing its scripted events every `poll`.
    pub fn fake(mut fake: FakeBackend, policy: HealthPolicy, poll: Duration) -> (Inventory, mpsc::Receiver<Update>) {
        let mut inv = fake.inventory();
        let initial = inv.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(poll);
            loop {
                tick.tick().await;
                let events = fake.poll(started.elapsed().as_secs_f64());
                for u in changes(&mut inv, &events, &policy) {
                    if tx.send(u).await.is_err() {
                        return;
                    }
                }
            }
        });
        (initial, rx)
    }

    /// NVML: the inventory, and a thread waiting for XID events (NVML's event wait blocks) for up to `poll` at a
    /// time. Without NVML the inventory says why and no updates come.
    pub fn nvml(
        lib: Option<std::ffi::OsString>,
        policy: HealthPolicy,
        poll: Duration,
    ) -> Result<(Inventory, mpsc::Receiver<Update>), String> {
        let (tx, rx) = mpsc::channel(64);
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("nvml-events".into())
            .spawn(move || {
                let nvml = crate::nvml::open(lib.as_deref());
                if let Err(reason) = &nvml {
                    tracing::warn!(%reason, "NVML unavailable: reporting no GPUs");
                }
                let mut inv = crate::nvml::inventory(nvml.as_ref());
                let _ = first_tx.send(inv.clone());
                let mut watch = crate::nvml::watch_events(nvml.as_ref(), &inv);
                let Some(w) = watch.as_mut() else { return };
                loop {
                    let events = w.poll(poll.as_millis().min(u128::from(u32::MAX)) as u32);
                    for u in changes(&mut inv, &events, &policy) {
                        if tx.blocking_send(u).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the NVML thread: {e}"))?;
        let inv = first_rx.recv().map_err(|_| "the NVML thread stopped before reading the inventory".to_string())?;
        Ok((inv, rx))
    }
}
