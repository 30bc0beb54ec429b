//! Signed placement receipts (docs/receipts.md).
//!
//! For every replica placed and every replica whose placement ends (succeeded, failed, cancelled, preempted, lost,
//! requeued), the writer signs an in-toto statement (predicate [`RECEIPT_PREDICATE`]) in a DSSE envelope with the
//! scheduler's receipt key, and appends it to the scheduler's hash-chained audit log in the same group commit as
//! the job record it describes: a receipt exists exactly when the change it proves is durable.
//!
//! The statement records the job, replica and attempt, the node (its certificate CN: the scheduler accepts reports
//! from a node only over mutual TLS with a certificate naming it), pool and zone with the zone's definition and
//! digest, the residency class with its definition and digest, whether the zone satisfied the class, the digest
//! of the legal policy in force (zones, pools and classes of the cluster file) and the start and end times. Digests
//! are SHA-256 of the RFC 8785 canonical JSON of the definition, so that a verifier recomputes them in any
//! language (tests/evidence_verify.py).
//!
//! Receipts are derived by comparing each changed job record with what was last receipted for it ([`Held`]):
//! a new attempt is a placement (ending the previous one first), a record that no longer holds resources is an
//! end. Nothing else in the writer has to remember to emit them.

use serde_json::{Value, json};
use sovra_audit::{AuditEntry, AuditEvent, AuditHead};
use sovra_domain::ClusterConfig;
use sovra_engine::{Engine, JobId, JobRecord, JobState};
use sovra_oms::dsse::Envelope;
use sovra_oms::keys::SigningKey;
use sovra_placement::{Decision, ReplicaPlacement};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use sovra_audit::receipt::{
    CHECKPOINT_TYPE, CHECKPOINT_V1, DOC_V1 as RECEIPTS_DOC_V1, KIND as RECEIPT_KIND, PREDICATE as RECEIPT_PREDICATE,
    STATEMENT_TYPE,
};

/// What was last receipted for a job that holds resources.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    attempt: u64,
    decision: Decision,
    since_ms: u64,
    preemptions: u32,
    losses: u32,
    /// The placement exception the job held when placed (its end receipt carries it too).
    exception: Option<sovra_domain::Waiver>,
}

/// The writer's receipt state: the key, the audit head and what each placed job was last receipted as.
pub(crate) struct Receipts {
    key: Arc<SigningKey>,
    head: AuditHead,
    held: BTreeMap<JobId, Held>,
}

/// A round's receipts: the audit entries to write and how [`Receipts`] changes once they are durable.
#[derive(Default)]
pub(crate) struct Pending {
    /// The entries, chained after the current head, with their job.
    pub entries: Vec<(Option<JobId>, AuditEntry)>,
    updates: Vec<(JobId, Option<Held>)>,
}

fn held_of(r: &JobRecord, since_ms: u64) -> Option<Held> {
    let decision = r.placement.clone().filter(|_| r.state.holds_resources())?;
    Some(Held {
        attempt: r.attempt,
        decision,
        since_ms,
        preemptions: r.preemptions,
        losses: r.losses,
        exception: r.job.exception.clone(),
    })
}

impl Receipts {
    /// The receipt state of a writer starting over `engine`: jobs holding resources were receipted before (their
    /// start time is their last receipt's, read from the store's log by `started`).
    pub fn new(key: Arc<SigningKey>, head: AuditHead, engine: &Engine, started: impl Fn(JobId) -> u64) -> Receipts {
        let held = engine.jobs().filter_map(|r| Some((r.id, held_of(r, started(r.id))?))).collect();
        Receipts { key, head, held }
    }

    /// The scheduler's receipt key.
    pub fn key(&self) -> &Arc<SigningKey> {
        &self.key
    }

