//! Sovra capacity-planning simulator (skeleton: issue "Capacity-planning simulator on the real Alibaba GPU trace").
//!
//! Will replay the Alibaba GPU trace (and Sovra scenarios) through the same placement core as the live scheduler
//! (`sovra-placement`): the FGD paper's fill protocol, an event-driven replay mode, and `sovra plan` capacity
//! search. Nothing is implemented here yet.
