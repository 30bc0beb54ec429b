//! The registry's integrity checks: the audit head files against the log at open, the full chain check
//! (`sovra audit verify`), and the explicit acceptance of the current log (`sovra audit reset-head`).

use crate::Registry;
use crate::audit::{self, AuditEntry, AuditEvent, AuditHead, AuditProblem, AuditReport};
use crate::error::{Error, Result};
use crate::head::{self, Anchor, Standing};

/// An anchor and the head it held before [`Registry::reset_head`] (`None`: missing or unreadable).
pub type ReplacedHead = (Anchor, Option<AuditHead>);

impl Registry {
    /// Where the audit head is kept: `<root>/audit.head`, then the witness if one is configured.
    pub fn anchors(&self) -> Vec<Anchor> {
        let mut out = vec![Anchor { label: "head file", path: self.root.join(head::HEAD_FILE) }];
        if let Some(w) = &self.witness {
            out.push(Anchor { label: "witness", path: w.clone() });
        }
        out
    }

    fn entry_at(&self, i: u64) -> Option<AuditEntry> {
        let v = self.audit.get(i.to_be_bytes()).ok().flatten()?;
        serde_json::from_slice(&v).ok()
    }

    /// The log's length as its last key says (gaps are [`Registry::verify_audit`]'s business) and its last entry.
    fn tail(&self) -> Result<(u64, Option<AuditEntry>)> {
        match self.audit.last().map_err(crate::Error::store(&self.root.join("meta.sled")))? {
            None => Ok((0, None)),
            Some((k, v)) => {
                let key = k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
                Ok((key.saturating_add(1), serde_json::from_slice(&v).ok()))
            }
        }
    }

    /// The audit head as the database records it: the number of entries and the last hash (what
    /// `sovra audit verify --expect-head` and `tests/audit_verify.py --expect-head` check against).
    pub fn audit_head(&self) -> Result<AuditHead> {
        self.sled_head()
    }

    fn sled_head(&self) -> Result<AuditHead> {
        let meta = |k: &[u8]| self.meta.get(k).ok().flatten().map(|v| v.to_vec());
        audit::read_head(&meta)
    }

    /// The cheap check made at every open: the last entry against sled's own head record and against each
    /// anchor. A head one or more commits behind (a crash between the commit and the head write) is brought up
    /// to date; anything else is [`Error::Damaged`].
    pub(crate) fn check_at_open(&self) -> Result<()> {
        let (len, last) = self.tail()?;
        let mut problems = Vec::new();
        let sled_head = self.sled_head()?;
        let last_hash = last.as_ref().map(|e| e.hash.clone()).unwrap_or_else(|| audit::GENESIS.to_string());
        if len > 0 && last.is_none() {
            problems.push(format!("audit entry {} cannot be decoded", len - 1));
        } else if sled_head.count != len || sled_head.hash != last_hash {
            problems.push(format!(
                "the database's head record says {} entries, the log ends at {len}: the log was edited",
                sled_head.count
            ));
        }
        let mut behind = Vec::new();
        for anchor in self.anchors() {
            let recorded = head::read(&anchor.path)?;
            match head::check(&anchor, recorded.as_ref(), len, &|i| self.entry_at(i)) {
                Ok(Standing::Behind(_)) => behind.push(anchor),
                Ok(_) => {}
                Err(p) => problems.push(p.message),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Damaged {
                path: self.root.clone(),
                message: format!(
                    "{}; nothing was done (`sovra audit verify` shows the full report)",
                    problems.join("; ")
                ),
            });
        }
        let current = AuditHead { count: len, hash: last_hash };
        for anchor in behind {
            head::write(&anchor.path, &current)?;
        }
        Ok(())
    }

