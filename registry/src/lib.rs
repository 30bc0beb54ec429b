//! Sovra model registry: content-addressed blobs with one namespace per data zone, and metadata in sled.
//!
//! Layout of a registry root directory (see docs/registry.md):
//! ```text
//! <root>/meta.sled/                                 sled: models, versions, aliases, promotions, approvals,
//!                                                   exceptions, the hash-chained audit log
//! <root>/blobs/zones/<zone>/<stage>/sha256/<xx>/<digest>   file contents, bundles and statements by SHA-256
//! <root>/audit.head                                 the audit head (count, last hash) outside sled, see [`head`]
//! ```
//! [`Registry::open`] refuses a registry whose log does not reach its recorded head (a rolled-back or truncated
//! `meta.sled`) with [`Error::Damaged`], and removes temporary files left by a killed writer ([`sweep`]).
//! A *data zone* ([`sovra_domain::datazone::DataZone`]) is a zone of the cluster configuration at one stage
//! (`training`, `registry`, `inference`). The registry stores and retrieves; the rules (signatures, gates, the stage
//! order) live in `sovra-promotion`, which calls [`Registry::commit`] to write a promotion, its metadata and its
//! audit entry in one sled transaction.

pub mod audit;
mod backend;
pub mod blob;
pub mod crypt;
pub mod error;
pub mod gc;
pub mod head;
mod integrity;
pub mod keys;
mod open;
mod pipes;
pub mod pkcs11;
pub mod stores;
pub mod sweep;

pub use audit::{AuditEntry, AuditEvent, AuditHead, AuditProblem, AuditReport};
pub use blob::{BlobStore, RotateReport};
pub use error::{Error, Result};
pub use gc::{GcReport, OrphanBlob};
pub use integrity::ReplacedHead;
pub use keys::{FileKey, KeyProvider};
pub use stores::{StoreSpec, Stores};
pub use sweep::StrayFile;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sovra_domain::datazone::{DataZone, check_name};
use std::path::{Path, PathBuf};

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One file of a model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// POSIX path relative to the model root (`.` for a single-file model).
    pub name: String,
    /// SHA-256 of the content (its blob name).
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// Where a version is stored and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The data zone.
    #[serde(flatten)]
    pub data_zone: DataZone,
    /// Unix time it arrived.
    pub since: u64,
    /// The promotion that brought it (none for a push).
    pub promotion: Option<u64>,
}

/// A model version: a signed manifest and where its blobs are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Model name.
    pub model: String,
    /// The OMS subject (root) digest: the version id.
    pub digest: String,
    /// The residency class of the training data.
    pub residency_class: String,
    /// The files.
    pub files: Vec<FileEntry>,
    /// Digest of the OMS bundle blob (stored beside the files in every data zone).
    pub bundle: String,
    /// Hint (SHA-256 of the PEM SPKI) of the key that signed the bundle.
    pub signer_hint: String,
    /// The signer's public key (PEM), as given at push.
    pub signer_key_pem: String,
    /// Provenance: training job, the zone it ran in, ...
    pub provenance: serde_json::Value,
    /// Evaluation metrics (name → number).
    pub metrics: serde_json::Value,
    /// Unix time of the push.
    pub pushed_at: u64,
    /// Data zones holding the version, in arrival order.
    pub locations: Vec<Location>,
    /// Data zones it was withdrawn from, oldest first (`sovra model withdraw`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<Withdrawal>,
}

/// A withdrawal of a version from one data zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// The data zone it was removed from.
    #[serde(flatten)]
    pub data_zone: DataZone,
    /// Unix time of the withdrawal.
    pub at: u64,
    /// Why, as the admin gave it.
    pub reason: String,
    /// The admin who signed it.
    pub by: String,
    /// The signed withdrawal record.
    pub record: u64,
}

impl VersionRecord {
    /// The furthest stage reached, and its data zone.
    pub fn current(&self) -> Option<&Location> {
        self.locations.iter().max_by_key(|l| (l.data_zone.stage, l.since))
    }

    /// Total bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A stored, signed record (promotion statement, approval, exception) with a few indexed fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedRecord {
    /// Registry-wide id.
    pub id: u64,
    /// `promotion`, `approval` or `exception`.
    pub kind: String,
    /// Model name.
    pub model: String,
    /// Version digest.
    pub digest: String,
    /// Unix time it was recorded.
    pub recorded_at: u64,
    /// Facts the promotion service reads back (from/to, gate, expiry, ...).
    pub fields: serde_json::Value,
    /// The DSSE envelope as signed.
    pub envelope: serde_json::Value,
}

