//! Sovra node daemon (skeleton: issue "Node daemon: NVML GPU inventory, health and reporting").
//!
//! Will read GPU inventory and health through NVML (`nvml-wrapper`): UUIDs, models, memory, MIG instances, NVLink
//! peers, NUMA nodes, XID health events; offer a clearly named fake backend for machines without GPUs; and stream
//! inventory, deltas and heartbeats to the scheduler over mTLS gRPC. Nothing is implemented here yet.
