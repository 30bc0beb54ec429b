//! The gRPC service (tonic) around the [`Engine`]: jobs (submit, get, list, cancel, watch), cluster views (nodes,
//! pools), admin (zones, residency classes, queues, reload) — authenticated with a bearer token — and the node
//! API, where daemons report over mutual TLS (see [`crate::tls`]).
//!
//! **One writer, many readers.** A single thread owns the engine ([`writer`]): every change (submit, cancel,
//! state reports, registrations, inventories, the liveness check, reload) is a message on its bounded channel, and
//! it runs them in group commits — many changes per scheduling cycle, per write and per fsync, each request
//! answered only once the batch holding it is durable. Reads (get, list, watch, nodes, pools, queues, metrics) come
//! from an immutable snapshot published after each commit and never wait on a cycle or the disk. Heartbeats do
//! not go through the writer either: they update the node's liveness cell directly. When the channel is full the
//! request is refused with RESOURCE_EXHAUSTED (retry later) instead of queueing without bound.
//!
//! **Liveness.** A node whose daemon has registered must send a heartbeat at least every heartbeat interval (the
//! scheduler tells the daemon the interval when it registers). The liveness check runs every quarter interval and
//! marks a node NotReady once 1.5 intervals have passed without a heartbeat, so its GPUs leave the free pool at
//! most 1.75 intervals after the last heartbeat — within 2 intervals. Jobs on a NotReady node are *lost* and
//! requeued. A daemon that restarts within the deadline loses nothing. Nodes no daemon ever reported for are
//! taken from the cluster file as they are (ready), unless the scheduler runs with `--require-daemons`, where
//! they are NotReady until their daemon registers.
//!
//! **Retention.** With [`Options::retain_finished`], finished jobs (succeeded, failed, cancelled, refused) leave
//! the hot state that long after they finished and are archived in the store; `Get` still finds them there.

use crate::metrics::Metrics;
use crate::store::{MemoryStore, NodeRecord, Store};
use arc_swap::ArcSwap;
use snapshot::{Clock, LiveMap, Snapshot};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_engine::Engine;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio_stream::Stream;
use tonic::Status;
use writer::{Envelope, Msg, ReplyTx, Req, Writer};

mod admin;
mod apply;
mod assign;
mod cluster;
mod dispatch;
pub mod exceptions;
mod inventory;
mod jobs;
pub mod models;
pub mod receipts;
mod serve;
mod snapshot;
mod views;
mod writer;

pub use serve::{serve, serve_metrics, serve_with};

/// The shortest heartbeat interval the scheduler takes (`serve --heartbeat-ms`, `sovra dev --heartbeat-ms`). Below
/// it the daemons' heartbeats and the liveness check compete with everything else on a busy machine: healthy nodes
/// flap NotReady and their jobs are re-placed over and over (at 1 ms `sovra dev`'s tour saw 277 placements for 3
/// jobs).
pub const MIN_HEARTBEAT_MS: u64 = 100;
/// The longest heartbeat interval: a dead node is noticed only after 1.5 intervals.
pub const MAX_HEARTBEAT_MS: u64 = 60_000;
/// Requests that may wait for the writer; beyond, requests are refused with RESOURCE_EXHAUSTED.
pub const QUEUE_DEPTH: usize = 65_536;

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

/// Parses a retention period (`--retain-finished`): a whole number and a unit, `s`, `m`, `h` or `d`; at least one
/// second, at most 3,650 days.
pub fn parse_retention(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: give a whole number and a unit, e.g. 90s, 30m, 24h, 7d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d (e.g. 24h)")),
    };
    match secs {
        Some(x) if (1..=3650 * 86_400).contains(&x) => Ok(Duration::from_secs(x)),
        _ => Err(format!("{s:?}: use 1s to 3650d")),
    }
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
    /// How long finished jobs stay in the hot state before they are archived; `None`: forever.
    pub retain_finished: Option<Duration>,
    /// The key placement receipts are signed with (docs/receipts.md); `None`: a key generated at start, which
    /// no promotion service trusts until it is configured (`serve` writes one under `--data`).
    pub receipt_key: Option<Arc<sovra_oms::keys::SigningKey>>,
    /// The promotion service that says where models are available (jobs with `model:`); `None`: model-bound
    /// jobs wait (fail closed).
    pub models: Option<models::ModelSource>,
    /// Who may grant placement exceptions (`--break-glass`); `None`: every exception is refused.
    pub break_glass: Option<Arc<exceptions::BreakGlass>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat: Duration::from_secs(2),
            require_daemons: false,
            config_path: None,
            retain_finished: None,
            receipt_key: None,
            models: None,
            break_glass: None,
        }
    }
}

