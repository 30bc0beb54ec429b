//! Sovra's admission webhook for Kubernetes: **fail-closed sovereignty** for the pods the scheduler extender never
//! sees (CPU-only pods, MIG or DRA pods, pods naming another scheduler) and for the labels that decide where a
//! pod may go.
//!
//! - [`review`]: AdmissionReview v1 in and out (malformed → denied);
//! - [`policy`]: the rules, pure (which pods are confined to which pools, who may move a pool label);
//! - [`lookup`]: namespace and node labels, from metadata-only watches and direct reads;
//! - [`http`]: the HTTPS endpoints; [`cert`]: the start-up check of the serving certificate.
//!
//! kube-apiserver is told to call it with `failurePolicy: Fail` (`deploy/admission.yaml`), so while the webhook is
//! down the pods of regulated namespaces are refused, never admitted unchecked. docs/kubernetes.md has the how-to.

pub mod cert;
pub mod http;
pub mod lookup;
pub mod policy;
pub mod review;

pub use policy::{Identity, Lookup, Policy};
pub use review::Verdict;
