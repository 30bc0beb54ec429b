//! The audit head kept outside the database, so that a rollback of `meta.sled` cannot take it along.
//!
//! The head record inside sled (see [`crate::audit`]) is rolled back together with the entries it describes: a
//! truncated `meta.sled` that recovers to an older state still looks intact. So after every commit the registry
//! also writes the head — the number of entries and the hash of the last one — to `<root>/audit.head`, and, when
//! the operator configures one, to a *witness* file elsewhere (another volume, a mounted share). Each write goes
//! through a temporary file in the same directory, is synced, renamed into place, and the directory is synced.
//!
//! A recorded head is compared with the log ([`check`]): the log must hold at least `count` entries and entry
//! `count - 1` must hash to `hash`. A log *shorter* than the head, or one whose entry differs, was rolled back or
//! rewritten. A log *longer* than the head is accepted: the head is written after the database commit, so a
//! crash between the two leaves the head one commit behind; the next commit (or [`crate::Registry::open`]) brings
//! it up to date. A missing head file while the log has entries is damage too (the file was deleted, or the
//! registry predates head files; `sovra audit reset-head` accepts the current log explicitly).

use crate::audit::{AuditEntry, AuditHead, AuditProblem};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The head file's name in the registry root.
pub const HEAD_FILE: &str = "audit.head";

/// One place a head is kept: the registry's own head file or the operator's witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// `head file` or `witness`.
    pub label: &'static str,
    /// The file.
    pub path: PathBuf,
}

/// Reads a head file: `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<AuditHead>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io { path: path.to_path_buf(), action: "cannot read the audit head", source });
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Damaged {
        path: path.to_path_buf(),
        message: format!("the audit head file is not valid ({e}); it was edited or the disk is damaged"),
    })
}

/// Writes a head file: temporary file in the same directory (named `.sovra-tmp-…`, so an interrupted write is
/// found and removed at the next open), synced, renamed into place, directory synced.
pub fn write(path: &Path, head: &AuditHead) -> Result<()> {
    let io = |action: &'static str| move |source| Error::Io { path: path.to_path_buf(), action, source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io("cannot create the directory of the audit head"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{}{}-", crate::sweep::TEMP_PREFIX, std::process::id()))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .map_err(io("cannot write the audit head"))?;
    let mut bytes = serde_json::to_vec(head).unwrap_or_default();
    bytes.push(b'\n');
    tmp.write_all(&bytes).map_err(io("cannot write the audit head"))?;
    tmp.as_file().sync_all().map_err(io("cannot write the audit head"))?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        action: "cannot write the audit head",
        source: e.error,
    })?;
    // The rename is durable only once the directory is synced.
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io("cannot sync the directory of the audit head"))
}

/// How a recorded head relates to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// No head recorded and an empty log.
    Empty,
    /// The log ends exactly at the recorded head.
    Matches,
    /// The log extends the recorded head by this many entries (a commit ended before the head was written).
    Behind(u64),
}

/// Compares a recorded head (`None`: the file is missing) with the log: `len` entries, `entry(i)` reads entry `i`.
/// Returns how they relate, or the problem (positioned at the first entry that is missing or differs).
pub fn check(
    anchor: &Anchor,
    recorded: Option<&AuditHead>,
    len: u64,
    entry: &dyn Fn(u64) -> Option<AuditEntry>,
) -> std::result::Result<Standing, AuditProblem> {
    let Some(head) = recorded else {
        if len == 0 {
            return Ok(Standing::Empty);
        }
        return Err(AuditProblem {
            position: 0,
            message: format!(
                "the {} {} is missing but the log has {len} entries: it was deleted, or the registry predates head \
                 files; if the chain verifies and you trust it, run `sovra audit reset-head`",
                anchor.label,
                anchor.path.display()
            ),
        });
    };
    if head.count == 0 {
        return Ok(if len == 0 { Standing::Empty } else { Standing::Behind(len) });
    }
    if len < head.count {
        return Err(AuditProblem {
            position: len,
            message: format!(
                "the {} {} records {} entries ending in {}…, the log has only {len}: the registry metadata was \
                 rolled back or truncated and entries {len}..{} are lost; restore meta.sled from a backup",
                anchor.label,
                anchor.path.display(),
                head.count,
                short(&head.hash),
                head.count - 1
            ),
        });
    }
    let at = head.count - 1;
    match entry(at) {
        Some(e) if e.hash == head.hash => {
            Ok(if len == head.count { Standing::Matches } else { Standing::Behind(len - head.count) })
        }
        Some(e) => Err(AuditProblem {
            position: at,
            message: format!(
                "the {} {} records entry {at} as {}…, the log's entry {at} is {}…: the log was rewritten or rolled \
                 back to another history; restore meta.sled from a backup",
                anchor.label,
                anchor.path.display(),
                short(&head.hash),
                short(&e.hash)
            ),
        }),
        None => Err(AuditProblem {
            position: at,
            message: format!(
                "the {} {} records entry {at} as {}…, the log's entry {at} cannot be read: the registry metadata is \
                 damaged; restore meta.sled from a backup",
                anchor.label,
                anchor.path.display(),
                short(&head.hash)
            ),
        }),
    }
}

fn short(h: &str) -> String {
    h.chars().take(12).collect()
}
