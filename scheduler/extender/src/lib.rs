//! Sovra as a Kubernetes scheduler extender.
//!
//! kube-scheduler calls Sovra over HTTP(S) (`reference/k8s-scheduler-extender-protocol.md` in the shared
//! references; docs/kubernetes.md for deployment) so that pods land only on nodes whose zone satisfies their
//! residency class, packed by Sovra's placement core:
//! - [`wire`]: the extender/v1 JSON, decoded as Go decodes it (case-insensitive keys, `null` everywhere);
//! - [`pod`]: from a pod to a Sovra job (GPUs, GPU share, residency class, kind, gang);
//! - [`mig`]: MIG slices (`nvidia.com/mig-<profile>`) as the core's MIG devices;
//! - [`cache`]: nodes (cluster config + Kubernetes Nodes) and what runs on them, as immutable snapshots;
//! - [`extender`]: filter, prioritize, preempt and bind on top of `sovra-placement`;
//! - [`readiness`]: not ready until the watches have synced (`/readyz`);
//! - [`metrics`]: request counters for `GET /metrics` (prometheus-client);
//! - [`server`]: the HTTP and HTTPS (rustls, optional mTLS) server;
//! - [`k8s`]: kube-rs watches of Nodes and Pods, Bindings, GPU feature discovery labels;
//! - [`assign`]: the devices a bound pod holds, recorded in its annotations;
//! - [`reserve`]: gang reservations and binds in flight;
//! - [`leader`]: leader election through a Lease (only the leader binds).

pub mod assign;
pub mod cache;
pub mod extender;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod mig;
pub mod pod;
pub mod quantity;
pub mod readiness;
pub mod reserve;
pub mod server;
pub mod wire;

pub use cache::{Cache, KubeNode, PodRecord, Snapshot};
pub use extender::{Binder, Extender, Verdict};
