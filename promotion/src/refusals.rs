//! Refused attempts to move models across a border (docs/receipts.md, "Chaos suite"): each is audited in the
//! registry's log (kind `refusal`, or the gates' `denial`), counted by attempt for the promotion service's
//! `/metrics` (`sovra_promotion_refusals_total{attempt}`), and logged as a warning — the alert.

use crate::service::Promoter;
use serde_json::json;
use sovra_registry::AuditEvent;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Refusals counted by attempt, since the process started.
#[derive(Debug, Default)]
pub struct Refusals(Mutex<BTreeMap<String, u64>>);

impl Refusals {
    /// Counts one refusal of `attempt`.
    pub fn count(&self, attempt: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(attempt.to_string()).or_default() += 1;
    }

    /// Every attempt with its count, by name.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The counts in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP sovra_promotion_refusals_total Refused attempts to move models across a border, by attempt\n\
             # TYPE sovra_promotion_refusals_total counter\n",
        );
        for (attempt, n) in self.counts() {
            let label = attempt.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!("sovra_promotion_refusals_total{{attempt=\"{label}\"}} {n}\n"));
        }
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