/// Trees of the metadata store, for [`Write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeId {
    /// Model versions, keyed `model\0digest`.
    Versions,
    /// Aliases, keyed `zone\0stage\0model\0alias`.
    Aliases,
    /// Promotions, approvals and exceptions, keyed `model\0digest\0id`.
    Records,
}

/// One write of a [`Registry::commit`]: a blind overwrite, or a compare-and-swap with [`Write::expecting`].
#[derive(Debug, Clone)]
pub struct Write {
    /// The tree.
    pub tree: TreeId,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// What the key must hold when the transaction runs: `None` writes blindly, `Some(None)` requires the key
    /// to be absent, `Some(Some(bytes))` requires exactly `bytes` (as read by [`Registry::version_raw`] or
    /// [`Registry::alias_raw`]). Otherwise the commit writes nothing and fails with [`Error::Conflict`].
    pub expected: Option<Option<Vec<u8>>>,
}

impl Write {
    /// The same write, made only if the key still holds `prev` (`None`: the key must not exist).
    pub fn expecting(mut self, prev: Option<Vec<u8>>) -> Write {
        self.expected = Some(prev);
        self
    }

    /// The key as shown in messages (`\0` separators as `/`).
    pub fn key_display(&self) -> String {
        key_display(&self.key)
    }
}

fn key_display(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

/// How to open a registry.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// A second file that keeps the audit head (the operator's witness, e.g. on another volume): written after
    /// every commit like `<root>/audit.head`, and checked at open and by [`Registry::verify_audit`].
    pub witness: Option<PathBuf>,
    /// Open for inspection: no audit head check and no cleanup, so that `sovra audit verify`, `log` and
    /// `reset-head` can report on (or explicitly accept) a damaged registry instead of being refused.
    pub inspect: bool,
}

/// The registry: blobs plus metadata.
#[derive(Debug)]
pub struct Registry {
    root: PathBuf,
    witness: Option<PathBuf>,
    swept: Vec<StrayFile>,
    db: sled::Db,
    versions: sled::Tree,
    aliases: sled::Tree,
    records: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    blobs: BlobStore,
}

/// Key of a version.
pub fn version_key(model: &str, digest: &str) -> Vec<u8> {
    format!("{model}\0{digest}").into_bytes()
}

/// Key of an alias.
pub fn alias_key(zone: &DataZone, model: &str, alias: &str) -> Vec<u8> {
    format!("{}\0{}\0{model}\0{alias}", zone.zone, zone.stage).into_bytes()
}

