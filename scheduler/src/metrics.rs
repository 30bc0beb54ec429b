//! Prometheus metrics (`/metrics`, text exposition format) and `/healthz`, served over plain HTTP on their own
//! address (`--metrics-listen`), as Prometheus scrapes it.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `sovra_queue_pending_jobs{queue}` | gauge | jobs waiting in a queue |
//! | `sovra_queue_running_jobs{queue}` | gauge | jobs holding resources |
//! | `sovra_placements_total` | counter | jobs placed (rate = placements/s) |
//! | `sovra_preemptions_total` | counter | gangs preempted |
//! | `sovra_model_stops_total` | counter | placed jobs stopped because their model version left a zone they ran in |
//! | `sovra_submits_total` | counter | accepted submissions |
//! | `sovra_decision_seconds` | histogram | time of one scheduling cycle (all decisions it makes) |
//! | `sovra_pool_gpu_milli{pool,zone,state}` | gauge | GPU milli `free` / `used` / `unavailable` (unhealthy or node not ready) |
//! | `sovra_zone_gpu_milli{zone,state}` | gauge | the same per zone |
//! | `sovra_nodes{state}` | gauge | nodes `ready` / `not_ready` |
//! | `sovra_node_reports_total` | counter | messages received from node daemons |
//! | `sovra_sovereignty_refusals_total{attempt}` | counter | refused attempts to move work across a border (alert on any increase) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text: prometheus-client writes OpenMetrics (`# TYPE` names without
/// `_total`, a closing `# EOF`), which Prometheus reads as such only under this type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
    zone: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabel {
    zone: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabel {
    attempt: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The scheduler's metrics.
pub struct Metrics {
    registry: Registry,
    pending: Family<QueueLabel, Gauge>,
    running: Family<QueueLabel, Gauge>,
    /// Jobs placed.
    pub placements: Counter,
    /// Gangs preempted.
    pub preemptions: Counter,
    /// Placed jobs stopped because their model version was withdrawn from a zone they ran in.
    pub model_stops: Counter,
    /// Accepted submissions.
    pub submits: Counter,
    /// Scheduling cycle durations, seconds.
    pub decision_seconds: Histogram,
    pool_milli: Family<PoolLabel, Gauge>,
    zone_milli: Family<ZoneLabel, Gauge>,
    nodes: Family<StateLabel, Gauge>,
    /// Messages from node daemons.
    pub node_reports: Counter,
    /// Group commits written (each one write and one flush of the store).
    pub commits: Counter,
    /// Requests per group commit.
    pub commit_requests: Histogram,
    /// Duration of a store commit (write, flush, manifest), seconds.
    pub commit_seconds: Histogram,
    /// Requests refused because the panic of a bug was caught (the service went on).
    pub panics: Counter,
    refusals: Family<AttemptLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            pending: Family::default(),
            running: Family::default(),
            placements: Counter::default(),
            preemptions: Counter::default(),
            model_stops: Counter::default(),
            submits: Counter::default(),
            // 10 µs … ~5 s.
            decision_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 20)),
            pool_milli: Family::default(),
            zone_milli: Family::default(),
            nodes: Family::default(),
            node_reports: Counter::default(),
            commits: Counter::default(),
            // 1 … 2048 requests.
            commit_requests: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            // 10 µs … ~5 s.
            commit_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 20)),
            panics: Counter::default(),
            refusals: Family::default(),
            registry: Registry::default(),
        };
        registry.register("sovra_queue_pending_jobs", "Jobs waiting in a queue", m.pending.clone());
        registry.register("sovra_queue_running_jobs", "Jobs holding resources", m.running.clone());
        registry.register("sovra_placements", "Jobs placed", m.placements.clone());
        registry.register("sovra_preemptions", "Gangs preempted", m.preemptions.clone());
        registry.register(
            "sovra_model_stops",
            "Placed jobs stopped because their model version left a zone they ran in",
            m.model_stops.clone(),
        );
        registry.register("sovra_submits", "Accepted submissions", m.submits.clone());
        registry.register("sovra_decision_seconds", "Duration of one scheduling cycle", m.decision_seconds.clone());
        registry.register("sovra_pool_gpu_milli", "GPU milli per pool: free, used, unavailable", m.pool_milli.clone());
        registry.register("sovra_zone_gpu_milli", "GPU milli per zone: free, used, unavailable", m.zone_milli.clone());
        registry.register("sovra_nodes", "Nodes ready and not ready", m.nodes.clone());
        registry.register("sovra_node_reports", "Messages received from node daemons", m.node_reports.clone());
        registry.register("sovra_commits", "Group commits written to the store", m.commits.clone());
        registry.register("sovra_commit_requests", "Requests per group commit", m.commit_requests.clone());
        registry.register("sovra_commit_seconds", "Duration of a store commit", m.commit_seconds.clone());
        registry.register("sovra_request_panics", "Requests refused after a caught panic", m.panics.clone());
        registry.register(
            "sovra_sovereignty_refusals",
            "Refused attempts to move work across a border, by attempt",
            m.refusals.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a refused attempt to move work across a border (`sovra_sovereignty_refusals_total{attempt}`).
    pub fn refusal(&self, attempt: &str) {
        self.refusals.get_or_create(&AttemptLabel { attempt: attempt.to_string() }).inc();
    }

    /// Refreshes the gauges from a snapshot's figures — pools with their GPU milli free, used and unavailable (same
    /// order), node counts, queues — then encodes everything in the text format.
    pub fn render(
        &self,
        pools: &[sovra_api::v1::PoolInfo],
        pool_milli: &[[u64; 3]],
        ready: i64,
        not_ready: i64,
        queues: &[sovra_api::v1::QueueInfo],
    ) -> String {
        for q in queues {
            let l = QueueLabel { queue: q.name.clone() };
            self.pending.get_or_create(&l).set(i64::from(q.pending));
            self.running.get_or_create(&l).set(i64::from(q.running));
        }
        let mut zones: std::collections::BTreeMap<&str, [i64; 3]> = std::collections::BTreeMap::new();
        for (pool, m) in pools.iter().zip(pool_milli) {
            let v = m.map(|x| x as i64);
            let z = zones.entry(pool.zone.as_str()).or_default();
            for (name, k) in [("free", 0), ("used", 1), ("unavailable", 2)] {
                let l = PoolLabel { pool: pool.id.clone(), zone: pool.zone.clone(), state: name.into() };
                self.pool_milli.get_or_create(&l).set(v[k]);
                z[k] += v[k];
            }
        }
        for (zone, v) in zones {
            for (name, k) in [("free", 0), ("used", 1), ("unavailable", 2)] {
                self.zone_milli.get_or_create(&ZoneLabel { zone: zone.into(), state: name.into() }).set(v[k]);
            }
        }
        self.nodes.get_or_create(&StateLabel { state: "ready".into() }).set(ready);
        self.nodes.get_or_create(&StateLabel { state: "not_ready".into() }).set(not_ready);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
