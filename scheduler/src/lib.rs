//! Sovra scheduler service.
//!
//! - [`engine`]: jobs and queues around the pure placement core (`sovra-placement`, in `scheduler/placement/`):
//!   lifecycle, priorities, DRF fair share, quotas, whole-gang preemption and backfill with reservations, in memory
//!   and deterministic;
//! - [`store`]: durable job records in sled, flushed before a request is acknowledged;
//! - [`service`]: the tonic gRPC API (jobs, cluster views) with bearer-token authentication.
//!
//! Still to come (issue "Scheduler service"): node registration and liveness, mTLS identity binding nodes to zones,
//! metrics, and the all-in-one local mode.

pub mod engine;
pub mod metrics;
pub mod service;
pub mod store;
pub mod tls;

pub use engine::{Engine, Event, JobId, JobRecord, JobState, QueueSpec, SubmitError};
pub use sovra_placement as placement;
