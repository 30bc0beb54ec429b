//! Sovra's placement core: decides where a job's replicas go.
//!
//! **Pure**: input an immutable snapshot ([`ClusterState`]) and a job; output a [`Verdict`]: a [`Decision`] (node and
//! devices for every replica), or an [`Explanation`] (per filter, how many nodes it rejected and why, and a one-line
//! summary) of why it cannot be placed now or can never be placed as configured.
//! No async runtime, RPC, Kubernetes or storage crate is in this crate or below it (a test checks this). The live
//! scheduler, the Kubernetes extender and the simulator all call this same code.
//!
//! Pipeline, cheapest first ([`filter`]): purpose and residency once per pool per job; then per node health, GPU
//! model, CPU and memory, GPU capacity. Feasible nodes are ranked by a weighted sum of integer scorers
//! ([`score`], [`fgd`]); ties go to a fixed node order seeded by the placer's seed. Gangs are all-or-nothing.
//! Deterministic: the same snapshot, job order and seed give the same decisions.
//!
//! The node inventory can change in place ([`ClusterState::patch`], [`NodeChange`]): a node added, removed or
//! given new GPUs; the patched topology is laid out as a fresh build of the changed configuration would be, so the
//! placer decides alike on both. A decision scans every node of the job's permitted pools (O(candidates)); see
//! `BENCHMARKS.md`, "Placement core: scaling curve", for what that costs at 100k nodes.

pub mod decision;
pub mod fgd;
pub mod filter;
pub mod placer;
pub mod score;
pub mod snapshot;
pub mod synth;

pub use decision::{
    Decision, DeviceAssignment, Explanation, FilterKind, FilterReport, Outcome, ReasonCount, RejectReason,
    ReplicaPlacement, Verdict,
};
pub use fgd::{Shape, Workload};
pub use placer::{ADAPTIVE_HIGH, ADAPTIVE_LOW, DEFAULT_SEED, Placer, place};
pub use snapshot::{ApplyError, BuildError, ClusterState, NodeChange, NodeIdx, NodeSummary, Topology};
