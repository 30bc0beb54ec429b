//! Break-glass for placement (docs/receipts.md, "Break-glass for placement"): a placement exception is one DSSE
//! envelope over a payload naming one job, one zone, the one requirement of the job's class it waives there, a
//! reason and a time box, signed by N of the M approvers the `--break-glass` file names. The writer grants it
//! ([`Writer::grant_exception`]) only when every check passes, audits the grant with the envelope, and ends it at
//! expiry ([`Writer::expire_exceptions`]), requeueing a job that only it permitted.
//!
//! Times are the scheduler's clock: an exception dated more than [`CLOCK_SKEW_SECS`] ahead of it is refused (a
//! skewed approver clock cannot stretch the window), and expiry is judged by the scheduler alone.

use super::apply::Changes;
use super::writer::{Outcome, Writer};
use serde::Deserialize;
use serde_json::json;
use sovra_audit::AuditEvent;
use sovra_domain::Waiver;
use sovra_engine::JobId;
use sovra_oms::dsse::Envelope;
use sovra_oms::keys::PublicKey;
use std::path::Path;
use tonic::Status;

/// The DSSE payload type of a placement exception.
pub const EXCEPTION_TYPE: &str = "application/vnd.sovra.placement-exception+json";
/// The `_type` of its payload.
pub const EXCEPTION_V1: &str = "https://sovra.dev/placement-exception/v1";
/// The audit event kind of a granted (or ended) exception.
pub const EXCEPTION_KIND: &str = "placement-exception";
/// How far ahead of the scheduler's clock an exception's `notBefore` may be, seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// The `--break-glass` file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakGlassFile {
    approvers: Vec<ApproverFile>,
    required: usize,
    #[serde(default = "default_max_hours")]
    max_hours: u64,
}

