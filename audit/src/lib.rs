//! The audit log format shared by the registry's and the scheduler's logs: append-only and hash-chained.
//!
//! Entry `n` holds `prev`, the hash of entry `n-1` (64 zeros for the first), and `hash`, the SHA-256 of its own
//! canonical JSON (RFC 8785, JCS) without `hash`; entries carry `"v": 2`. Entries without `v` (written by the
//! registry before format 2) hash over serde_json's output of the fields in declaration order, and still verify by
//! that rule. The format is specified in docs/audit-log.md, so that a log can be checked without this code
//! (`sovra audit export`, tests/audit_verify.py). A head record holds the number of entries and the last hash.
//! [`verify`] walks a log: a changed entry no longer hashes to its `hash`, a deleted one leaves a gap in the
//! numbering and a broken `prev` link, a reordered one sits under the wrong key or breaks the links, and a dropped
//! tail no longer matches the head. [`verify_segment`] checks a contiguous piece of a log against a head, which is
//! how one job's placement receipts are proven to be in the scheduler's log (docs/receipts.md).
//!
//! Where entries are stored is the caller's business: the registry keeps them in a sled tree, the scheduler in its
//! store (memory or sled), each appending in the same atomic write as the change it records.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as the caller describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// `push`, `promotion`, `denial`, `approval`, `exception`, ...
    pub kind: String,
    /// What it is about, e.g. `resnet@<digest>`.
    pub subject: String,
    /// Who did it (a key's name or hint), if known.
    pub actor: String,
    /// Event-specific facts.
    pub details: serde_json::Value,
}

/// The format version of new entries (`v`): the hash is over the entry's JCS form (docs/audit-log.md).
pub const FORMAT: u64 = 2;

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Format version: [`FORMAT`] for new entries, none for legacy (format 1) entries, which hash by the old rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u64>,
    /// Position in the log, from 0.
    pub seq: u64,
    /// Unix time in seconds.
    pub time: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hash of the previous entry ([`GENESIS`] for the first).
    pub prev: String,
    /// SHA-256 (hex) of this entry's canonical JSON without this field (format 1: its serde_json form).
    pub hash: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time: u64,
    #[serde(flatten)]
    event: &'a AuditEvent,
    prev: &'a str,
}

impl AuditEntry {
    /// The hash this entry should carry, by the rule of its format: format 2 (and any later `v`, which
    /// [`verify`] refuses) hashes the JCS form of the entry without `hash`; an entry without `v` hashes the
    /// legacy serde_json form.
    pub fn compute_hash(&self) -> String {
        match self.v {
            None => {
                let h = Hashed { seq: self.seq, time: self.time, event: &self.event, prev: &self.prev };
                hex(&Sha256::digest(serde_json::to_vec(&h).unwrap_or_default()))
            }
            // Canonicalising a JSON value cannot fail (no non-string keys, no NaN); an empty input would not match.
            Some(_) => hex(&Sha256::digest(self.canonical().unwrap_or_default())),
        }
    }

    /// The RFC 8785 (JCS) form of this entry without `hash`: the bytes format 2 hashes.
    pub fn canonical(&self) -> Result<Vec<u8>, AuditError> {
        let corrupt = |e: serde_json::Error| AuditError { seq: self.seq, message: e.to_string() };
        let mut doc = serde_json::to_value(self).map_err(corrupt)?;
        if let Some(o) = doc.as_object_mut() {
            o.remove("hash");
        }
        serde_jcs::to_vec(&doc).map_err(corrupt)
    }
}

/// The head record: entries written so far and the last hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Number of entries.
    pub count: u64,
    /// Hash of the last entry ([`GENESIS`] when empty).
    pub hash: String,
}

/// Builds the entry that follows `head` (format [`FORMAT`]), stamped with the current time.
pub fn next_entry(head: &AuditHead, event: AuditEvent) -> Result<AuditEntry, AuditError> {
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    next_entry_at(head, event, time)
}

/// Builds the entry that follows `head` (format [`FORMAT`]) at Unix time `time` (seconds).
pub fn next_entry_at(head: &AuditHead, event: AuditEvent, time: u64) -> Result<AuditEntry, AuditError> {
    let mut e =
        AuditEntry { v: Some(FORMAT), seq: head.count, time, event, prev: head.hash.clone(), hash: String::new() };
    e.hash = hex(&Sha256::digest(e.canonical()?));
    Ok(e)
}

impl AuditHead {
    /// The head of an empty log.
    pub fn empty() -> AuditHead {
        AuditHead { count: 0, hash: GENESIS.into() }
    }

    /// The head after `entry` was appended.
    pub fn after(entry: &AuditEntry) -> AuditHead {
        AuditHead { count: entry.seq + 1, hash: entry.hash.clone() }
    }
}

