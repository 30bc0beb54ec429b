//! The scheduler's audit log in sled: tree `audit` (key = the entry's position, big-endian u64; value = the entry
//! as JSON, exactly as the log format hashes it, docs/audit-log.md), tree `audit_by_job` (key = job id then
//! position, both big-endian; empty value: the receipt index), and the head (`{"count", "hash"}`) under `head` in
//! tree `audit_head`. All three are written in the batch's flush, before the manifest.
//!
//! At open the head must match the last entry: a log whose tail was cut or whose head was rolled back is refused
//! (it is part of the state directory's damage report). The whole chain is checked by `sovra audit verify
//! --scheduler` (entries exported over the API) or offline from an export (tests/audit_verify.py).

use super::SledStore;
use crate::store::StoreError;
use sovra_audit::{AuditEntry, AuditHead};
use sovra_engine::JobId;

const HEAD: &[u8] = b"head";

impl SledStore {
    /// The stored head (empty log when there is none).
    pub(super) fn read_audit_head(&self) -> Result<AuditHead, String> {
        match self.audit_head.get(HEAD).map_err(|e| format!("reading the audit head: {e}"))? {
            None => Ok(AuditHead::empty()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| format!("the audit head is unreadable: {e}")),
        }
    }

    /// Whether the head agrees with the last entry; what is wrong when it does not.
    pub(super) fn audit_damage(&self) -> Option<String> {
        let head = match self.read_audit_head() {
            Ok(h) => h,
            Err(e) => return Some(e),
        };
        let last = match self.audit.last() {
            Ok(l) => l,
            Err(e) => return Some(format!("reading the audit log: {e}")),
        };
        let last: Option<AuditEntry> = match last {
            None => None,
            Some((_, v)) => match serde_json::from_slice(&v) {
                Ok(e) => Some(e),
                Err(e) => return Some(format!("the last audit entry is unreadable: {e}")),
            },
        };
        let found = last.as_ref().map_or_else(AuditHead::empty, AuditHead::after);
        (found != head).then(|| {
            format!(
                "the audit log holds {} entries ending in {}, its head records {} ending in {}: the log was cut or \
                 rolled back",
                found.count, found.hash, head.count, head.hash
            )
        })
    }

    /// `--recover`: the head becomes the last readable entry's, so that new entries follow what the log holds (the
    /// damage report says what was wrong; `sovra audit verify --scheduler` shows the chain).
    pub(super) fn reset_audit_head(&self) -> Result<(), String> {
        if self.audit_damage().is_none() {
            return Ok(());
        }
        let last = self.audit.last().map_err(|e| format!("reading the audit log: {e}"))?;
        let head = match last.and_then(|(_, v)| serde_json::from_slice::<AuditEntry>(&v).ok()) {
            Some(e) => AuditHead::after(&e),
            None => AuditHead::empty(),
        };
        let v = serde_json::to_vec(&head).map_err(|e| e.to_string())?;
        self.audit_head.insert(HEAD, v).map_err(|e| format!("writing the audit head: {e}"))?;
        Ok(())
    }

    /// Whether a batch's audit entries follow the log (checked before anything of the batch is written).
    pub(super) fn check_audit(&self, entries: &[(Option<JobId>, AuditEntry)]) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let head = self.read_audit_head()?;
        for (i, (_, e)) in entries.iter().enumerate() {
            let expected = head.count + i as u64;
            if e.seq != expected {
                return Err(format!("audit entry {} does not follow the log's {expected} entries", e.seq));
            }
        }
        Ok(())
    }

    /// Appends a batch's audit entries (checked by [`SledStore::check_audit`]) and moves the head (flushed with
    /// the batch).
    pub(super) fn append_audit(&self, entries: &[(Option<JobId>, AuditEntry)]) -> Result<(), String> {
        let Some((_, last)) = entries.last() else { return Ok(()) };
        let mut log = sled::Batch::default();
        let mut index = sled::Batch::default();
        for (job, e) in entries {
            let v = serde_json::to_vec(e).map_err(|err| format!("encoding audit entry {}: {err}", e.seq))?;
            log.insert(&e.seq.to_be_bytes(), v);
            if let Some(j) = job {
                let mut k = [0u8; 16];
                k[..8].copy_from_slice(&j.to_be_bytes());
                k[8..].copy_from_slice(&e.seq.to_be_bytes());
                index.insert(&k, &[] as &[u8]);
            }
        }
        self.audit.apply_batch(log).map_err(|e| format!("writing the audit log: {e}"))?;
        self.audit_by_job.apply_batch(index).map_err(|e| format!("writing the audit index: {e}"))?;
        let head = serde_json::to_vec(&AuditHead::after(last)).map_err(|e| e.to_string())?;
        self.audit_head.insert(HEAD, head).map_err(|e| format!("writing the audit head: {e}"))?;
        Ok(())
    }

    /// Up to `limit` entries from `from`.
    pub(super) fn read_audit(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.audit.range(from.to_be_bytes()..).take(limit) {
            let (k, v) = item.map_err(|e| StoreError::Backend(format!("reading the audit log: {e}")))?;
            let e: AuditEntry = serde_json::from_slice(&v).map_err(|e| {
                StoreError::Damaged(format!("audit entry at key {}: unreadable ({e}); the log was edited", hexkey(&k)))
            })?;
            out.push(e);
        }
        Ok(out)
    }

    /// The positions of a job's entries.
    pub(super) fn read_job_audit(&self, job: JobId) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for item in self.audit_by_job.scan_prefix(job.to_be_bytes()) {
            let (k, _) = item.map_err(|e| StoreError::Backend(format!("reading the audit index: {e}")))?;
            if let Ok(seq) = <[u8; 8]>::try_from(&k[8..]) {
                out.push(u64::from_be_bytes(seq));
            }
        }
        Ok(out)
    }
}

fn hexkey(k: &[u8]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}