    /// The round's audit entries, chained after the head: first `notes` (refused attempts, granted exceptions:
    /// events the writer audits as they are), then the receipts for the jobs the round changed (in id order).
    /// Nothing changes until [`Receipts::commit_written`].
    pub fn round(
        &self,
        engine: &Engine,
        cluster: &ClusterConfig,
        ids: impl IntoIterator<Item = JobId>,
        notes: &[(Option<JobId>, AuditEvent)],
        now_ms: u64,
    ) -> Result<Pending, String> {
        let mut ids: Vec<JobId> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Pending::default();
        let mut head = self.head.clone();
        for (job, ev) in notes {
            let entry = sovra_audit::next_entry_at(&head, ev.clone(), now_ms / 1000).map_err(|e| e.to_string())?;
            head = AuditHead::after(&entry);
            out.entries.push((*job, entry));
        }
        // Most rounds change no placement: the policy digest is computed only for one that does.
        let changed = |id: &JobId| {
            let now = engine
                .job(*id)
                .and_then(|r| r.placement.as_ref().filter(|_| r.state.holds_resources()).map(|_| r.attempt));
            self.held.get(id).map(|h| h.attempt) != now
        };
        ids.retain(changed);
        if ids.is_empty() {
            return Ok(out);
        }
        let policy = policy_digest(cluster)?;
        let mut push = |job: JobId, statement: Value, event: &str| -> Result<(), String> {
            let env = Envelope::sign(STATEMENT_TYPE, statement.to_string().as_bytes(), &self.key)
                .map_err(|e| format!("signing a receipt: {e}"))?;
            let p = &statement["predicate"];
            let ev = AuditEvent {
                kind: RECEIPT_KIND.into(),
                subject: format!("job {job} replica {}", p["replica"]),
                actor: "scheduler".into(),
                details: json!({"job": job, "replica": p["replica"], "attempt": p["attempt"], "event": event,
                                "zone": p["zone"]["id"], "started": p["startedAt"], "envelope": env}),
            };
            let entry = sovra_audit::next_entry_at(&head, ev, now_ms / 1000).map_err(|e| e.to_string())?;
            head = AuditHead::after(&entry);
            out.entries.push((Some(job), entry));
            Ok(())
        };
        for id in ids {
            let before = self.held.get(&id);
            let after = engine.job(id);
            let now_holds = after.and_then(|r| held_of(r, now_ms));
            let same = matches!((before, &now_holds), (Some(b), Some(a)) if b.attempt == a.attempt);
            if same {
                continue;
            }
            if let Some(b) = before {
                let outcome = match after {
                    Some(r) => end_outcome(b, r),
                    None => "archived",
                };
                let job = after.map(|r| &r.job);
                for rp in &b.decision.replicas {
                    let st = statement(id, job, b, rp, cluster, &policy, ("ended", Some(outcome)), Some(now_ms))?;
                    push(id, st, "ended")?;
                }
            }
            if let (Some(r), Some(a)) = (after, &now_holds) {
                for rp in &a.decision.replicas {
                    let st = statement(id, Some(&r.job), a, rp, cluster, &policy, ("placed", None), None)?;
                    push(id, st, "placed")?;
                }
            }
            if before.is_some() || now_holds.is_some() {
                out.updates.push((id, now_holds));
            }
        }
        Ok(out)
    }

    /// Takes a round's receipts as written (`entries`: those the batch carried).
    pub fn commit_written(&mut self, p: Pending, entries: &[(Option<JobId>, AuditEntry)]) {
        if let Some((_, last)) = entries.last() {
            self.head = AuditHead::after(last);
        }
        for (id, h) in p.updates {
            match h {
                Some(h) => self.held.insert(id, h),
                None => self.held.remove(&id),
            };
        }
    }
}

/// How a receipted placement ended, from the job's record now.
fn end_outcome(before: &Held, r: &JobRecord) -> &'static str {
    match r.state {
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
        JobState::Lost => "lost",
        _ if r.preemptions > before.preemptions => "preempted",
        _ if r.losses > before.losses => "lost",
        _ => "requeued",
    }
}

