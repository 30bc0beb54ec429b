//! The audit log: append-only and hash-chained, in its own sled tree.
//!
//! Entry `n` is stored under the 8-byte big-endian key `n`; it holds `prev`, the hash of entry `n-1` (64 zeros for
//! the first), and `hash`, the SHA-256 of its own canonical JSON (RFC 8785, JCS) without `hash`; entries carry
//! `"v": 2`. Entries without `v` (written before format 2) hash over serde_json's output of the fields in
//! declaration order, and still verify by that rule. The format is specified in docs/audit-log.md, so that the log
//! can be checked without this code (`sovra audit export`, tests/audit_verify.py). A separate head record holds the number
//! of entries and the last hash. [`verify`] walks the tree: a changed entry no longer hashes to its `hash`, a
//! deleted one leaves a gap in the numbering and a broken `prev` link, a reordered one sits under the wrong key or
//! breaks the links, and a dropped tail no longer matches the head. The head record rolls back with the database,
//! so the head is also kept in files outside it ([`crate::head`]); publishing the head hash elsewhere (CI logs, a
//! ticket, `sovra audit verify --expect-head`) anchors the whole chain.

use crate::error::{Error, Result};
use crate::hex;
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
    pub fn canonical(&self) -> Result<Vec<u8>> {
        let corrupt =
            |e: serde_json::Error| Error::Corrupt { key: format!("audit entry {}", self.seq), message: e.to_string() };
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

/// The key of the head record in the metadata tree.
pub(crate) const HEAD_KEY: &[u8] = b"audit_head";

pub(crate) fn read_head(meta: &impl Fn(&[u8]) -> Option<Vec<u8>>) -> Result<AuditHead> {
    match meta(HEAD_KEY) {
        None => Ok(AuditHead { count: 0, hash: GENESIS.into() }),
        Some(v) => {
            serde_json::from_slice(&v).map_err(|e| Error::Corrupt { key: "audit_head".into(), message: e.to_string() })
        }
    }
}

/// Builds the entry that follows `head` (format [`FORMAT`]).
pub(crate) fn next_entry(head: &AuditHead, event: AuditEvent) -> Result<AuditEntry> {
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut e =
        AuditEntry { v: Some(FORMAT), seq: head.count, time, event, prev: head.hash.clone(), hash: String::new() };
    e.hash = hex(&Sha256::digest(e.canonical()?));
    Ok(e)
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