fn default_max_hours() -> u64 {
    72
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproverFile {
    name: String,
    public_key: std::path::PathBuf,
}

/// Who may grant placement exceptions, and how long one may last (the `--break-glass` file).
#[derive(Debug, Clone)]
pub struct BreakGlass {
    /// The approvers: name and public key.
    pub approvers: Vec<(String, PublicKey)>,
    /// How many distinct approvers must sign one exception.
    pub required: usize,
    /// The longest window one exception may have, seconds.
    pub max_secs: u64,
}

impl BreakGlass {
    /// Loads the file: `approvers` (name, `public_key` PEM path relative to the file), `required` (N of M) and
    /// `max_hours` (default 72). Errors name the field.
    pub fn load(path: &Path) -> Result<BreakGlass, String> {
        let flag = format!("--break-glass {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| format!("{flag}: {e}"))?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let f: BreakGlassFile = serde_path_to_error::deserialize(de).map_err(|e| format!("{flag}: {e}"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut approvers: Vec<(String, PublicKey)> = Vec::new();
        for (i, a) in f.approvers.iter().enumerate() {
            if a.name.trim().is_empty() {
                return Err(format!("{flag}: approvers[{i}].name is empty; name the approver"));
            }
            if approvers.iter().any(|(n, _)| n == &a.name) {
                return Err(format!("{flag}: approvers[{i}].name {:?} is listed twice", a.name));
            }
            let p = dir.join(&a.public_key);
            let key = PublicKey::from_pem_file(&p)
                .map_err(|e| format!("{flag}: approvers[{i}].public_key {}: {e}", p.display()))?;
            if approvers.iter().any(|(_, k)| k == &key) {
                return Err(format!("{flag}: approvers[{i}].public_key is the key of another approver"));
            }
            approvers.push((a.name.clone(), key));
        }
        if f.required < 2 || f.required > approvers.len() {
            return Err(format!(
                "{flag}: required is {}; it must be at least 2 and at most the {} approvers listed (N of M)",
                f.required,
                approvers.len()
            ));
        }
        if f.max_hours == 0 || f.max_hours > 24 * 30 {
            return Err(format!("{flag}: max_hours is {}; give 1 to 720", f.max_hours));
        }
        Ok(BreakGlass { approvers, required: f.required, max_secs: f.max_hours * 3600 })
    }
}

/// A placement exception's payload, as approvers sign it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExceptionPayload {
    /// [`EXCEPTION_V1`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The job's id.
    pub job: u64,
    /// The zone it may run in.
    pub zone: String,
    /// The one requirement waived there (`certification:HDS`, `country`, `operator_hq`, `jurisdiction`, `zone`).
    pub requirement: String,
    /// Why (shown in every receipt of the job).
    pub reason: String,
    /// Start of the window (Unix seconds).
    pub not_before: u64,
    /// End of the window (Unix seconds).
    pub expires_at: u64,
}

/// The checks that need no engine: the payload, the signatures (N of M) and the time box. Returns the payload,
/// the approvers who signed and the exception's id.
pub fn check(env: &Envelope, bg: &BreakGlass, now_s: u64) -> Result<(ExceptionPayload, Vec<String>, String), String> {
    let signers =
        sovra_oms::multisig::verify_all(env, EXCEPTION_TYPE, &bg.approvers).map_err(|e| format!("envelope: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&signers.payload).map_err(|e| format!("payload: not JSON: {e}"))?;
    let p: ExceptionPayload = serde_path_to_error::deserialize(doc.clone()).map_err(|e| format!("payload: {e}"))?;
    if p.type_ != EXCEPTION_V1 {
        return Err(format!("payload._type is {:?}, expected {EXCEPTION_V1:?}", p.type_));
    }
    if p.reason.trim().is_empty() {
        return Err("payload.reason is empty; an exception states why".into());
    }
    if signers.valid.len() < bg.required {
        let who = if signers.valid.is_empty() { "none".to_string() } else { signers.valid.join(", ") };
        let extra =
            if signers.rejected.is_empty() { String::new() } else { format!("; {}", signers.rejected.join("; ")) };
        return Err(format!(
            "signatures: {} of the {} configured approvers must sign; valid: {who}{extra}",
            bg.required,
            bg.approvers.len()
        ));
    }
    if p.not_before > now_s + CLOCK_SKEW_SECS {
        return Err(format!(
            "payload.notBefore is {} s ahead of the scheduler's clock (more than the {CLOCK_SKEW_SECS} s of skew \
             allowed); sign it with a correct clock",
            p.not_before - now_s
        ));
    }
    if p.expires_at <= now_s {
        return Err(format!("payload.expiresAt: the exception expired {} s ago", now_s - p.expires_at));
    }
    if p.expires_at <= p.not_before || p.expires_at - p.not_before > bg.max_secs {
        return Err(format!(
            "payload.expiresAt: the window must be positive and at most {} h (max_hours of --break-glass)",
            bg.max_secs / 3600
        ));
    }
    let id = sovra_audit::digest_of(&doc)?;
    Ok((p, signers.valid, id[..16].to_string()))
}

impl Writer {
    /// Records a refused attempt to move work or models across a border (docs/receipts.md, "Chaos suite"): an
    /// event, the `sovra_sovereignty_refusals_total{attempt}` counter, and an entry in the audit log.
    pub(crate) fn refused_attempt(&self, ch: &mut Changes, attempt: &str, subject: &str, why: &str) {
        ch.events.push(format!("REFUSED {attempt}: {subject}: {why}"));
        self.metrics.refusal(attempt);
        let details = json!({"attempt": attempt, "reason": why});
        ch.audit.push((
            None,
            AuditEvent { kind: "refusal".into(), subject: subject.into(), actor: "scheduler".into(), details },
        ));
    }

    /// Grants a placement exception: the checks of [`check`], then that the job exists and is not finished, and
    /// that the zone fails the job's class in exactly the requirement waived. Refusals are audited.
    pub(crate) fn grant_exception(&mut self, env: &Envelope, ch: &mut Changes) -> Result<Outcome, Status> {
        let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let refuse = |w: &Writer, ch: &mut Changes, subject: &str, why: String| {
            w.refused_attempt(ch, "placement-exception", subject, &why);
            Err(Status::failed_precondition(format!("placement exception refused: {why}")))
        };
        let Some(bg) = self.opts.break_glass.clone() else {
            return Err(Status::failed_precondition(
                "placement exceptions are not configured: start the scheduler with --break-glass FILE (approvers, \
                 required) to accept them",
            ));
        };
        let (p, approvers, id) = match check(env, &bg, now_s) {
            Ok(x) => x,
            Err(why) => return refuse(self, ch, "exception", why),
        };
        let subject = format!("job {}", p.job);
        let job = JobId::from(p.job);
        let Some(r) = self.engine.job(job) else {
            return Err(Status::not_found(format!("payload.job: no job {}; `sovra jobs` lists the jobs", p.job)));
        };
        let class_name = r.job.residency.clone();
        let (Some(class), Some(zone)) = (self.base.class(&class_name), self.base.zone(&p.zone)) else {
            return refuse(self, ch, &subject, format!("payload.zone: no zone {:?} in the cluster file", p.zone));
        };
        let failed = class.violations(zone);
        if failed.is_empty() {
            return refuse(
                self,
                ch,
                &subject,
                format!("zone {} satisfies class {class_name}: nothing to waive", p.zone),
            );
        }
        if failed.len() > 1 || failed[0].requirement != p.requirement {
            let list: Vec<String> = failed.iter().map(|v| format!("{} ({})", v.requirement, v.message)).collect();
            return refuse(
                self,
                ch,
                &subject,
                format!(
                    "payload.requirement: zone {} fails class {class_name} in [{}]; an exception waives exactly one \
                     requirement, and {:?} is not the only one failed",
                    p.zone,
                    list.join(", "),
                    p.requirement
                ),
            );
        }
        let waiver = Waiver {
            id: id.clone(),
            zone: p.zone.clone(),
            requirement: p.requirement.clone(),
            reason: p.reason.clone(),
            approvers: approvers.clone(),
            expires_at_ms: p.expires_at.saturating_mul(1000),
        };
        self.engine.grant_exception(job, waiver).map_err(|e| Status::failed_precondition(e.to_string()))?;
        ch.events.push(format!(
            "job {job}: placement exception {id} granted by {}: it may run in zone {} without {} until {} ({})",
            approvers.join(", "),
            p.zone,
            p.requirement,
            p.expires_at,
            p.reason
        ));
        let details = json!({"event": "granted", "id": id, "job": p.job, "zone": p.zone, "requirement": p.requirement,
                             "approvers": approvers, "expiresAt": p.expires_at, "envelope": env});
        ch.audit.push((
            Some(job),
            AuditEvent { kind: EXCEPTION_KIND.into(), subject, actor: approvers.join(","), details },
        ));
        ch.jobs.insert(job);
        ch.cycle = true;
        Ok(Outcome::Job(job))
    }

    /// Ends the exceptions that expired: each is audited, and a job placed only by its exception is stopped and
    /// requeued.
    pub(crate) fn expire_exceptions(&mut self, ch: &mut Changes) {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if self.engine.next_exception_expiry().is_none_or(|t| t > now_ms) {
            return;
        }
        let (released, ended) = self.engine.expire_exceptions(now_ms);
        for (id, why) in &released {
            ch.events.push(format!("job {id}: {why}: its replicas there are stopped and it is requeued"));
            self.stop_why.insert(*id, why.clone());
        }
        for (id, w) in ended {
            let requeued = released.iter().any(|(r, _)| *r == id);
            let details = json!({"event": "expired", "id": w.id, "job": id, "zone": w.zone,
                                 "requirement": w.requirement, "requeued": requeued});
            ch.audit.push((
                Some(id),
                AuditEvent {
                    kind: EXCEPTION_KIND.into(),
                    subject: format!("job {id}"),
                    actor: "scheduler".into(),
                    details,
                },
            ));
            ch.jobs.insert(id);
            ch.cycle = true;
        }
    }
}
