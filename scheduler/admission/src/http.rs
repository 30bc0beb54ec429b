//! The webhook's HTTPS endpoints: `POST /mutate` and `POST /validate` (AdmissionReview v1), `GET /healthz`,
//! `GET /readyz` (200 once the namespace and node watches have synced) and `GET /metrics`.
//!
//! Every answer to a review is HTTP 200 with a review: a body that cannot be read gets a denial naming why
//! ([`crate::review::deny_malformed`]), never an allow and never a bare HTTP error.

use crate::lookup::{KubeLookup, StaticLookup};
use crate::policy::{Lookup, Policy};
use crate::review::{self, Verdict};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Where the webhook reads namespaces and nodes.
#[derive(Clone)]
pub enum Source {
    /// Watches and reads through the Kubernetes API.
    Kube(KubeLookup),
    /// Fixed maps (tests).
    Fixed(Arc<StaticLookup>),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    hook: &'static str,
    verdict: &'static str,
}

/// The shared state of the endpoints.
pub struct Webhook {
    policy: Policy,
    source: Source,
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
}

impl Webhook {
    /// A webhook applying `policy`, reading the cluster through `source`.
    pub fn new(policy: Policy, source: Source) -> Webhook {
        let mut registry = Registry::default();
        let reviews = Family::<ReviewLabels, Counter>::default();
        for hook in ["mutate", "validate"] {
            for verdict in ["allowed", "denied", "malformed"] {
                let _ = reviews.get_or_create(&ReviewLabels { hook, verdict });
            }
        }
        registry.register("sovra_admission_reviews", "Admission reviews by hook and verdict", reviews.clone());
        Webhook { policy, source, registry, reviews }
    }

    fn ready(&self) -> bool {
        match &self.source {
            Source::Kube(k) => k.labels.synced(),
            Source::Fixed(_) => true,
        }
    }

    /// Answers one review body for `hook` (`mutate` or `validate`).
    pub async fn review(&self, hook: &'static str, body: &[u8]) -> serde_json::Value {
        let req = match review::decode(body) {
            Ok(r) => r,
            Err(m) => {
                self.reviews.get_or_create(&ReviewLabels { hook, verdict: "malformed" }).inc();
                tracing::warn!(hook, error = %m, "malformed review denied");
                return review::deny_malformed(&m);
            }
        };
        let verdict = match &self.source {
            Source::Kube(k) => {
                let view = k.view(&req).await;
                self.decide(hook, &req, &view)
            }
            Source::Fixed(s) => self.decide(hook, &req, s.as_ref()),
        };
        let label = if matches!(verdict, Verdict::Allow(_)) { "allowed" } else { "denied" };
        self.reviews.get_or_create(&ReviewLabels { hook, verdict: label }).inc();
        if let Verdict::Deny(why) = &verdict {
            tracing::info!(hook, kind = %req.kind.kind, namespace = %req.namespace, name = %req.name,
                user = %req.user_info.username, reason = %why, "denied");
        }
        review::encode(&req.uid, &verdict)
    }

    fn decide(&self, hook: &str, req: &review::Request, lookup: &dyn Lookup) -> Verdict {
        if hook == "mutate" { self.policy.mutate(req, lookup) } else { self.policy.validate(req, lookup) }
    }
}

fn json(v: &serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(v).unwrap_or_default()).into_response()
}

/// The router. Bodies over `max_body` bytes are refused with 413 (kube-apiserver caps objects at 3 MiB).
pub fn router(hook: Arc<Webhook>, max_body: usize) -> Router {
    Router::new()
        .route(
            "/mutate",
            post(|State(w): State<Arc<Webhook>>, b: Bytes| async move { json(&w.review("mutate", &b).await) }),
        )
        .route(
            "/validate",
            post(|State(w): State<Arc<Webhook>>, b: Bytes| async move { json(&w.review("validate", &b).await) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(w): State<Arc<Webhook>>| async move {
                if w.ready() {
                    (StatusCode::OK, "ok\n").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "namespace and node watches not synced yet\n").into_response()
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(w): State<Arc<Webhook>>| async move {
                let mut out = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut out, &w.registry);
                ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
            }),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(hook)
}
