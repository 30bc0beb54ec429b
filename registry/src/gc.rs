//! `sovra registry gc`: what a killed or failed writer left behind.
//!
//! Two kinds of leftovers: *temporary files* (a `kill -9` in the middle of a blob write; see [`crate::sweep`]),
//! which [`crate::Registry::open`] already removed and which are listed here, and *orphan blobs* — complete blobs
//! in a data zone that no version located there references (a push or promotion killed after copying some blobs
//! and before its commit). Orphans are listed, and deleted only on request: they are harmless, and deleting is
//! the operator's decision. The registry lock is held throughout, so no push or promotion can be between its
//! copy and its commit while orphans are computed.

use crate::Registry;
use crate::blob::BlobStore;
use crate::error::Result;
use crate::sweep::StrayFile;
use serde::Serialize;
use sovra_domain::datazone::DataZone;
use std::collections::BTreeSet;

/// A blob that no version references in its data zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanBlob {
    /// The data zone (`zone/stage`).
    pub data_zone: String,
    /// The blob's SHA-256.
    pub digest: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its object path, and the store of its data zone.
    pub location: String,
}

/// What [`Registry::gc`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Temporary files of killed writers, removed when the registry was opened (and any found since).
    pub temp_files: Vec<StrayFile>,
    /// Blobs no version references in their data zone.
    pub orphans: Vec<OrphanBlob>,
    /// Objects under `zones/` that are not named like blobs (left alone).
    pub unknown: Vec<String>,
    /// True when the orphans were deleted.
    pub removed_orphans: bool,
}

impl Registry {
    /// Lists the temporary files removed at open and the orphan blobs; with `remove_orphans`, deletes the orphans.
    pub fn gc(&self, remove_orphans: bool) -> Result<GcReport> {
        let mut temp_files = self.swept.clone();
        temp_files.extend(crate::sweep::sweep_dirs(&self.root, &self.blobs.local_dirs(), true)?);
        temp_files.sort_by(|a, b| a.path.cmp(&b.path));
        temp_files.dedup_by(|a, b| a.path == b.path);
        let mut referenced: BTreeSet<(DataZone, String)> = BTreeSet::new();
        for v in self.versions(None)? {
            for l in &v.locations {
                for d in v.files.iter().map(|f| &f.digest).chain([&v.bundle]) {
                    referenced.insert((l.data_zone.clone(), d.clone()));
                }
            }
        }
        let (blobs, unknown) = self.blobs.list_all()?;
        let mut orphans = Vec::new();
        for (dz, digest, bytes) in blobs {
            if referenced.contains(&(dz.clone(), digest.clone())) {
                continue;
            }
            if remove_orphans {
                self.blobs.delete(&dz, &digest)?;
            }
            orphans.push(OrphanBlob {
                data_zone: dz.to_string(),
                location: format!("{} ({})", BlobStore::location(&dz, &digest), self.blobs.describe(&dz)),
                digest,
                bytes,
            });
        }
        Ok(GcReport { temp_files, orphans, unknown, removed_orphans: remove_orphans })
    }
}
