//! Temporary files left by a killed writer, and how they are found.
//!
//! Every file the registry writes goes first to a temporary file *in the destination's directory* (so the final
//! rename never crosses a volume: each data zone may sit on its own), named `.sovra-tmp-<pid>-<random>`. The
//! `object_store` local backend stages its own uploads as `<name>#<n>`; registries written before this naming, or
//! through that backend, may hold those. A `kill -9` in the middle of a push or promotion leaves such a file.
//!
//! **When a temporary file is stale.** The registry's metadata store (sled) holds an exclusive file lock for as
//! long as a [`crate::Registry`] is open, and the registry writes blobs only while it is open. So once
//! [`crate::Registry::open`] holds the lock, no other process can be writing into this registry: every temporary
//! file found then belongs to a writer that died. They are removed at open (and reported by `sovra registry gc`).
//! Age or pid checks would be weaker: a pid can be reused, and a slow upload can be old.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Prefix of every temporary file the registry writes.
pub const TEMP_PREFIX: &str = ".sovra-tmp-";

/// A temporary file found (and removed) in the registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StrayFile {
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// True for a temporary file name: `.sovra-tmp-…`, or `object_store`'s staged upload `<sha256 hex>#<digits>`.
pub fn is_temp_name(name: &str) -> bool {
    if name.starts_with(TEMP_PREFIX) {
        return true;
    }
    match name.split_once('#') {
        Some((base, n)) => crate::blob::is_sha256_hex(base) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Finds the temporary files directly in `root` and anywhere under `root/blobs` (symbolic links are not followed)
/// and, with `remove`, deletes them. Returns what was found.
pub fn sweep(root: &Path, remove: bool) -> Result<Vec<StrayFile>> {
    sweep_dirs(root, &[], remove)
}

/// [`sweep`], and also anywhere under each of `dirs` (the local stores of data zones, see [`crate::stores`]) and
/// in `root/keys`.
pub fn sweep_dirs(root: &Path, dirs: &[PathBuf], remove: bool) -> Result<Vec<StrayFile>> {
    let mut found = Vec::new();
    let blobs = root.join("blobs");
    let mut walks = vec![
        walkdir::WalkDir::new(root).max_depth(1),
        walkdir::WalkDir::new(&blobs),
        walkdir::WalkDir::new(root.join("keys")).max_depth(1),
    ];
    walks.extend(dirs.iter().filter(|d| !d.starts_with(&blobs)).map(walkdir::WalkDir::new));
    for walk in walks {
        for entry in walk.follow_links(false) {
            let entry = match entry {
                Ok(e) => e,
                // A directory that vanished or is unreadable: report it rather than skip it silently.
                Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => continue,
                Err(e) => {
                    let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| blobs.clone());
                    return Err(Error::Io {
                        path,
                        action: "cannot look for temporary files",
                        source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk failed")),
                    });
                }
            };
            if !entry.file_type().is_file() || !is_temp_name(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if remove {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(Error::Io {
                            path: entry.path().to_path_buf(),
                            action: "cannot remove a stale temporary file",
                            source,
                        });
                    }
                }
            }
            found.push(StrayFile { path: entry.path().to_path_buf(), bytes });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found.dedup_by(|a, b| a.path == b.path);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_blob_names_are_not() {
        let d = "ab".repeat(32);
        assert!(is_temp_name(".sovra-tmp-123-xYz"));
        assert!(is_temp_name(&format!("{d}#1")));
        assert!(is_temp_name(&format!("{d}#42")));
        assert!(!is_temp_name(&d));
        assert!(!is_temp_name(&format!("{d}#")));
        assert!(!is_temp_name(&format!("{d}#x1")));
        assert!(!is_temp_name("notes#1"));
        assert!(!is_temp_name("audit.head"));
    }
}
