//! Sovra capacity-planning simulator, on the same placement core the live scheduler uses (`sovra-placement`).
//!
//! - [`trace`]: readers for the Alibaba GPU trace v2023, turned into clusters and jobs;
//! - [`fill`], [`bound`], [`report`]: the FGD paper's fill protocol (`sovra simulate`), its provable ceiling and the
//!   comparison with the published figures; [`order`] and [`gorand`]: the random stream that orders a run (Go's
//!   `math/rand`, as the paper's simulator draws it, or SplitMix64);
//! - [`scenario`], [`replay`], [`plan`]: scenario files, the event-driven replay mode (`sovra replay`) and capacity
//!   planning (`sovra plan`).
//!
//! Every size that comes from input (scenario horizons, samples, streams, jobs, offers; trace rows and bytes) is
//! bounded and checked before it is allocated: [`scenario::limits`], [`trace::limits`] and [`fill::MAX_WORKLOAD_TASKS`].

pub mod bound;
pub mod fill;
pub mod gorand;
pub mod order;
pub mod plan;
pub mod replay;
pub mod report;
pub mod scenario;
pub mod trace;
pub mod whatif;
