//! The scheduler's audit log in sled: tree `audit` (key = the entry's position, big-endian u64; value = the entry
//! as JSON, exactly as the log format hashes it, docs/audit-log.md) and tree `audit_by_job` (key = job id then
//! position, both big-endian; empty value: the receipt index), written in the batch's flush, before the manifest,
//! which records how many entries were acknowledged.
//!
//! At open the log must hold at least the manifest's count: a log whose tail was cut or rolled back is refused
//! (it is part of the state directory's damage report; `--recover` continues from what it holds). The whole chain is checked by `sovra audit verify
//! --scheduler` (entries exported over the API) or offline from an export (tests/audit_verify.py).

use super::SledStore;
use crate::store::StoreError;
use sovra_audit::{AuditEntry, AuditHead};
use sovra_engine::JobId;

impl SledStore {
    /// The head: the last entry's position + 1 and its hash (an empty log when there is none). It is derived, not
    /// stored: sled keeps a prefix of its writes across a crash, so entries and a separate head record could
    /// disagree; what was acknowledged is checked against the manifest instead ([`SledStore::audit_damage`]).
    pub(super) fn read_audit_head(&self) -> Result<AuditHead, String> {
        match self.audit.last().map_err(|e| format!("reading the audit log: {e}"))? {
            None => Ok(AuditHead::empty()),
            Some((_, v)) => serde_json::from_slice::<AuditEntry>(&v)
                .map(|e| AuditHead::after(&e))
                .map_err(|e| format!("the last audit entry is unreadable: {e}")),
        }
    }

    /// What is wrong with the log at open: its last entry unreadable, or fewer entries than the manifest says were
    /// acknowledged (`recorded`: the log was cut or rolled back).
    pub(super) fn audit_damage(&self, recorded: u64) -> Option<String> {
        let head = match self.read_audit_head() {
            Ok(h) => h,
            Err(e) => return Some(e),
        };
        (head.count < recorded).then(|| {
            format!(
                "the audit log holds {} entries, the manifest records {recorded} acknowledged: the log was cut or \
                 rolled back",
                head.count
            )
        })
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
        if entries.is_empty() {
            return Ok(());
        }
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
