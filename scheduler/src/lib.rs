//! Sovra scheduler service.
//!
//! The engine it drives (jobs and queues around the pure placement core: lifecycle, priorities, DRF fair share,
//! quotas, whole-gang preemption and backfill with reservations, in memory and deterministic) is the pure crate
//! `sovra-engine` (in `engine/`), shared with the simulator.
//!
//! - [`store`]: durable job records in sled, flushed before a request is acknowledged;
//! - [`service`]: the tonic gRPC API — jobs, cluster views and admin behind a bearer token; the node API where
//!   daemons register and report over mutual TLS; liveness (NotReady within two heartbeat intervals); reload;
//! - [`tls`]: certificates (rcgen) and the node identity a client certificate carries (its CN);
//! - [`metrics`]: Prometheus metrics, served with `/healthz` by [`service::serve_metrics`].

pub mod leadership;
pub mod metrics;
pub mod service;
pub mod store;
pub mod tls;

pub use sovra_placement as placement;
