//! Sovra scheduler service.
//!
//! So far: the scheduling [`engine`] — jobs and queues around the pure placement core (`sovra-placement`, in
//! `scheduler/placement/`): lifecycle, priorities, DRF fair share, quotas, whole-gang preemption and backfill with
//! reservations, in memory and deterministic. Still to come (issue "Scheduler service"): the tonic gRPC API,
//! durable state in sled, node liveness, mTLS identity, the job CLI and the all-in-one local mode.

pub mod engine;

pub use engine::{Engine, Event, JobId, JobRecord, JobState, QueueSpec, SubmitError};
pub use sovra_placement as placement;