    /// Writes the head after a commit to every anchor.
    pub(crate) fn write_heads(&self, h: &AuditHead, seq: u64) -> Result<()> {
        for anchor in self.anchors() {
            head::write(&anchor.path, h).map_err(|e| Error::HeadNotWritten {
                seq,
                path: anchor.path.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Checks the audit chain: numbering, links, hashes, sled's head record, and the head files (the registry's
    /// own and the witness), which a rollback of the database cannot take along.
    pub fn verify_audit(&self) -> Result<AuditReport> {
        self.verify_audit_expecting(None)
    }

    /// [`Registry::verify_audit`], and with `expect` (a hash a pipeline anchored earlier, e.g. from a CI log) the
    /// log must contain that entry: it is the head, or entries were appended after it.
    pub fn verify_audit_expecting(&self, expect: Option<&str>) -> Result<AuditReport> {
        let head = self.sled_head()?;
        let mut raw = Vec::new();
        let mut unreadable = None;
        for kv in self.audit.iter() {
            match kv.map_err(Error::store(&self.root.join("meta.sled"))) {
                Ok((k, v)) => raw.push((k.to_vec(), v.to_vec())),
                // A corrupt page: report what was read before it, and the damage, rather than nothing.
                Err(e @ Error::Damaged { .. }) => {
                    unreadable = Some(e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let decoded: Vec<Option<AuditEntry>> = raw.iter().map(|(_, v)| serde_json::from_slice(v).ok()).collect();
        let keys: Vec<u64> =
            raw.iter().map(|(k, _)| k.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX)).collect();
        let mut report = audit::verify(raw.into_iter(), head);
        if let Some(message) = unreadable {
            let position = keys.last().map(|k| k.saturating_add(1)).unwrap_or(0);
            report
                .problems
                .push(AuditProblem { position, message: format!("the log cannot be read from here: {message}") });
        }
        let len = keys.last().map(|k| k.saturating_add(1)).unwrap_or(0);
        let entry = |i: u64| keys.iter().position(|k| *k == i).and_then(|p| decoded[p].clone());
        for anchor in self.anchors() {
            let recorded = match head::read(&anchor.path) {
                Ok(r) => r,
                Err(e) => {
                    report.problems.push(AuditProblem { position: len, message: e.to_string() });
                    continue;
                }
            };
            match head::check(&anchor, recorded.as_ref(), len, &entry) {
                Ok(Standing::Behind(n)) => report.notes.push(format!(
                    "the {} {} is {n} entr{} behind the log (a commit ended before it was written); the next \
                     command brings it up to date",
                    anchor.label,
                    anchor.path.display(),
                    if n == 1 { "y" } else { "ies" }
                )),
                Ok(_) => {}
                Err(p) => report.problems.push(p),
            }
        }
        if let Some(expect) = expect {
            let want = expect.trim().trim_start_matches("sha256:").to_ascii_lowercase();
            match decoded.iter().flatten().find(|e| e.hash == want) {
                Some(e) if e.seq + 1 == len => report.notes.push(format!("the expected head {want} is the last entry")),
                Some(e) => report.notes.push(format!(
                    "the expected head {want} is entry {}; {} entries were appended after it",
                    e.seq,
                    len.saturating_sub(e.seq + 1)
                )),
                None => report.problems.push(AuditProblem {
                    position: len,
                    message: format!(
                        "no entry of the log hashes to the expected head {want}: the log was rolled back to before \
                         it, or rewritten"
                    ),
                }),
            }
        }
        report.problems.sort_by_key(|p| p.position);
        let first_bad = report.problems.iter().map(|p| p.position).min().unwrap_or(u64::MAX);
        // The last entry before the first problem, provided every entry up to it was read in order.
        report.last_good = keys
            .iter()
            .zip(&decoded)
            .enumerate()
            .take_while(|(i, (k, e))| **k == *i as u64 && e.is_some() && **k < first_bad)
            .last()
            .and_then(|(_, (_, e))| e.clone());
        Ok(report)
    }

    /// Accepts the current log as the head, for a registry that predates head files or one restored from a
    /// backup on purpose: refused unless the chain itself verifies. Appends a `head_reset` entry that records the
    /// heads it replaced, which writes every anchor. Returns the replaced heads (per anchor) and the new entry.
    pub fn reset_head(&self, actor: &str) -> Result<(Vec<ReplacedHead>, AuditEntry)> {
        let report = audit::verify(
            self.audit.iter().filter_map(|kv| kv.ok()).map(|(k, v)| (k.to_vec(), v.to_vec())),
            self.sled_head()?,
        );
        if !report.ok() {
            let first = &report.problems[0];
            return Err(Error::Damaged {
                path: self.root.clone(),
                message: format!(
                    "the chain itself is broken (at {}: {}); reset-head accepts only an intact chain",
                    first.position, first.message
                ),
            });
        }
        let mut old = Vec::new();
        for anchor in self.anchors() {
            let h = head::read(&anchor.path).ok().flatten();
            old.push((anchor, h));
        }
        let details = serde_json::json!({
            "replaced": old.iter().map(|(a, h)| serde_json::json!({"anchor": a.label, "path": a.path, "head": h}))
                .collect::<Vec<_>>(),
            "log_entries": report.entries,
        });
        let event = AuditEvent {
            kind: "head_reset".into(),
            subject: self.root.display().to_string(),
            actor: actor.to_string(),
            details,
        };
        let entry = self.commit(&[], event)?;
        Ok((old, entry))
    }
}