/// The digest of the legal policy in force: the cluster file's zones, pools and residency classes.
pub fn policy_digest(cluster: &ClusterConfig) -> Result<String, String> {
    sovra_audit::digest_of(&json!({
        "zones": cluster.zones,
        "pools": cluster.pools,
        "residency_classes": cluster.residency_classes,
    }))
}

/// One receipt statement.
#[allow(clippy::too_many_arguments)]
fn statement(
    id: JobId,
    job: Option<&sovra_domain::Job>,
    held: &Held,
    rp: &ReplicaPlacement,
    cluster: &ClusterConfig,
    policy: &str,
    (event, outcome): (&str, Option<&str>),
    end_ms: Option<u64>,
) -> Result<Value, String> {
    let class_name = job.map(|j| j.residency.as_str()).unwrap_or_default();
    let class = cluster.class(class_name);
    let zone = cluster.zone(&rp.zone);
    let violations: Vec<String> = match (class, zone) {
        (Some(c), Some(z)) => c.violations(z).into_iter().map(|v| v.message).collect(),
        (None, _) => vec![format!("residency class {class_name} is not in the cluster file")],
        (_, None) => vec![format!("zone {} is not in the cluster file", rp.zone)],
    };
    let digest = |v: Option<Value>| v.map(|v| sovra_audit::digest_of(&v)).transpose();
    let class_doc = class.map(|c| serde_json::to_value(c).unwrap_or(Value::Null));
    let zone_doc = zone.map(|z| serde_json::to_value(z).unwrap_or(Value::Null));
    let name = job.map(|j| j.name.clone()).unwrap_or_else(|| held.decision.job.clone());
    let spec = job.map(sovra_engine::spec_digest).unwrap_or_default();
    let start = held.since_ms;
    Ok(json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("sovra-job/{id}/replica/{}", rp.replica), "digest": {"sha256": spec}}],
        "predicateType": RECEIPT_PREDICATE,
        "predicate": {
            "event": event,
            "outcome": outcome,
            "job": id,
            "jobName": name,
            "kind": job.map(|j| serde_json::to_value(j.kind).unwrap_or(Value::Null)),
            "replica": rp.replica,
            "replicas": held.decision.replicas.len(),
            "attempt": held.attempt,
            "node": rp.node_name,
            "pool": rp.pool,
            "zone": {"id": rp.zone, "definition": zone_doc.clone(), "digest": digest(zone_doc)?},
            "devices": rp.devices.iter().map(|d| json!({"device": d.device, "milli": d.milli})).collect::<Vec<_>>(),
            "residencyClass": {"name": class_name, "definition": class_doc.clone(), "digest": digest(class_doc)?},
            "satisfiesClass": violations.is_empty(),
            "underException": held.exception.as_ref().map(|w| json!({
                "id": w.id, "zone": w.zone, "requirement": w.requirement, "reason": w.reason,
                "approvers": w.approvers, "expiresAt": w.expires_at_ms / 1000,
            })),
            "violations": violations,
            "policyDigest": policy,
            "startedAt": start,
            "endedAt": end_ms,
        },
    }))
}

/// When a job's current placement started: the `started` of its last receipt in `store`'s log (0 when unknown).
/// The job's other entries (its placement exceptions) are skipped.
pub(crate) fn started_at(store: &dyn crate::store::Store, id: JobId) -> u64 {
    let positions = store.job_audit(id).unwrap_or_default();
    for &at in positions.iter().rev() {
        let entry = store.audit_entries(at, 1).ok().and_then(|mut v| v.pop());
        if let Some(e) = entry.filter(|e| e.event.kind == RECEIPT_KIND) {
            return e.event.details["started"].as_u64().unwrap_or(0);
        }
    }
    0
}