/// An entry that cannot be put in canonical form (it never happens for entries built from JSON values; the error
/// says which entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq}: {message}")]
pub struct AuditError {
    /// The entry's position.
    pub seq: u64,
    /// What went wrong.
    pub message: String,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditProblem {
    /// The position (key) where it was found.
    pub position: u64,
    /// What is wrong.
    pub message: String,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Entries read.
    pub entries: u64,
    /// The head record.
    pub head: AuditHead,
    /// Everything wrong; empty when the chain is intact.
    pub problems: Vec<AuditProblem>,
    /// Remarks that are not problems (a head file one commit behind, where an expected head sits).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The last entry before the first problem (the last entry when there is none): where a damaged log is
    /// still good.
    #[serde(default)]
    pub last_good: Option<AuditEntry>,
}

impl AuditReport {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the chain: numbering, links, hashes and the head.
pub fn verify(entries: impl Iterator<Item = (Vec<u8>, Vec<u8>)>, head: AuditHead) -> AuditReport {
    let mut problems = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 0u64;
    let mut count = 0u64;
    for (key, value) in entries {
        count += 1;
        let position = key.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
        let mut problem = |message: String| problems.push(AuditProblem { position, message });
        if position != expected_seq {
            problem(format!(
                "expected entry {expected_seq} here, found key {position}: an entry was deleted or inserted"
            ));
        }
        let entry: AuditEntry = match serde_json::from_slice(&value) {
            Ok(e) => e,
            Err(e) => {
                problem(format!("entry is not valid JSON ({e}): it was edited"));
                prev = String::new();
                expected_seq = position.saturating_add(1);
                continue;
            }
        };
        if entry.seq != position {
            problem(format!(
                "entry says it is number {} but is stored at {position}: entries were reordered",
                entry.seq
            ));
        }
        if entry.prev != prev {
            problem(format!(
                "link broken: prev is {}…, the preceding entry hashes to {}…: an entry before it was deleted, \
                 reordered or edited",
                short(&entry.prev),
                short(&prev)
            ));
        }
        let computed = entry.compute_hash();
        if let Some(v) = entry.v.filter(|v| *v != FORMAT) {
            problem(format!("entry has format version {v}; this sovra reads format {FORMAT} and legacy entries only"));
        } else if computed != entry.hash {
            problem(format!(
                "content hashes to {}…, the entry records {}…: the entry was edited",
                short(&computed),
                short(&entry.hash)
            ));
        }
        prev = entry.hash;
        expected_seq = position.saturating_add(1);
    }
    if head.count != count || head.hash != prev {
        problems.push(AuditProblem {
            position: count,
            message: format!(
                "the head records {} entries ending in {}…, the log has {count} ending in {}…: entries were \
                 deleted or appended outside the registry",
                head.count,
                short(&head.hash),
                short(&prev)
            ),
        });
    }
    AuditReport { entries: count, head, problems, notes: Vec::new(), last_good: None }
}

fn short(h: &str) -> String {
    h.chars().take(12).collect()
}

/// Checks a contiguous piece of a log: `entries` must be numbered consecutively, each linked to the one before and
/// hashing to its `hash`, and the last must be `head` (its `count` − 1 and its `hash`). The first entry's `prev`
/// is taken on trust: what anchors the piece is the head, which the caller gets signed or published. Returns the
/// first problem, naming the entry.
pub fn verify_segment(entries: &[AuditEntry], head: &AuditHead) -> Result<(), String> {
    let Some(first) = entries.first() else {
        return Err("the chain proof holds no entries".into());
    };
    let mut prev = first.prev.clone();
    for (i, e) in entries.iter().enumerate() {
        let expected = first.seq + i as u64;
        if e.seq != expected {
            return Err(format!(
                "entry {i} of the proof is number {}, expected {expected}: the proof has a gap",
                e.seq
            ));
        }
        if e.prev != prev {
            return Err(format!(
                "entry {}: prev {}… does not link to the entry before ({}…)",
                e.seq,
                short(&e.prev),
                short(&prev)
            ));
        }
        if e.v != Some(FORMAT) {
            return Err(format!("entry {}: format version {:?}; proofs hold format {FORMAT} entries", e.seq, e.v));
        }
        let computed = e.compute_hash();
        if computed != e.hash {
            return Err(format!(
                "entry {}: content hashes to {}…, the entry records {}…: it was edited",
                e.seq,
                short(&computed),
                short(&e.hash)
            ));
        }
        prev = e.hash.clone();
    }
    let last = &entries[entries.len() - 1];
    if last.seq + 1 != head.count || last.hash != head.hash {
        return Err(format!(
            "the proof ends at entry {} ({}…), the head is {} entries ending in {}…",
            last.seq,
            short(&last.hash),
            head.count,
            short(&head.hash)
        ));
    }
    Ok(())
}

/// SHA-256 (hex) of the RFC 8785 canonical JSON of `value`: the digest receipts give a residency class, a zone and
/// a policy, so that a verifier recomputes it from the definition in any language.
pub fn digest_of(value: &impl Serialize) -> Result<String, String> {
    let v = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let bytes = serde_jcs::to_vec(&v).map_err(|e| e.to_string())?;
    Ok(hex(&Sha256::digest(bytes)))
}

/// The names of the placement receipt format (docs/receipts.md), shared by the scheduler that signs receipts and
/// the promotion service that verifies them.
pub mod receipt {
    /// The `_type` of the receipts document `sovra job receipts -o json` prints.
    pub const DOC_V1: &str = "https://sovra.dev/job-receipts/v1";
    /// The in-toto predicate type of a placement receipt.
    pub const PREDICATE: &str = "https://sovra.dev/placement-receipt/v1";
    /// The DSSE payload type of receipts (in-toto statements).
    pub const STATEMENT_TYPE: &str = "application/vnd.in-toto+json";
    /// The DSSE payload type of a signed audit checkpoint (the head of the scheduler's log).
    pub const CHECKPOINT_TYPE: &str = "application/vnd.sovra.audit-checkpoint.v1+json";
    /// The `_type` of a signed audit checkpoint.
    pub const CHECKPOINT_V1: &str = "https://sovra.dev/audit-checkpoint/v1";
    /// The audit event kind of a receipt.
    pub const KIND: &str = "placement-receipt";
}
