//! Gated promotion of signed models across data zones (docs/registry.md), on top of the OMS signing format of
//! `sovra-oms`.
//!
//! [`config`] (the promotion config), [`gates`] (Rego policies evaluated with `regorus`) and [`service`] (the
//! [`Promoter`]: push, approve, grant exceptions, promote, pull, status, over a `sovra_registry::Registry`).
//! Approvals, exceptions and promotion statements are DSSE envelopes (`sovra_oms::dsse`) signed with OMS keys.
//!
//! Signing, verifying, manifests, bundles and keys are not re-exported here: import them from `sovra_oms`, so
//! each item has one path.

pub mod config;
pub mod gates;
pub mod grants;
mod locks;
pub mod payloads;
mod promote;
mod push;
mod reading;
pub mod receipts;
pub mod refusals;
pub mod service;
pub mod service_config;
pub mod withdraw;

pub use config::PromotionConfig;
pub use gates::{GateResult, Gates};
pub use grants::{sign_approval, sign_exception};
pub use reading::{PullFrom, default_signature_path};
pub use service::{Decision, PromoteError, Promoted, Promoter, PushRequest};
pub use withdraw::sign_withdrawal;