/// A new P-256 receipt key (for a scheduler started without one).
pub fn generate_receipt_key() -> Result<Arc<sovra_oms::keys::SigningKey>, String> {
    let (private, _) = sovra_oms::keys::generate_p256().map_err(|e| format!("generating a receipt key: {e}"))?;
    sovra_oms::keys::SigningKey::from_pem(&private).map(Arc::new).map_err(|e| format!("the receipt key: {e}"))
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

/// Ends the writer thread when the last handle goes: it finishes its round, then the store is closed.
struct WriterThread {
    tx: SyncSender<Msg>,
    handle: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Ok(mut h) = self.handle.lock()
            && let Some(h) = h.take()
        {
            let _ = h.join();
        }
    }
}

/// The scheduler service; cheap to clone (a handle on the writer and the published snapshot).
#[derive(Clone)]
pub struct Scheduler {
    tx: SyncSender<Msg>,
    snap: Arc<ArcSwap<Snapshot>>,
    live: Arc<ArcSwap<LiveMap>>,
    watch: tokio::sync::broadcast::Sender<Arc<sovra_api::v1::JobInfo>>,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    clock: Clock,
    dispatch: Arc<dispatch::Dispatch>,
    receipt_key: Arc<sovra_oms::keys::SigningKey>,
    _writer: Arc<WriterThread>,
}

