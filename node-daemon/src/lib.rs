//! Sovra node daemon: reads a node's GPU inventory and health and turns it into what the scheduler needs.
//!
//! Backends:
//! - [`nvml`]: the real one, through NVIDIA's NVML (`nvml-wrapper`). Without NVML (no `libnvidia-ml.so.1`, driver
//!   not loaded, no permission) it reports a clear *unavailable* state instead of failing.
//! - [`fake`]: **a fake backend** for machines without GPUs (tests, the all-in-one local mode, load tests): GPUs from
//!   a fixture file plus scripted XID events. Everything it reports says `fake`.
//!
//! Health: XID critical errors mark a GPU unhealthy unless the XID is in the ignore list ([`health`]; by default the
//! one NVIDIA's Kubernetes device plugin uses: 13, 31, 43, 45, 68, 109 — application errors, not hardware faults).
//!
//! Reporting ([`report`]): one gRPC stream to the scheduler over mutual TLS — full inventory on connect, health
//! changes and inventory changes as they happen, heartbeats — reconnecting with exponential backoff and jitter.
//! `sovra-node-daemon run` does that; `watch` prints the same information as JSON lines instead. [`tls_check`]
//! checks the TLS files before connecting and says which TLS or network problem a failed connection had (the
//! `sovra` CLI uses it too).

pub mod fake;
pub mod health;
pub mod inventory;
pub mod nvml;
pub mod report;
pub mod run;
pub mod tls_check;

pub use health::HealthPolicy;
pub use inventory::{BackendState, GpuRecord, Inventory, MigRecord, XidEvent, to_domain_node};
