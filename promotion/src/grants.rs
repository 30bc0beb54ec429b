//! Approvals and break-glass exceptions: signed, recorded and audited grants that the gates read back.

use crate::payloads;
use crate::service::{APPROVAL_TYPE, EXCEPTION_TYPE, PromoteError, Promoter, Res, bad, short};
use serde_json::{Value, json};
use sovra_domain::datazone::Stage;
use sovra_oms::dsse::Envelope;
use sovra_oms::keys::SigningKey;
use sovra_registry::{AuditEvent, Registry, SignedRecord, VersionRecord};
use std::collections::BTreeMap;
use std::path::Path;

/// How far in the future a grant's `issued_at` / `granted_at` may be (clock skew between a client and the
/// service), seconds.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// The stage an approval into `to` comes from; nothing is promoted (or approved) into training.
pub fn approval_from(to: Stage) -> Res<Stage> {
    match to {
        Stage::Registry => Ok(Stage::Training),
        Stage::Inference => Ok(Stage::Registry),
        Stage::Training => Err(bad("--to training: nothing is promoted into training; use registry or inference")),
    }
}

/// Client side: signs an approval of `model@digest` entering stage `to` with the approver's private key, valid
/// `ttl` seconds from `now`. `approver` is the name the config gives the key (`unknown` if none). Needs no registry:
/// the digest comes from the caller (a local registry, or the service's `Resolve`). Returns the envelope and the
/// payload it signs.
pub fn sign_approval(
    model: &str,
    digest: &str,
    to: Stage,
    approver: &str,
    key: &SigningKey,
    now: u64,
    ttl: u64,
) -> Res<(Envelope, Value)> {
    let payload = approval_payload(model, digest, to, approver, now, ttl)?;
    let env = Envelope::sign(APPROVAL_TYPE, payload.to_string().as_bytes(), key).map_err(|e| bad(e.to_string()))?;
    Ok((env, payload))
}

fn approval_payload(model: &str, digest: &str, to: Stage, approver: &str, now: u64, ttl: u64) -> Res<Value> {
    let from = approval_from(to)?;
    let a = payloads::Approval {
        kind: payloads::APPROVAL_V1.into(),
        model: model.into(),
        digest: digest.into(),
        from: from.to_string(),
        to: to.to_string(),
        approver: approver.into(),
        issued_at: now,
        expires_at: now.saturating_add(ttl),
    };
    Ok(serde_json::to_value(a).unwrap_or(Value::Null))
}

/// Client side: signs a break-glass exception to `gate` for `model@digest` with an admin's private key, lasting
/// `ttl` seconds from `now`. `admin` is the name the config gives the key. Returns the envelope and its payload.
#[allow(clippy::too_many_arguments)]
pub fn sign_exception(
    model: &str,
    digest: &str,
    gate: &str,
    reason: &str,
    admin: &str,
    key: &SigningKey,
    now: u64,
    ttl: u64,
) -> Res<(Envelope, Value)> {
    let payload = serde_json::to_value(payloads::Exception {
        kind: payloads::EXCEPTION_V1.into(),
        model: model.into(),
        digest: digest.into(),
        gate: gate.into(),
        reason: reason.into(),
        admin: admin.into(),
        granted_at: now,
        expires_at: now.saturating_add(ttl),
    })
    .unwrap_or(Value::Null);
    let env = Envelope::sign(EXCEPTION_TYPE, payload.to_string().as_bytes(), key).map_err(|e| bad(e.to_string()))?;
    Ok((env, payload))
}

fn refused(m: impl Into<String>) -> PromoteError {
    PromoteError::Verification(m.into())
}