fn record_key(model: &str, digest: &str, id: u64) -> Vec<u8> {
    let mut k = format!("{model}\0{digest}\0").into_bytes();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl Registry {
    /// The temporary files a killed writer had left, removed when this registry was opened.
    pub fn swept(&self) -> &[StrayFile] {
        &self.swept
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    fn sled_path(&self) -> PathBuf {
        self.root.join("meta.sled")
    }

    fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
        serde_json::from_slice(value).map_err(|e| Error::Corrupt { key: key_display(key), message: e.to_string() })
    }

    /// A new registry-wide id (for records).
    pub fn next_id(&self) -> Result<u64> {
        // A counter in the metadata tree (sled's generate_id jumps by a million on every reopen).
        let next = self
            .meta
            .update_and_fetch(b"next_id", |old| {
                let n = old.and_then(|v| v.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .map_err(Error::store(&self.sled_path()))?;
        Ok(next.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(1))
    }

    /// One version.
    pub fn version(&self, model: &str, digest: &str) -> Result<Option<VersionRecord>> {
        let key = version_key(model, digest);
        match self.versions.get(&key).map_err(Error::store(&self.sled_path()))? {
            Some(v) => Ok(Some(Self::decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// The stored bytes of a version record (none when there is no such version), for a compare-and-swap
    /// [`Write::expecting`] them.
    pub fn version_raw(&self, model: &str, digest: &str) -> Result<Option<Vec<u8>>> {
        let got = self.versions.get(version_key(model, digest)).map_err(Error::store(&self.sled_path()))?;
        Ok(got.map(|v| v.to_vec()))
    }

    /// One version and its stored bytes, read together: the record a decision is made on and what a later
    /// [`Write::expecting`] must find.
    pub fn version_with_raw(&self, model: &str, digest: &str) -> Result<Option<(VersionRecord, Vec<u8>)>> {
        match self.version_raw(model, digest)? {
            Some(raw) => Ok(Some((Self::decode(&version_key(model, digest), &raw)?, raw))),
            None => Ok(None),
        }
    }

    /// The stored bytes of an alias (none when it is not set), for a compare-and-swap.
    pub fn alias_raw(&self, zone: &DataZone, model: &str, alias: &str) -> Result<Option<Vec<u8>>> {
        let got = self.aliases.get(alias_key(zone, model, alias)).map_err(Error::store(&self.sled_path()))?;
        Ok(got.map(|v| v.to_vec()))
    }

    /// Every version, of one model or of all, ordered by model then push time.
    pub fn versions(&self, model: Option<&str>) -> Result<Vec<VersionRecord>> {
        let prefix = model.map(|m| format!("{m}\0").into_bytes()).unwrap_or_default();
        let mut out = Vec::new();
        for kv in self.versions.scan_prefix(prefix) {
            let (k, v) = kv.map_err(Error::store(&self.sled_path()))?;
            out.push(Self::decode::<VersionRecord>(&k, &v)?);
        }
        out.sort_by(|a, b| (a.model.as_str(), a.pushed_at).cmp(&(b.model.as_str(), b.pushed_at)));
        Ok(out)
    }

    /// Finds a version from `model@ref`, where `ref` is a full digest, a unique digest prefix (at least 8 hex
    /// characters), or an alias in any data zone (`latest` by default).
    pub fn resolve(&self, model: &str, reference: Option<&str>) -> Result<VersionRecord> {
        let reference = reference.unwrap_or("latest");
        let all = self.versions(Some(model))?;
        if all.is_empty() {
            return Err(Error::NotFound(format!(
                "model `{model}` is not in the registry at {}; push it with `sovra model push`",
                self.root.display()
            )));
        }
        let hexish = reference.len() >= 8 && reference.bytes().all(|b| b.is_ascii_hexdigit());
        if hexish {
            let hits: Vec<_> = all.iter().filter(|v| v.digest.starts_with(&reference.to_lowercase())).collect();
            match hits.len() {
                1 => return Ok(hits[0].clone()),
                0 => {}
                _ => {
                    return Err(Error::NotFound(format!(
                        "`{model}@{reference}` matches {} versions; give more digest characters",
                        hits.len()
                    )));
                }
            }
        }
        // Aliases: the one set most recently in any data zone.
        let mut best: Option<(u64, String)> = None;
        for kv in self.aliases.iter() {
            let (k, v) = kv.map_err(Error::store(&self.sled_path()))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let parts: Vec<&str> = key.split('\0').collect();
            if parts.len() == 4 && parts[2] == model && parts[3] == reference {
                let (digest, at): (String, u64) = Self::decode(&k, &v)?;
                if best.as_ref().is_none_or(|(t, _)| at >= *t) {
                    best = Some((at, digest));
                }
            }
        }
        if let Some((_, digest)) = best
            && let Some(v) = all.iter().find(|v| v.digest == digest)
        {
            return Ok(v.clone());
        }
        if reference == "latest" {
            return Ok(all.iter().max_by_key(|v| v.pushed_at).cloned().unwrap_or_else(|| all[0].clone()));
        }
        Err(Error::NotFound(format!(
            "`{model}@{reference}`: no version has that digest (prefix) or alias; `sovra model list {model}` shows them"
        )))
    }

    /// Aliases of a model: (data zone, alias, digest).
    pub fn aliases(&self, model: &str) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for kv in self.aliases.iter() {
            let (k, v) = kv.map_err(Error::store(&self.sled_path()))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let parts: Vec<&str> = key.split('\0').collect();
            if parts.len() == 4 && parts[2] == model {
                let (digest, _at): (String, u64) = Self::decode(&k, &v)?;
                out.push((format!("{}/{}", parts[0], parts[1]), parts[3].to_string(), digest));
            }
        }
        Ok(out)
    }

    /// The alias write for [`Registry::commit`].
    pub fn alias_write(zone: &DataZone, model: &str, alias: &str, digest: &str) -> Result<Write> {
        check_name("alias", alias)?;
        // Nanoseconds, so that the alias set last wins even within one second.
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let value = serde_json::to_vec(&(digest, at)).unwrap_or_default();
        Ok(Write { tree: TreeId::Aliases, key: alias_key(zone, model, alias), value, expected: None })
    }

    /// The version write for [`Registry::commit`].
    pub fn version_write(v: &VersionRecord) -> Write {
        Write {
            tree: TreeId::Versions,
            key: version_key(&v.model, &v.digest),
            value: serde_json::to_vec(v).unwrap_or_default(),
            expected: None,
        }
    }

    /// The record write for [`Registry::commit`].
    pub fn record_write(r: &SignedRecord) -> Write {
        Write {
            tree: TreeId::Records,
            key: record_key(&r.model, &r.digest, r.id),
            value: serde_json::to_vec(r).unwrap_or_default(),
            expected: None,
        }
    }

    /// Signed records of one version (all kinds, in id order).
    pub fn records(&self, model: &str, digest: &str) -> Result<Vec<SignedRecord>> {
        let mut out = Vec::new();
        for kv in self.records.scan_prefix(format!("{model}\0{digest}\0").as_bytes()) {
            let (k, v) = kv.map_err(Error::store(&self.sled_path()))?;
            out.push(Self::decode::<SignedRecord>(&k, &v)?);
        }
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    /// Writes metadata and appends `event` to the audit log in one transaction, then flushes to disk: either all
    /// of it survives a crash or none does. Returns the audit entry. A write with an expectation
    /// ([`Write::expecting`]) that no longer holds fails the whole commit with [`Error::Conflict`], naming its key.
    pub fn commit(&self, writes: &[Write], event: AuditEvent) -> Result<AuditEntry> {
        use sled::transaction::ConflictableTransactionError::Abort;
        let trees = [&self.versions, &self.aliases, &self.records, &self.audit, &self.meta];
        let result = trees.as_slice().transaction(|t| {
            for w in writes {
                let i = match w.tree {
                    TreeId::Versions => 0,
                    TreeId::Aliases => 1,
                    TreeId::Records => 2,
                };
                if let Some(expected) = &w.expected {
                    let current = t[i].get(w.key.as_slice())?;
                    if current.as_deref() != expected.as_deref() {
                        return Err(Abort(Error::Conflict { key: w.key_display() }));
                    }
                }
                t[i].insert(w.key.as_slice(), w.value.as_slice())?;
            }
            let head_bytes = t[4].get(audit::HEAD_KEY)?.map(|v| v.to_vec());
            let head = audit::read_head(&|_| head_bytes.clone()).map_err(Abort)?;
            let entry = audit::next_entry(&head, event.clone()).map_err(Abort)?;
            let bytes = serde_json::to_vec(&entry).unwrap_or_default();
            t[3].insert(&entry.seq.to_be_bytes(), bytes)?;
            let new_head = AuditHead { count: entry.seq + 1, hash: entry.hash.clone() };
            t[4].insert(audit::HEAD_KEY, serde_json::to_vec(&new_head).unwrap_or_default())?;
            Ok(entry)
        });
        let entry = result.map_err(|e| match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => {
                Error::Store { path: self.sled_path(), message: e.to_string() }
            }
        })?;
        self.db.flush().map_err(Error::store(&self.sled_path()))?;
        self.write_heads(&AuditHead { count: entry.seq + 1, hash: entry.hash.clone() }, entry.seq)?;
        Ok(entry)
    }

    /// Appends an event (a denial, ...) with no other write.
    pub fn audit(&self, event: AuditEvent) -> Result<AuditEntry> {
        self.commit(&[], event)
    }

    /// Every audit entry in key order (entries that do not decode are skipped; [`Registry::verify_audit`] reports
    /// them).
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for kv in self.audit.iter() {
            let (_, v) = kv.map_err(Error::store(&self.sled_path()))?;
            if let Ok(e) = serde_json::from_slice(&v) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Every audit entry exactly as stored (compact JSON, one entry each), in key order: what `sovra audit export`
    /// writes, one per line (docs/audit-log.md).
    pub fn audit_raw(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for kv in self.audit.iter() {
            let (_, v) = kv.map_err(Error::store(&self.sled_path()))?;
            out.push(v.to_vec());
        }
        Ok(out)
    }

    /// Raw access to the audit tree, for forensic tools and the tamper-detection tests. Writing through it
    /// bypasses the chain, which is exactly what [`Registry::verify_audit`] detects.
    #[doc(hidden)]
    pub fn raw_audit_tree(&self) -> &sled::Tree {
        &self.audit
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_hardening;

#[cfg(test)]
mod tests_datazone;

#[cfg(test)]
mod tests_cas;
