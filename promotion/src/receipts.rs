//! Training provenance proven by the scheduler: a job's receipts document (docs/receipts.md), checked against the
//! scheduler keys of the promotion config (`provenance.scheduler_keys`).
//!
//! What [`verify`] checks, in order, and refuses on the first failure of each receipt:
//! 1. the chain proof: the entries link and hash (format 2, RFC 8785) and end in `chain.head`, and the head is
//!    signed (`chain.checkpoint`) by a trusted scheduler key;
//! 2. every receipt is an entry of that chain, signed by the same trusted key, an in-toto statement of predicate
//!    `https://sovra.dev/placement-receipt/v1` about the document's job;
//! 3. no receipt of the job is left out: every receipt entry of the job in the chain is in the document (the chain
//!    starts at the job's first receipt, so a hidden replica or attempt would show).
//!
//! What the receipts then say — the zones every replica of every attempt ran in, whether the job succeeded — is
//! judged by the `training_zone` gate against the promotion service's own cluster file and permitted training
//! zones, never against the scheduler's `satisfiesClass`.

use crate::config::Identity;
use serde::Deserialize;
use serde_json::Value;
use sovra_audit::{AuditEntry, AuditHead};
use sovra_oms::dsse::Envelope;
use std::collections::{BTreeMap, BTreeSet};

pub use sovra_audit::receipt::{
    CHECKPOINT_TYPE, DOC_V1 as RECEIPTS_DOC_V1, KIND as RECEIPT_KIND, PREDICATE as RECEIPT_PREDICATE, STATEMENT_TYPE,
};

/// A receipts document as `sovra job receipts -o json` prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceiptsDoc {
    /// [`RECEIPTS_DOC_V1`].
    #[serde(rename = "_type")]
    pub kind: String,
    /// The job.
    pub job: u64,
    /// Its receipts, in log order.
    pub receipts: Vec<ReceiptRef>,
    /// The proof.
    pub chain: Chain,
}

/// One receipt and where it sits in the log.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceiptRef {
    /// Its position in the scheduler's audit log.
    pub seq: u64,
    /// The signed statement.
    pub envelope: Envelope,
}

/// The chain proof: the log from the job's first receipt to the head, and the head signed.
#[derive(Debug, Clone, Deserialize)]
pub struct Chain {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The head they end in.
    pub head: AuditHead,
    /// The head, signed by the scheduler.
    pub checkpoint: Envelope,
}

/// Parses a receipts document; the error names the field.
pub fn parse(v: &Value) -> Result<ReceiptsDoc, String> {
    let doc: ReceiptsDoc =
        serde_path_to_error::deserialize(v).map_err(|e| format!("receipts: field `{}`: {}", e.path(), e.inner()))?;
    if doc.kind != RECEIPTS_DOC_V1 {
        return Err(format!("receipts: field `_type`: `{}`, expected `{RECEIPTS_DOC_V1}`", doc.kind));
    }
    Ok(doc)
}

/// The zones the document's `placed` receipts name, unverified (the push's default data zone when they name one).
pub fn placed_zones(doc: &ReceiptsDoc) -> BTreeSet<String> {
    use base64::Engine as _;
    let b64 = &base64::engine::general_purpose::STANDARD;
    doc.receipts
        .iter()
        .filter_map(|r| b64.decode(&r.envelope.payload).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|st| st["predicate"]["event"] == "placed")
        .filter_map(|st| st["predicate"]["zone"]["id"].as_str().map(str::to_string))
        .collect()
}

/// Where one replica of one attempt ran, as its receipts say.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReplicaRun {
    /// Attempt (each placement of the job is one).
    pub attempt: u64,
    /// Replica index.
    pub replica: u64,
    /// Node (certificate CN).
    pub node: String,
    /// Zone.
    pub zone: String,
    /// How it ended (`succeeded`, `failed`, `preempted`, …); `None` while it runs.
    pub outcome: Option<String>,
}