/// A signed checkpoint of the audit head: what the scheduler's log held when a proof was made.
pub fn checkpoint(key: &SigningKey, head: &AuditHead, now_ms: u64) -> Result<Envelope, String> {
    let doc = json!({"_type": CHECKPOINT_V1, "log": "sovra-scheduler", "count": head.count, "hash": head.hash,
                     "time": now_ms / 1000});
    Envelope::sign(CHECKPOINT_TYPE, doc.to_string().as_bytes(), key).map_err(|e| format!("signing the checkpoint: {e}"))
}

/// Most entries one receipts document's chain proof holds (the log from the job's first receipt to the head).
pub const MAX_PROOF_ENTRIES: u64 = 200_000;

/// The receipts document of job `id` (docs/receipts.md): its receipts, the log from its first receipt to the head
/// and the head signed now. `Ok(None)` when the job has no receipt.
pub(crate) fn document(
    store: &dyn crate::store::Store,
    key: &SigningKey,
    id: JobId,
    now_ms: u64,
) -> Result<Option<Value>, String> {
    let head = store.audit_head().map_err(|e| e.to_string())?;
    let positions = store.job_audit(id).map_err(|e| e.to_string())?;
    let Some(&first) = positions.first() else { return Ok(None) };
    let span = head.count.saturating_sub(first);
    if span > MAX_PROOF_ENTRIES {
        return Err(format!(
            "job {id}'s first receipt is {span} entries before the head, more than a proof holds ({MAX_PROOF_ENTRIES}); \
             export the whole log with `sovra audit export --scheduler`"
        ));
    }
    let segment = store.audit_entries(first, span as usize).map_err(|e| e.to_string())?;
    sovra_audit::verify_segment(&segment, &head).map_err(|e| format!("the scheduler's audit log is damaged: {e}"))?;
    let receipts: Vec<Value> = segment
        .iter()
        .filter(|e| e.event.kind == RECEIPT_KIND && e.event.details["job"].as_u64() == Some(id))
        .map(|e| json!({"seq": e.seq, "event": e.event.details["event"], "envelope": e.event.details["envelope"]}))
        .collect();
    let cp = checkpoint(key, &head, now_ms)?;
    Ok(Some(json!({
        "_type": RECEIPTS_DOC_V1,
        "job": id,
        "receipts": receipts,
        "chain": {"entries": segment, "head": head, "checkpoint": cp},
        "key": {"hint": key.public_key().hint(), "publicKeyPem": key.public_key().to_pem()},
    })))
}

/// The receipt key file's name under `--data`.
pub const KEY_FILE: &str = "receipt-key.pem";
/// Its public half, written beside it.
pub const PUBLIC_KEY_FILE: &str = "receipt-key.pub.pem";

/// The receipt key: `path` when given (it must exist); else `DATA/receipt-key.pem`, created (mode 0600, with its
/// public half beside it) when missing; else `None` (a key for this process only).
pub fn load_key(
    path: Option<&std::path::Path>,
    data: Option<&std::path::Path>,
) -> Result<Option<Arc<SigningKey>>, String> {
    let load = |p: &std::path::Path, flag: &str| {
        SigningKey::open(p).map(Arc::new).map_err(|e| format!("{flag} {}: {e}", p.display()))
    };
    if let Some(p) = path {
        return load(p, "--receipt-key").map(Some);
    }
    let Some(dir) = data else { return Ok(None) };
    let file = dir.join(KEY_FILE);
    if !file.exists() {
        let (private, public) =
            sovra_oms::keys::generate_p256().map_err(|e| format!("generating the receipt key: {e}"))?;
        std::fs::create_dir_all(dir).map_err(|e| format!("--data {}: {e}", dir.display()))?;
        write_private(&file, &private).map_err(|e| format!("writing {}: {e}", file.display()))?;
        let pub_file = dir.join(PUBLIC_KEY_FILE);
        std::fs::write(&pub_file, public).map_err(|e| format!("writing {}: {e}", pub_file.display()))?;
        tracing::info!(key = %file.display(), public = %pub_file.display(), "receipt key created");
    }
    load(&file, "--data").map(Some)
}

fn write_private(path: &std::path::Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()
}
