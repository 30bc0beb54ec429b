//! Limits on every size that comes from input, checked while a file or request is validated — before anything is
//! allocated for it. A value over a limit is a [`crate::Problem`] naming the field and the limit, like any other
//! mistake; `sovra place` exits 2 and the scheduler answers INVALID_ARGUMENT.
//!
//! The limits are far above what a real job or cluster needs and low enough that the largest accepted input costs
//! little memory and time: a job of [`MAX_REPLICAS`] replicas is a placement decision of a few MiB, where
//! `replicas: 4000000000` used to ask for hundreds of GiB and abort the process. `docs/configuration.md` lists them.

pub use crate::config::{MAX_GPUS, MAX_GPUS_PER_NODE, MAX_MIG_PER_GPU, MAX_NODES};

/// At most this many replicas in one job (one gang). The Kubernetes extender accepts gangs of the same size.
pub const MAX_REPLICAS: u64 = 10_000;

/// At most this many GPUs per replica: a replica runs on one node, and a node has at most [`MAX_GPUS_PER_NODE`].
pub const MAX_GPUS_PER_REPLICA: u64 = MAX_GPUS_PER_NODE;

/// At most this much CPU (milli-cores) per replica or per node: a million cores. Bounds the sums the scheduler
/// keeps (per queue, per cluster) far below `u64::MAX`.
pub const MAX_CPU_MILLI: u64 = 1_000_000_000;

/// At most this much memory (MiB) per replica, per node or per GPU: 2^40 MiB (one exbibyte).
pub const MAX_MEMORY_MIB: u64 = 1 << 40;

/// At most this many jobs in one job file (a `jobs:` list).
pub const MAX_JOBS_PER_FILE: usize = 10_000;

/// At most this many entries in one list of a job or cluster file (`gpu_models`, zones, pools, residency classes,
/// queues, a class's countries …), other than `nodes` (bounded by [`MAX_NODES`]) and `jobs`
/// ([`MAX_JOBS_PER_FILE`]).
pub const MAX_LIST_LEN: usize = 1_000;

/// At most this many bytes in a name, id or other string of a job or cluster file (job name, queue, residency
/// class, GPU model, zone, pool and node names …): the length of a DNS name.
pub const MAX_NAME_LEN: usize = 253;

/// At most this many bytes in a request id (idempotent submit).
pub const MAX_REQUEST_ID_LEN: usize = 253;

/// At most this many bytes of job YAML in one submit request.
pub const MAX_JOB_YAML_BYTES: usize = 1 << 20;

/// The largest `scheduling.max_feasible_nodes` (beyond, use 0: score every node).
pub const MAX_FEASIBLE_NODES: u32 = 1_000_000;