/// The cluster's queues (the engine's rule: its `queues:`, or one `default` queue).
pub(crate) use sovra_engine::queues_of;

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
    /// A scheduler over `cluster` with default [`Options`]; with a store, the jobs it holds are restored first
    /// (without one, state lives in a [`MemoryStore`] and ends with the process).
    pub fn new(
        cluster: ClusterConfig,
        policy: PolicySpec,
        seed: u64,
        store: Option<Box<dyn Store>>,
    ) -> Result<Scheduler, String> {
        Self::with_options(cluster, policy, seed, store, Options::default())
    }

    /// A scheduler over `cluster`; with a store, the node inventories and jobs it holds are restored first (a
    /// restart): nodes a daemon had reported for get one heartbeat deadline from now to reconnect.
    pub fn with_options(
        cluster: ClusterConfig,
        policy: PolicySpec,
        seed: u64,
        store: Option<Box<dyn Store>>,
        opts: Options,
    ) -> Result<Scheduler, String> {
        let store: Arc<dyn Store> = match store {
            Some(s) => Arc::from(s),
            None => Arc::new(MemoryStore::new()),
        };
        let records = store.load().map_err(|e| e.to_string())?;
        let nodes = store.load_nodes().map_err(|e| e.to_string())?;
        let enrolled: BTreeSet<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        let reported: BTreeMap<String, NodeRecord> =
            nodes.into_iter().filter(|(n, _)| enrolled.contains(n.as_str())).collect();
        let live_cluster = overlay(&cluster, &reported);
        let (mut engine, requeued) = Engine::restore(&live_cluster, queues_of(&cluster), policy.clone(), seed, records)
            .map_err(|e| e.to_string())?;
        let m = store.manifest();
        engine.continue_after(m.last_id, m.last_seq);
        for id in &requeued {
            tracing::warn!(job = id, "placement no longer fits the configuration: requeued");
        }
        let clock = Clock::new();
        let now = Instant::now();
        let mut live = LiveMap::new();
        let mut silent = Vec::new();
        for n in &cluster.nodes {
            if reported.contains_key(&n.name) {
                let cell = snapshot::LiveCell::default();
                cell.seen(&clock, now);
                live.insert(n.name.clone(), Arc::new(cell));
            } else if opts.require_daemons {
                live.insert(n.name.clone(), Arc::new(snapshot::LiveCell::default()));
                silent.push(n.name.as_str());
            }
        }
        let lost = engine.nodes_lost(silent);
        let receipt_key = match opts.receipt_key.clone() {
            Some(k) => k,
            None => {
                let k = generate_receipt_key()?;
                tracing::warn!(key = %k.public_key().hint(), "no receipt key configured: receipts are signed with a \
                    key generated for this process, which no promotion service trusts");
                k
            }
        };
        engine.set_models(models::unavailable(match &opts.models {
            Some(m) => format!("the promotion service at {} has not answered yet", m.endpoint),
            None => "no promotion service is configured (sovra-scheduler serve --promotion-server)".into(),
        }));
        let audit_head = store.audit_head().map_err(|e| e.to_string())?;
        let receipts = receipts::Receipts::new(receipt_key.clone(), audit_head, &engine, |id| {
            receipts::started_at(store.as_ref(), id)
        });
        let now_finished: Vec<_> = engine.jobs().filter(|r| r.state.is_final()).map(|r| r.id).collect();
        let metrics = Arc::new(Metrics::new());
        let (watch, _) = tokio::sync::broadcast::channel(4096);
        let live = Arc::new(ArcSwap::from_pointee(live));
        let dispatch = Arc::new(dispatch::Dispatch::default());
        let placeholder = Arc::new(ArcSwap::from_pointee(Snapshot {
            revision: 0,
            compacted: 0,
            jobs: imbl::OrdMap::new(),
            nodes: imbl::OrdMap::new(),
            pools: Arc::default(),
            pool_milli: Arc::default(),
            queues: Arc::default(),
            base: Arc::new(cluster.clone()),
            stopped: None,
        }));
        let mut w = Writer {
            engine,
            store: store.clone(),
            positions: apply::positions(&cluster),
            base: cluster,
            cluster: live_cluster,
            reported,
            live: live.clone(),
            snap: placeholder.clone(),
            watch: watch.clone(),
            metrics: metrics.clone(),
            opts,
            clock,
            policy,
            seed,
            next_session: 1,
            finished: now_finished.iter().map(|id| (now, *id)).collect::<VecDeque<_>>(),
            finished_ids: now_finished.into_iter().collect(),
            epochs: Vec::new(),
            generation: 0,
            stopped: None,
            dispatch: dispatch.clone(),
            assigned: BTreeMap::new(),
            job_nodes: BTreeMap::new(),
            runs: BTreeMap::new(),
            addresses: BTreeMap::new(),
            isolation: BTreeMap::new(),
            stop_why: BTreeMap::new(),
            redispatch: false,
            receipts,
        };
        // Placements restored from the store are assigned again: daemons keep what they run.
        w.dispatch(&BTreeSet::new(), true);
        let first = w.initial_snapshot();
        placeholder.store(Arc::new(first));
        let model_source = w.opts.models.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("sovra-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| format!("cannot start the scheduler's writer thread: {e}"))?;
        if let Some(src) = model_source {
            models::spawn(src, tx.clone())?;
        }
        let s = Scheduler {
            tx: tx.clone(),
            snap: placeholder,
            live,
            watch,
            metrics,
            store,
            clock,
            dispatch,
            receipt_key,
            _writer: Arc::new(WriterThread { tx, handle: std::sync::Mutex::new(Some(handle)) }),
        };
        // Requeued and lost jobs are written, and a first cycle places what can run.
        if !lost.is_empty() {
            tracing::info!(lost = lost.len(), "jobs on nodes without a daemon requeued");
        }
        s.call_blocking(Req::Touch { ids: requeued.into_iter().chain(lost).collect() }, |tx| ReplyTx::Unit(Some(tx)))
            .map_err(|e| e.message().to_string())?;
        Ok(s)
    }

    /// The snapshot readers see now.
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.load_full()
    }

    /// Sends a request to the writer; the channel full is RESOURCE_EXHAUSTED, a stopped writer UNAVAILABLE.
    fn enqueue(&self, req: Req, reply: ReplyTx) -> Result<(), Status> {
        if let Some(why) = &self.snap.load().stopped {
            return Err(Status::unavailable(why.to_string()));
        }
        match self.tx.try_send(Msg::Work(Envelope { req, reply })) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Status::resource_exhausted(format!(
                "the scheduler has {QUEUE_DEPTH} requests waiting; retry in a moment"
            ))),
            Err(TrySendError::Disconnected(_)) => Err(Status::unavailable("the scheduler is shutting down")),
        }
    }

    /// Sends a request; the receiver gets its answer.
    fn send<T>(
        &self,
        req: Req,
        wrap: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, Status>>) -> ReplyTx,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, Status>>, Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(req, wrap(tx))?;
        Ok(rx)
    }

    /// Sends a request and waits for its answer (asynchronously).
    async fn call<T>(
        &self,
        req: Req,
        wrap: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, Status>>) -> ReplyTx,
    ) -> Result<T, Status> {
        let rx = self.send(req, wrap)?;
        rx.await.map_err(|_| Status::unavailable("the scheduler stopped before answering"))?
    }

    /// Sends a request and blocks the calling thread until it is answered (for callers without a runtime).
    fn call_blocking<T>(
        &self,
        req: Req,
        wrap: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, Status>>) -> ReplyTx,
    ) -> Result<T, Status> {
        let rx = self.send(req, wrap)?;
        futures_executor::block_on(rx).map_err(|_| Status::unavailable("the scheduler stopped before answering"))?
    }

    /// The Prometheus text exposition of the metrics (see [`crate::metrics`]).
    pub fn metrics_text(&self) -> Result<String, String> {
        let snap = self.snapshot();
        let ready = snap.nodes.values().filter(|v| v.info.ready).count() as i64;
        let not_ready = snap.nodes.len() as i64 - ready;
        Ok(self.metrics.render(&snap.pools, &snap.pool_milli, ready, not_ready, &snap.queues))
    }

    /// Runs the liveness check as of `now`: marks NotReady every daemon-reported node silent for 1.5 heartbeat
    /// intervals; returns their names. The writer also runs it every quarter interval on its own.
    pub fn check_liveness(&self, now: Instant) -> Result<Vec<String>, Status> {
        self.call_blocking(Req::Sweep { now }, ReplyTx::Names)
    }

    /// The last `n` event lines (node registered, not ready, job lost …), oldest first.
    pub fn events(&self, n: usize) -> Vec<String> {
        self.store.events(n)
    }

    /// Test-only (feature `fault-injection`): a request that panics inside the writer. Answered INTERNAL; the
    /// scheduler goes on.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_panic(&self) -> Result<(), Status> {
        self.call(Req::Panic, |tx| ReplyTx::Unit(Some(tx))).await
    }

    /// The token check of the user-facing services: the `authorization` header must be `Bearer TOKEN`, compared
    /// in constant time ([`token_matches`]).
    fn token_check(token: String) -> impl tonic::service::Interceptor + Clone {
        let expected = token_digest(&token);
        move |req: tonic::Request<()>| -> Result<tonic::Request<()>, Status> {
            match req.metadata().get("authorization").and_then(|v| v.to_str().ok()) {
                Some(v) if token_matches(&expected, v) => Ok(req),
                Some(_) => {
                    Err(Status::unauthenticated("wrong token; pass the scheduler's token with --token or SOVRA_TOKEN"))
                }
                None => {
                    Err(Status::unauthenticated("no token; pass the scheduler's token with --token or SOVRA_TOKEN"))
                }
            }
        }
    }
}

/// The SHA-256 of a bearer token: what [`token_matches`] compares, so that neither the token's length nor its
/// bytes shape the comparison's time.
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Whether an `authorization` header value is `Bearer T` for the token whose digest is `expected`. The digests are
/// compared in constant time (`subtle`): a timing attacker learns nothing about how many bytes of a guess match.
pub fn token_matches(expected: &[u8; 32], header: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Some(presented) = header.strip_prefix("Bearer ") else { return false };
    bool::from(token_digest(presented).ct_eq(expected))
}

/// A server stream of replies.
pub(crate) type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[cfg(test)]
mod token_tests {
    use super::{token_digest, token_matches};

    #[test]
    fn only_the_exact_bearer_token_matches() {
        let d = token_digest("s3cret");
        assert!(token_matches(&d, "Bearer s3cret"));
        for bad in ["Bearer s3cre", "Bearer s3cret ", "Bearer S3cret", "bearer s3cret", "s3cret", "Bearer ", ""] {
            assert!(!token_matches(&d, bad), "{bad:?} must not match");
        }
    }
}
