//! Approvals and break-glass exceptions: signed, recorded and audited grants that the gates read back.

use crate::service::{APPROVAL_TYPE, EXCEPTION_TYPE, Promoter, Res, bad, short};
use serde_json::{Value, json};
use sovra_domain::datazone::Stage;
use sovra_oms::dsse::Envelope;
use sovra_oms::keys::SigningKey;
use sovra_registry::{AuditEvent, Registry, SignedRecord, VersionRecord};
use std::collections::BTreeMap;
use std::path::Path;

impl Promoter {
    /// Signs an approval of `model@reference` entering stage `to` with the approver's private key and records it
    /// (unless `record` is false). An approval by a key that is not a configured approver is recorded but never
    /// counts. Returns the record (its envelope is what CI passes around).
    pub fn approve(
        &self,
        model: &str,
        reference: Option<&str>,
        to: Stage,
        key: &Path,
        ttl: Option<u64>,
        record: bool,
    ) -> Res<SignedRecord> {
        let v = self.registry.resolve(model, reference)?;
        let from = match to {
            Stage::Registry => Stage::Training,
            Stage::Inference => Stage::Registry,
            Stage::Training => {
                return Err(bad("--to training: nothing is promoted into training; use registry or inference"));
            }
        };
        let key = SigningKey::from_pem_file(key)?;
        let ttl = ttl.unwrap_or(self.config.approval_max_age);
        if ttl > self.config.approval_max_age {
            return Err(bad(format!(
                "--ttl: {ttl} s exceeds approvals.max_age ({}) of {}",
                self.config.approvals.max_age,
                self.config.path.display()
            )));
        }
        let hint = key.public_key().hint();
        let approver = self.config.approvers.iter().find(|a| a.hint == hint).map(|a| a.name.clone());
        let now = self.now();
        let payload = json!({
            "_type": "https://sovra.dev/approval/v1",
            "model": v.model, "digest": v.digest, "from": from, "to": to,
            "approver": approver.clone().unwrap_or_else(|| "unknown".into()),
            "issued_at": now, "expires_at": now.saturating_add(ttl),
        });
        let env =
            Envelope::sign(APPROVAL_TYPE, payload.to_string().as_bytes(), &key).map_err(|e| bad(e.to_string()))?;
        let rec = SignedRecord {
            id: self.registry.next_id()?,
            kind: "approval".into(),
            model: v.model.clone(),
            digest: v.digest.clone(),
            recorded_at: now,
            fields: payload,
            envelope: serde_json::to_value(&env).unwrap_or(Value::Null),
        };
        if record {
            let event = AuditEvent {
                kind: "approval".into(),
                subject: format!("{}@{}", v.model, v.digest),
                actor: approver.unwrap_or_else(|| format!("unknown key {hint}")),
                details: json!({"from": from, "to": to, "expires_at": now.saturating_add(ttl), "record": rec.id}),
            };
            self.registry.commit(&[Registry::record_write(&rec)], event)?;
        }
        Ok(rec)
    }