/// What verified receipts prove.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verified {
    /// The training job.
    pub job: u64,
    /// The scheduler key that signed them (its configured name).
    pub scheduler_key: String,
    /// The job's kind as the scheduler recorded it.
    pub kind: Option<String>,
    /// Every replica of every attempt.
    pub runs: Vec<ReplicaRun>,
    /// The zones they ran in.
    pub zones: BTreeSet<String>,
    /// Whether the job's last attempt ended with every replica succeeded.
    pub succeeded: bool,
    /// The log head the proof ends in.
    pub head: AuditHead,
}

fn trusted<'a>(env: &Envelope, keys: &'a [Identity]) -> Result<&'a Identity, String> {
    let hint = env.keyid().unwrap_or_default();
    keys.iter().find(|k| k.hint == hint).ok_or_else(|| {
        if keys.is_empty() {
            "no scheduler key is configured (`provenance.scheduler_keys` of the promotion config)".to_string()
        } else {
            format!(
                "signed by key {hint}, which is not a configured scheduler key ({})",
                keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        }
    })
}

/// Checks a receipts document against the trusted scheduler keys (see the module docs).
pub fn verify(doc: &ReceiptsDoc, keys: &[Identity]) -> Result<Verified, String> {
    let chain = &doc.chain;
    sovra_audit::verify_segment(&chain.entries, &chain.head).map_err(|e| format!("chain proof: {e}"))?;
    let key = trusted(&chain.checkpoint, keys).map_err(|e| format!("chain checkpoint: {e}"))?;
    let cp = chain.checkpoint.verify(CHECKPOINT_TYPE, &key.key).map_err(|e| format!("chain checkpoint: {e}"))?;
    let cp: Value = serde_json::from_slice(&cp).map_err(|e| format!("chain checkpoint: not JSON: {e}"))?;
    if cp["count"].as_u64() != Some(chain.head.count) || cp["hash"].as_str() != Some(chain.head.hash.as_str()) {
        return Err("chain checkpoint: the signed head is not the proof's head".into());
    }
    let by_seq: BTreeMap<u64, &AuditEntry> = chain.entries.iter().map(|e| (e.seq, e)).collect();
    let listed: BTreeSet<u64> = doc.receipts.iter().map(|r| r.seq).collect();
    for e in &chain.entries {
        if e.event.kind == RECEIPT_KIND && e.event.details["job"].as_u64() == Some(doc.job) && !listed.contains(&e.seq)
        {
            return Err(format!("receipt at log entry {} of job {} is missing from the document", e.seq, doc.job));
        }
    }
    let mut runs: Vec<ReplicaRun> = Vec::new();
    let mut kind = None;
    for r in &doc.receipts {
        let at = format!("receipt at log entry {}", r.seq);
        let entry = by_seq.get(&r.seq).ok_or_else(|| format!("{at}: not in the chain proof"))?;
        let stored: Envelope = serde_json::from_value(entry.event.details["envelope"].clone())
            .map_err(|e| format!("{at}: the log entry holds no receipt ({e})"))?;
        if stored != r.envelope {
            return Err(format!("{at}: differs from the receipt the log holds (it was modified)"));
        }
        let k = trusted(&r.envelope, keys).map_err(|e| format!("{at}: {e}"))?;
        if k.hint != key.hint {
            return Err(format!("{at}: signed by {}, the checkpoint by {}", k.name, key.name));
        }
        let payload = r.envelope.verify(STATEMENT_TYPE, &k.key).map_err(|e| format!("{at}: {e}"))?;
        let st: Value = serde_json::from_slice(&payload).map_err(|e| format!("{at}: not JSON: {e}"))?;
        if st["predicateType"] != RECEIPT_PREDICATE {
            return Err(format!("{at}: predicateType is {}, expected {RECEIPT_PREDICATE}", st["predicateType"]));
        }
        let p = &st["predicate"];
        if p["job"].as_u64() != Some(doc.job) {
            return Err(format!("{at}: is about job {}, the document about job {}", p["job"], doc.job));
        }
        kind = p["kind"].as_str().map(str::to_string).or(kind);
        let text = |v: &Value, field: &str| {
            v.as_str().map(str::to_string).ok_or_else(|| format!("{at}: field `predicate.{field}` is missing"))
        };
        let (attempt, replica) = (p["attempt"].as_u64().unwrap_or(0), p["replica"].as_u64().unwrap_or(0));
        match p["event"].as_str() {
            Some("placed") => {
                let run = ReplicaRun {
                    attempt,
                    replica,
                    node: text(&p["node"], "node")?,
                    zone: text(&p["zone"]["id"], "zone.id")?,
                    outcome: None,
                };
                // A placement receipted in a round that a crash kept from becoming durable is placed again under
                // the same attempt: the later receipt is the placement that ran. Both zones are judged.
                match runs.iter_mut().find(|x| x.attempt == attempt && x.replica == replica && x.outcome.is_none()) {
                    Some(x) if x.zone == run.zone => *x = run,
                    _ => runs.push(run),
                }
            }
            Some("ended") => {
                let run = runs.iter_mut().rev().find(|x| x.attempt == attempt && x.replica == replica);
                let run =
                    run.ok_or_else(|| format!("{at}: ends replica {replica} of attempt {attempt}, never placed"))?;
                run.outcome = Some(text(&p["outcome"], "outcome")?);
            }
            other => return Err(format!("{at}: field `predicate.event`: {other:?}, expected placed or ended")),
        }
    }
    if runs.is_empty() {
        return Err(format!("the document holds no placement of job {}", doc.job));
    }
    let last = runs.iter().map(|r| r.attempt).max();
    let succeeded =
        last.is_some_and(|a| runs.iter().filter(|r| r.attempt == a).all(|r| r.outcome.as_deref() == Some("succeeded")));
    Ok(Verified {
        job: doc.job,
        scheduler_key: key.name.clone(),
        kind,
        zones: runs.iter().map(|r| r.zone.clone()).collect(),
        runs,
        succeeded,
        head: chain.head.clone(),
    })
}

