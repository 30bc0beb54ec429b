//! [`Promoter::promote`]: decide, copy the blobs into the target data zone and re-verify them there, sign the
//! promotion statement, and commit it with the version's new location and the alias, expecting the records the
//! decision was made on (retried on a conflict, see [`PROMOTE_TRIES`]).

use crate::gates::GateResult;
use crate::service::{
    Decision, PROMOTE_TRIES, PROMOTION_PREDICATE, PromoteError, Promoted, Promoter, Res, STATEMENT_TYPE, bad,
};
use serde_json::{Value, json};
use sovra_domain::datazone::Stage;
use sovra_oms::dsse::Envelope;
use sovra_registry::{AuditEvent, Location, Registry, SignedRecord};
use std::path::PathBuf;

impl Promoter {
    /// Promotes `model@reference` into stage `to` (zone `zone`, default the stage's first zone). Extra approvals
    /// (DSSE envelopes from `sovra model approve --out`) may be passed as files.
    ///
    /// The commit expects the version record and the target's `latest` alias to be what the decision was made
    /// on. When another writer changed them in between (a concurrent promotion of the same version), the
    /// promotion is decided again on the new state, up to [`PROMOTE_TRIES`] times: of two promotions into one
    /// data zone exactly one succeeds and the other is refused (`stage_order`: already there), and promotions
    /// into two zones both keep their location. [`PromoteError::Conflict`] when every try lost.
    pub fn promote(
        &self,
        model: &str,
        reference: Option<&str>,
        to: Stage,
        zone: Option<&str>,
        approval_files: &[PathBuf],
    ) -> Res<Promoted> {
        let mut last = String::new();
        for _ in 0..PROMOTE_TRIES {
            match self.promote_once(model, reference, to, zone, approval_files) {
                Err(PromoteError::Conflict(m)) => last = m,
                r => return r,
            }
        }
        Err(PromoteError::Conflict(format!(
            "promotion of {model} into {to}: {last} (other writers won {PROMOTE_TRIES} tries in a row; nothing was \
             promoted, run it again)"
        )))
    }

    fn promote_once(
        &self,
        model: &str,
        reference: Option<&str>,
        to: Stage,
        zone: Option<&str>,
        approval_files: &[PathBuf],
    ) -> Res<Promoted> {
        let (d, read) = self.decide(model, reference, to, zone, approval_files)?;
        if !d.allowed {
            return Err(self.deny(&d.version, &d.from, &d.to, d.gates));
        }
        let Decision { version: v, from, to: target, gates, under_exception, input, exceptions, previous, .. } = d;
        let service_key = self.config.service_signer().map_err(bad)?; // before anything is copied
        // Copy into the target data zone and re-verify every digest there.
        let blobs = self.registry.blobs();
        let mut copied = Vec::new();
        let mut digests: Vec<&str> = v.files.iter().map(|f| f.digest.as_str()).collect();
        digests.push(&v.bundle);
        for d in digests {
            let (existed, r) = self.blob_locks.with(&format!("{target}/{d}"), || {
                let existed = blobs.exists(&target, d)?;
                Ok::<_, sovra_registry::Error>((
                    existed,
                    blobs.copy(&from, &target, d).and_then(|_| blobs.verify(&target, d)),
                ))
            })?;
            if !existed {
                copied.push(d.to_string());
            }
            if let Err(e) = r {
                for c in &copied {
                    let _ = blobs.delete(&target, c);
                }
                let g = GateResult {
                    gate: "copy".into(),
                    result: "fail".into(),
                    reasons: vec![e.to_string()],
                    exception: None,
                };
                return Err(self.deny(&v, &from, &target, vec![g]));
            }
        }
        let now = self.now();
        let id = self.registry.next_id()?;
        let approvals = input["approvals"]["valid"].clone();
        let predicate = json!({
            "from": {"zone": from.zone, "stage": from.stage},
            "to": {"zone": target.zone, "stage": target.stage},
            "gates": gates,
            "policyDigest": self.gates.digest(),
            "approvals": approvals,
            "exceptions": exceptions,
            "underException": under_exception,
            "residencyClass": v.residency_class,
            "bundle": v.bundle,
            "promotedAt": now,
            "previous": previous,
        });
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": v.model, "digest": {"sha256": v.digest}}],
            "predicateType": PROMOTION_PREDICATE,
            "predicate": predicate,
        });
        let env = Envelope::sign(STATEMENT_TYPE, statement.to_string().as_bytes(), &service_key)
            .map_err(|e| bad(e.to_string()))?;
        let record = SignedRecord {
            id,
            kind: "promotion".into(),
            model: v.model.clone(),
            digest: v.digest.clone(),
            recorded_at: now,
            fields: json!({"from": from.to_string(), "to": target.to_string(), "under_exception": under_exception}),
            envelope: serde_json::to_value(&env).unwrap_or(Value::Null),
        };
        let mut version = v.clone();
        version.locations.push(Location { data_zone: target.clone(), since: now, promotion: Some(id) });
        let event = AuditEvent {
            kind: "promotion".into(),
            subject: format!("{}@{}", v.model, v.digest),
            actor: "promotion-service".into(),
            details: json!({"from": from.to_string(), "to": target.to_string(), "record": id,
                            "under_exception": under_exception, "policy_digest": self.gates.digest(),
                            "approvals": approvals}),
        };
        let writes = [
            Registry::record_write(&record),
            Registry::version_write(&version).expecting(read.version),
            Registry::alias_write(&target, &v.model, "latest", &v.digest)?.expecting(read.alias),
        ];
        let entry = self.registry.commit(&writes, event)?;
        Ok(Promoted { version, record, from, to: target, gates, under_exception, audit_seq: entry.seq })
    }
}
