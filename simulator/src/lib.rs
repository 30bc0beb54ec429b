//! Sovra capacity-planning simulator.
//!
//! So far: readers for the Alibaba GPU trace v2023 ([`trace`]), turned into clusters and jobs for the same
//! placement core the live scheduler uses (`sovra-placement`). Still to come (issue "Capacity-planning simulator on
//! the real Alibaba GPU trace"): the FGD paper's fill protocol, an event-driven replay mode, and `sovra plan`.

pub mod bound;
pub mod fill;
pub mod plan;
pub mod replay;
pub mod report;
pub mod trace;
