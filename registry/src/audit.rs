//! The registry's audit log: the format of the shared `sovra-audit` crate (docs/audit-log.md), stored in its own
//! sled tree. Entry `n` is stored under the 8-byte big-endian key `n`; the head record sits in the metadata tree
//! under [`HEAD_KEY`] and is also kept in files outside sled ([`crate::head`]), because the head rolls back with
//! the database.

use crate::error::{Error, Result};
pub use sovra_audit::{
    AuditEntry, AuditError, AuditEvent, AuditHead, AuditProblem, AuditReport, FORMAT, GENESIS, verify,
};

/// The key of the head record in the metadata tree.
pub(crate) const HEAD_KEY: &[u8] = b"audit_head";

impl From<AuditError> for Error {
    fn from(e: AuditError) -> Error {
        Error::Corrupt { key: format!("audit entry {}", e.seq), message: e.message }
    }
}

pub(crate) fn read_head(meta: &impl Fn(&[u8]) -> Option<Vec<u8>>) -> Result<AuditHead> {
    match meta(HEAD_KEY) {
        None => Ok(AuditHead::empty()),
        Some(v) => {
            serde_json::from_slice(&v).map_err(|e| Error::Corrupt { key: "audit_head".into(), message: e.to_string() })
        }
    }
}

/// Builds the entry that follows `head` (format [`FORMAT`]).
pub(crate) fn next_entry(head: &AuditHead, event: AuditEvent) -> Result<AuditEntry> {
    Ok(sovra_audit::next_entry(head, event)?)
}
