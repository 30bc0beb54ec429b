//! The promotion service (`sovra-promotion serve`, docs/promotion-service.md): the registry and gated promotion
//! of `sovra-promotion` behind a tonic gRPC service over TLS, so that one process holds the registry (sled's lock)
//! and the service key, and CI runners, approvers and admins call it from anywhere.
//!
//! Clients are identified by a client certificate or a bearer token ([`auth`]) and need a role per call. The
//! [`Promoter`](sovra_promotion::Promoter) is synchronous (sled; its blob store owns a tokio runtime and blocks on
//! it), so the service shares it as `Arc<Promoter>` and runs every call to it on tokio's blocking pool
//! (`tokio::task::spawn_blocking`), never on the async workers. Approvals and exceptions are signed on the
//! client with the approver's or admin's own key; the service verifies and records them.

pub mod auth;
pub mod server;
mod streams;

pub use server::{PromotionService, ServeOptions, serve};
