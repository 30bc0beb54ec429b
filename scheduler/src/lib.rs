//! Sovra scheduler service (skeleton: issue "Scheduler service: gRPC API, durable state, queues, gangs,
//! preemption and the job CLI").
//!
//! Will hold the service around the pure placement core (`sovra-placement`, in `scheduler/placement/`): the tonic
//! gRPC API (jobs, nodes, admin), durable state in sled, queues with quotas and fair share, gang admission,
//! preemption, node liveness, mTLS identity binding nodes to zones, and the Kubernetes scheduler extender.
//! Nothing is implemented here yet; it re-exports the core so that users of the service crate see one API.

pub use sovra_placement as placement;