impl Promoter {
    /// Signs an approval of `model@reference` entering stage `to` with the approver's private key and records it
    /// (unless `record` is false) — local mode, [`sign_approval`] and [`Promoter::record_approval`] in one process.
    /// An approval by a key that is not a configured approver is recorded but never counts. Returns the record (its
    /// envelope is what CI passes around).
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
        approval_from(to)?;
        let key = SigningKey::open(key)?;
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
        let name = approver.clone().unwrap_or_else(|| "unknown".into());
        let (env, fields) = sign_approval(&v.model, &v.digest, to, &name, &key, now, ttl)?;
        match (record, approver) {
            (true, Some(a)) => self.record_approval(&env, &a),
            (true, None) => {
                // Recorded so that the audit log shows the attempt; `count_approvals` never counts it.
                let rec = self.approval_record(&v, &env, fields, now)?;
                let event = AuditEvent {
                    kind: "approval".into(),
                    subject: format!("{}@{}", v.model, v.digest),
                    actor: format!("unknown key {hint}"),
                    details: json!({"from": rec.fields["from"], "to": to,
                                    "expires_at": now.saturating_add(ttl), "record": rec.id}),
                };
                self.registry.commit(&[Registry::record_write(&rec)], event)?;
                Ok(rec)
            }
            (false, _) => self.approval_record(&v, &env, fields, now),
        }
    }

    fn approval_record(&self, v: &VersionRecord, env: &Envelope, fields: Value, now: u64) -> Res<SignedRecord> {
        Ok(SignedRecord {
            id: self.registry.next_id()?,
            kind: "approval".into(),
            model: v.model.clone(),
            digest: v.digest.clone(),
            recorded_at: now,
            fields,
            envelope: serde_json::to_value(env).unwrap_or(Value::Null),
        })
    }

    /// Server side: verifies an approval envelope signed on the client — by a configured approver's key, for a
    /// version in the registry, `from` → `to` one stage, issued no later than now (plus [`CLOCK_SKEW_SECS`]), not
    /// expired, valid no longer than `approvals.max_age`, naming its approver as the config does — and records it.
    /// `actor` (the caller's identity) is the audit entry's actor. Nothing is recorded unless every check passes.
    pub fn record_approval(&self, env: &Envelope, actor: &str) -> Res<SignedRecord> {
        self.check_approval(env, actor).inspect_err(|e| {
            if let PromoteError::Verification(m) = e {
                self.refused_attempt("approval-refused", "approval", m, false);
            }
        })
    }

    fn check_approval(&self, env: &Envelope, actor: &str) -> Res<SignedRecord> {
        let keyid = env.keyid().unwrap_or("").to_string();
        let a = self.config.approvers.iter().find(|a| a.hint == keyid).ok_or_else(|| {
            refused(format!(
                "the approval is signed by key {}, which is not a configured approver of {} (approvers: {})",
                short(&keyid),
                self.config.path.display(),
                self.config.approvers.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let payload = env.verify(APPROVAL_TYPE, &a.key).map_err(|e| refused(format!("approval by {}: {e}", a.name)))?;
        payloads::parse::<payloads::Approval>(&payload, payloads::APPROVAL_V1)
            .map_err(|e| refused(format!("approval by {}: {e}", a.name)))?;
        let p: Value = serde_json::from_slice(&payload)
            .map_err(|e| refused(format!("approval by {}: the payload is not JSON: {e}", a.name)))?;
        let field = |k: &str| p[k].as_str().ok_or_else(|| refused(format!("approval by {}: no `{k}`", a.name)));
        let (model, digest) = (field("model")?, field("digest")?);
        let v = self.registry.version(model, digest)?.ok_or_else(|| {
            bad(format!("the approval is for {model}@{}, which is not in the registry", short(digest)))
        })?;
        let to: Stage = serde_json::from_value(p["to"].clone())
            .map_err(|_| refused(format!("approval by {}: `to` is not a stage", a.name)))?;
        let from = approval_from(to)?;
        if p["from"].as_str() != Some(from.as_str()) {
            return Err(refused(format!("approval by {}: `from` must be {from} for `to` {to}", a.name)));
        }
        if p["_type"].as_str() != Some("https://sovra.dev/approval/v1") || field("approver")? != a.name {
            return Err(refused(format!(
                "approval by {}: not an approval/v1 payload naming approver `{}`",
                a.name, a.name
            )));
        }
        let now = self.now();
        let (issued, expires) = (p["issued_at"].as_u64().unwrap_or(u64::MAX), p["expires_at"].as_u64().unwrap_or(0));
        if issued > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(refused(format!("approval by {}: issued at {issued}, in the future (now {now})", a.name)));
        }
        if expires <= now || expires <= issued {
            return Err(refused(format!("approval by {} expired at {expires} (now {now})", a.name)));
        }
        if expires - issued > self.config.approval_max_age {
            return Err(bad(format!(
                "approval by {}: valid {} s, longer than approvals.max_age ({}) of {}",
                a.name,
                expires - issued,
                self.config.approvals.max_age,
                self.config.path.display()
            )));
        }
        let rec = self.approval_record(&v, env, p.clone(), now)?;
        let event = AuditEvent {
            kind: "approval".into(),
            subject: format!("{}@{}", v.model, v.digest),
            actor: actor.to_string(),
            details: json!({"approver": a.name, "from": from, "to": to, "expires_at": expires, "record": rec.id}),
        };
        self.registry.commit(&[Registry::record_write(&rec)], event)?;
        Ok(rec)
    }

    /// Grants a break-glass exception to one gate for one model version, signed by an admin key; it expires by
    /// itself after `ttl` seconds — local mode, [`sign_exception`] and [`Promoter::record_exception`] in one
    /// process.
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
        let (key, admin) = self.admin_key(admin_key, "only an admin may grant an exception")?;
        self.check_exception(gate, reason, ttl)?;
        let (env, _) = sign_exception(&v.model, &v.digest, gate, reason, &admin.name, &key, self.now(), ttl)?;
        self.record_exception(&env, &admin.name)
    }

    /// Local mode: the admin's private key at `path` and the admin the config names it; `why` ends the error when
    /// the key is not an admin's.
    pub(crate) fn admin_key(&self, path: &Path, why: &str) -> Res<(SigningKey, &crate::config::Identity)> {
        let key = SigningKey::open(path)?;
        let hint = key.public_key().hint();
        let admin = self.config.admins.iter().find(|a| a.hint == hint).ok_or_else(|| {
            bad(format!(
                "{}: not an admin key (admins in {}: {}); {why}",
                path.display(),
                self.config.path.display(),
                self.config.admins.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        Ok((key, admin))
    }

    /// The checks an exception must pass before it is signed (local mode) and again when it is recorded: a known
    /// gate, a reason, a positive TTL no longer than `exceptions.max_ttl`.
    fn check_exception(&self, gate: &str, reason: &str, ttl: u64) -> Res<()> {
        if crate::gates::is_built_in(gate) {
            return Err(bad(format!(
                "--gate `{gate}`: the {gate} check is built into the promotion service and no exception waives it \
                 (exceptions cover policy gates only: {})",
                self.gates.names().join(", ")
            )));
        }
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
        Ok(())
    }

    /// Server side: verifies an exception envelope signed on the client — by a configured admin's key, for a
    /// version in the registry, naming a known gate, the admin as the config names it and a reason, granted no
    /// later than now (plus [`CLOCK_SKEW_SECS`]), not expired, lasting no longer than `exceptions.max_ttl` — and
    /// records it. `actor` (the caller's identity) is the audit entry's actor.
    pub fn record_exception(&self, env: &Envelope, actor: &str) -> Res<SignedRecord> {
        self.verify_and_record_exception(env, actor).inspect_err(|e| {
            if let PromoteError::Verification(m) = e {
                self.refused_attempt("exception-refused", "exception", m, false);
            }
        })
    }

    fn verify_and_record_exception(&self, env: &Envelope, actor: &str) -> Res<SignedRecord> {
        let keyid = env.keyid().unwrap_or("").to_string();
        let admin = self.config.admins.iter().find(|a| a.hint == keyid).ok_or_else(|| {
            refused(format!(
                "the exception is signed by key {}, which is not an admin key of {} (admins: {})",
                short(&keyid),
                self.config.path.display(),
                self.config.admins.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let payload =
            env.verify(EXCEPTION_TYPE, &admin.key).map_err(|e| refused(format!("exception by {}: {e}", admin.name)))?;
        payloads::parse::<payloads::Exception>(&payload, payloads::EXCEPTION_V1)
            .map_err(|e| refused(format!("exception by {}: {e}", admin.name)))?;
        let p: Value = serde_json::from_slice(&payload)
            .map_err(|e| refused(format!("exception by {}: the payload is not JSON: {e}", admin.name)))?;
        let field = |k: &str| p[k].as_str().ok_or_else(|| refused(format!("exception by {}: no `{k}`", admin.name)));
        let (model, digest, gate, reason) = (field("model")?, field("digest")?, field("gate")?, field("reason")?);
        if p["_type"].as_str() != Some("https://sovra.dev/exception/v1") || field("admin")? != admin.name {
            return Err(refused(format!(
                "exception by {}: not an exception/v1 payload naming admin `{}`",
                admin.name, admin.name
            )));
        }
        let v = self.registry.version(model, digest)?.ok_or_else(|| {
            bad(format!("the exception is for {model}@{}, which is not in the registry", short(digest)))
        })?;
        let now = self.now();
        let (granted, expires) = (p["granted_at"].as_u64().unwrap_or(u64::MAX), p["expires_at"].as_u64().unwrap_or(0));
        if granted > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(refused(format!("exception by {}: granted at {granted}, in the future", admin.name)));
        }
        if expires <= now || expires <= granted {
            return Err(refused(format!("exception by {} expired at {expires} (now {now})", admin.name)));
        }
        self.check_exception(gate, reason, expires - granted)?;
        let rec = SignedRecord {
            id: self.registry.next_id()?,
            kind: "exception".into(),
            model: v.model.clone(),
            digest: v.digest.clone(),
            recorded_at: now,
            fields: p.clone(),
            envelope: serde_json::to_value(env).unwrap_or(Value::Null),
        };
        let event = AuditEvent {
            kind: "exception".into(),
            subject: format!("{}@{}", v.model, v.digest),
            actor: actor.to_string(),
            details: json!({"admin": admin.name, "gate": gate, "reason": reason, "expires_at": expires,
                            "record": rec.id}),
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
        let since = self.granted_since(v);
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
            if let Err(e) = payloads::parse::<payloads::Approval>(&payload, payloads::APPROVAL_V1) {
                rejected.push(format!("approval by {}: {e}", a.name));
                continue;
            }
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
            if issued < since {
                rejected.push(format!(
                    "approval by {} was issued at {issued}, before the version's withdrawal at {since}; approve again",
                    a.name
                ));
                continue;
            }
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
        let since = self.granted_since(v);
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
            if payloads::parse::<payloads::Exception>(&payload, payloads::EXCEPTION_V1).is_err() {
                continue;
            }
            let p: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            if p["model"].as_str() == Some(&v.model)
                && p["digest"].as_str() == Some(&v.digest)
                && p["expires_at"].as_u64().is_some_and(|t| t > now)
                && p["granted_at"].as_u64().is_some_and(|t| t >= since)
                && let Some(gate) = p["gate"].as_str()
                && !crate::gates::is_built_in(gate)
            {
                out.insert(gate.to_string(), r.id);
            }
        }
        out
    }
}
