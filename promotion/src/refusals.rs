//! Refused attempts to move models across a border (docs/receipts.md, "Chaos suite"): each is audited in the
//! registry's log (kind `refusal`, or the gates' `denial`), counted by attempt for the promotion service's
//! `/metrics` (`sovra_promotion_refusals_total{attempt}`), and logged as a warning — the alert.

use crate::service::Promoter;
use serde_json::json;
use sovra_registry::AuditEvent;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AttemptLabel {
    attempt: String,
}

type Counters = prometheus_client::metrics::family::Family<AttemptLabel, prometheus_client::metrics::counter::Counter>;

/// Refused attempts, counted by attempt since the process started (`sovra_promotion_refusals_total{attempt}`).
#[derive(Debug)]
pub struct Refusals {
    registry: prometheus_client::registry::Registry,
    counters: Counters,
}

impl Default for Refusals {
    fn default() -> Self {
        let counters = Counters::default();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(
            "sovra_promotion_refusals",
            "Refused attempts to move models across a border, by attempt",
            counters.clone(),
        );
        Refusals { registry, counters }
    }
}

impl Refusals {
    /// The `Content-Type` of [`Refusals::render`] (OpenMetrics text, as prometheus-client writes it).
    pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Counts one refusal of `attempt`.
    pub fn count(&self, attempt: &str) {
        self.counters.get_or_create(&AttemptLabel { attempt: attempt.to_string() }).inc();
    }

    /// The counts in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Promoter {
    /// Records a refused attempt: counted, logged as a warning and audited (kind `refusal`) unless `audited`
    /// says the caller's own audit entry already holds it (a gate denial).
    pub(crate) fn refused_attempt(&self, attempt: &str, subject: &str, why: &str, audited: bool) {
        self.refusals.count(attempt);
        tracing::warn!(attempt, subject, reason = why, "REFUSED");
        if audited {
            return;
        }
        let event = AuditEvent {
            kind: "refusal".into(),
            subject: subject.into(),
            actor: "promotion-service".into(),
            details: json!({"attempt": attempt, "reason": why}),
        };
        if let Err(e) = self.registry.audit(event) {
            tracing::error!(error = %e, attempt, "a refusal could not be audited");
        }
    }
}