    /// Grants a break-glass exception to one gate for one model version, signed by an admin key; it expires by
    /// itself after `ttl` seconds.
    pub fn grant_exception(
        &self,
        model: &str,
        reference: Option<&str>,
        gate: &str,
        ttl: u64,
        reason: &str,
        admin_key: &Path,
    ) -> Res<SignedRecord> {
        let v = self.registry.resolve(model, reference)?;
        let key = SigningKey::from_pem_file(admin_key)?;
        let hint = key.public_key().hint();
        let admin = self.config.admins.iter().find(|a| a.hint == hint).ok_or_else(|| {
            bad(format!(
                "{}: not an admin key (admins in {}: {}); only an admin may grant an exception",
                admin_key.display(),
                self.config.path.display(),
                self.config.admins.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let known = self.gates.names();
        if !known.iter().any(|g| g == gate) {
            return Err(bad(format!("--gate `{gate}` is not a gate (gates: {})", known.join(", "))));
        }
        if reason.trim().is_empty() {
            return Err(bad("--reason: give the reason for the exception (it is audited)"));
        }
        if ttl == 0 {
            return Err(bad("--ttl must be positive"));
        }
        if ttl > self.config.exception_max_ttl {
            return Err(bad(format!(
                "--ttl: {ttl} s is longer than exceptions.max_ttl ({}, {} s) of {}; break-glass exceptions are \
                 short-lived, grant a new one when it runs out",
                self.config.exceptions.max_ttl,
                self.config.exception_max_ttl,
                self.config.path.display()
            )));
        }
        let now = self.now();
        let payload = json!({
            "_type": "https://sovra.dev/exception/v1",
            "model": v.model, "digest": v.digest, "gate": gate, "reason": reason,
            "admin": admin.name, "granted_at": now, "expires_at": now.saturating_add(ttl),
        });
        let env =
            Envelope::sign(EXCEPTION_TYPE, payload.to_string().as_bytes(), &key).map_err(|e| bad(e.to_string()))?;
        let rec = SignedRecord {
            id: self.registry.next_id()?,
            kind: "exception".into(),
            model: v.model.clone(),
            digest: v.digest.clone(),
            recorded_at: now,
            fields: payload,
            envelope: serde_json::to_value(&env).unwrap_or(Value::Null),
        };
        let event = AuditEvent {
            kind: "exception".into(),
            subject: format!("{}@{}", v.model, v.digest),
            actor: admin.name.clone(),
            details: json!({"gate": gate, "reason": reason, "expires_at": now.saturating_add(ttl), "record": rec.id}),
        };
        self.registry.commit(&[Registry::record_write(&rec)], event)?;
        Ok(rec)
    }

    /// Counts approvals of (digest, from, to): (valid (approver, record id), reasons for those not counted).
    pub(crate) fn count_approvals(
        &self,
        v: &VersionRecord,
        from: Stage,
        to: Stage,
        extra: &[Envelope],
    ) -> (Vec<(String, Option<u64>)>, Vec<String>) {
        let now = self.now();
        let mut candidates: Vec<(Envelope, Option<u64>)> = Vec::new();
        for r in self.registry.records(&v.model, &v.digest).unwrap_or_default() {
            if r.kind == "approval"
                && let Ok(env) = serde_json::from_value::<Envelope>(r.envelope.clone())
            {
                candidates.push((env, Some(r.id)));
            }
        }
        candidates.extend(extra.iter().cloned().map(|e| (e, None)));
        let mut valid: Vec<(String, Option<u64>)> = Vec::new();
        let mut rejected = Vec::new();
        for (env, id) in candidates {
            let keyid = env.keyid().unwrap_or("").to_string();
            let Some(a) = self.config.approvers.iter().find(|a| a.hint == keyid) else {
                rejected.push(format!("approval by unknown key {}", short(&keyid)));
                continue;
            };
            let payload = match env.verify(APPROVAL_TYPE, &a.key) {
                Ok(p) => p,
                Err(e) => {
                    rejected.push(format!("approval by {}: {e}", a.name));
                    continue;
                }
            };
            let p: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            let (pm, pd, pf, pt) = (p["model"].as_str(), p["digest"].as_str(), p["from"].as_str(), p["to"].as_str());
            if pm != Some(v.model.as_str())
                || pd != Some(v.digest.as_str())
                || pf != Some(from.as_str())
                || pt != Some(to.as_str())
            {
                rejected.push(format!(
                    "approval by {} is for {}@{} {} → {}, not this promotion",
                    a.name,
                    pm.unwrap_or("?"),
                    short(pd.unwrap_or("?")),
                    pf.unwrap_or("?"),
                    pt.unwrap_or("?")
                ));
                continue;
            }
            let (issued, expires) = (p["issued_at"].as_u64().unwrap_or(0), p["expires_at"].as_u64().unwrap_or(0));
            if expires <= now {
                rejected.push(format!("approval by {} expired at {expires}", a.name));
                continue;
            }
            if expires.saturating_sub(issued) > self.config.approval_max_age {
                rejected.push(format!("approval by {} is valid longer than approvals.max_age", a.name));
                continue;
            }
            if valid.iter().any(|(n, _)| *n == a.name) {
                rejected.push(format!("duplicate approval by {}", a.name));
                continue;
            }
            valid.push((a.name.clone(), id));
        }
        (valid, rejected)
    }

    /// Live exceptions of a version: gate → record id.
    pub(crate) fn live_exceptions(&self, v: &VersionRecord) -> BTreeMap<String, u64> {
        let now = self.now();
        let mut out = BTreeMap::new();
        for r in self.registry.records(&v.model, &v.digest).unwrap_or_default() {
            if r.kind != "exception" {
                continue;
            }
            let Ok(env) = serde_json::from_value::<Envelope>(r.envelope.clone()) else { continue };
            let Some(admin) = self.config.admins.iter().find(|a| Some(a.hint.as_str()) == env.keyid()) else {
                continue;
            };
            let Ok(payload) = env.verify(EXCEPTION_TYPE, &admin.key) else { continue };
            let p: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            if p["model"].as_str() == Some(&v.model)
                && p["digest"].as_str() == Some(&v.digest)
                && p["expires_at"].as_u64().is_some_and(|t| t > now)
                && let Some(gate) = p["gate"].as_str()
            {
                out.insert(gate.to_string(), r.id);
            }
        }
        out
    }
}
