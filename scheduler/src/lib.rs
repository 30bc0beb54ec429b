//! Sovra scheduler service.
//!
//! - [`engine`]: jobs and queues around the pure placement core (`sovra-placement`, in `scheduler/placement/`):
//!   lifecycle, priorities, DRF fair share, quotas, whole-gang preemption and backfill with reservations, in memory
//!   and deterministic;
//! - [`store`]: durable job records in sled, flushed before a request is acknowledged;
//! - [`service`]: the tonic gRPC API — jobs, cluster views and admin behind a bearer token; the node API where
//!   daemons register and report over mutual TLS; liveness (NotReady within two heartbeat intervals); reload;
//! - [`tls`]: certificates (rcgen) and the node identity a client certificate carries (its CN);
//! - [`metrics`]: Prometheus metrics, served with `/healthz` by [`service::serve_metrics`].

pub mod engine;
pub mod metrics;
pub mod service;
pub mod store;
pub mod tls;

pub use engine::{Engine, Event, JobId, JobRecord, JobState, QueueSpec, SubmitError};
pub use sovra_placement as placement;