impl crate::service::Promoter {
    /// The `training` facts of the gate input: from the version's placement receipts when it has them (verified
    /// now, against the configured scheduler keys), else from a self-declared `training_zone`.
    pub(crate) fn training_facts(
        &self,
        v: &sovra_registry::VersionRecord,
        class: Option<&sovra_domain::ResidencyClass>,
    ) -> crate::payloads::InputTraining {
        let mut t = crate::payloads::InputTraining {
            permitted_zones: self.config.training_zones.clone(),
            zone_satisfies_residency: false,
            residency_violations: Vec::new(),
            source: "none".into(),
            receipts_required: self.config.require_receipts,
            receipt_errors: Vec::new(),
            zones: Vec::new(),
            job: None,
            job_succeeded: false,
            scheduler_key: None,
            runs: Vec::new(),
        };
        match v.provenance.get("receipts") {
            Some(doc) => {
                t.source = "receipts".into();
                match parse(doc).and_then(|d| verify(&d, &self.config.scheduler_keys)) {
                    Ok(ok) => {
                        t.zones = ok.zones.iter().cloned().collect();
                        t.job = Some(ok.job);
                        t.job_succeeded = ok.succeeded;
                        t.scheduler_key = Some(ok.scheduler_key.clone());
                        t.runs = ok.runs.iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect();
                        if ok.kind.as_deref().is_some_and(|k| k != "training") {
                            t.receipt_errors.push(format!(
                                "job {} is a {} job, not a training job",
                                ok.job,
                                ok.kind.as_deref().unwrap_or_default()
                            ));
                        }
                    }
                    Err(e) => t.receipt_errors.push(e),
                }
            }
            None => {
                if let Some(z) = v.provenance.get("training_zone").and_then(Value::as_str) {
                    t.source = "self-declared".into();
                    t.zones = vec![z.to_string()];
                }
            }
        }
        for z in &t.zones {
            match (class, self.cluster.zone(z)) {
                (Some(c), Some(zone)) => t
                    .residency_violations
                    .extend(c.violations(zone).into_iter().map(|x| format!("training zone {z}: {}", x.message))),
                (_, None) => t.residency_violations.push(format!("training zone {z} is not in the cluster config")),
                (None, _) => t
                    .residency_violations
                    .push(format!("residency class {} is not in the cluster config", v.residency_class)),
            }
        }
        t.zone_satisfies_residency = !t.zones.is_empty() && t.residency_violations.is_empty();
        t
    }
}
