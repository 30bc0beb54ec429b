//! Content-addressed blobs, one namespace per data zone, each zone in its own store, encrypted at rest.
//!
//! A blob is named by the SHA-256 of its *plaintext*: `zones/<zone>/<stage>/sha256/<first two hex>/<digest>` in
//! the store of its data zone ([`crate::stores`]: a local directory or an S3 bucket; by default
//! `<registry>/blobs`). The object holds the ciphertext ([`crate::crypt`]); `<digest>.key` beside it holds the
//! blob's data key wrapped by the zone's key-encryption key. Every write is hashed while it streams and refused
//! (and removed) when the content does not match the expected digest; every read decrypts, authenticates and
//! hashes, so [`BlobStore::digest`] re-verifies a stored copy end to end. A copy between data zones streams in
//! chunks: it decrypts under the source zone's key and re-encrypts under a fresh data key of the target zone.

use crate::backend::Backend;
use crate::crypt::{self, KeyObject};
use crate::error::{Error, Result};
use crate::hex;
use crate::keys::{FileKey, KeyProvider};
use crate::pipes::{EncPipe, FilePlain, MemPlain, Plain, StoreReader};
use crate::stores::{self, Stores};
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use sha2::{Digest, Sha256};
use sovra_domain::datazone::{DataZone, Stage};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A content-addressed, encrypted blob store with one namespace (and possibly one store) per data zone.
pub struct BlobStore {
    rt: tokio::runtime::Runtime,
    default: Arc<Backend>,
    stores: Stores,
    /// The stores of the entries, built on first use (so that a zone whose credentials are missing or whose
    /// endpoint is down does not stop commands about other zones).
    backends: Mutex<BTreeMap<String, Arc<Backend>>>,
    /// Where the default keys (`<zone>.kek`) live; `None`: generated in memory, lost with the store.
    keys_dir: Option<PathBuf>,
    keys: Mutex<BTreeMap<String, Arc<dyn KeyProvider>>>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("default", &self.default.description)
            .field("stores", &self.stores.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A stored blob as [`BlobStore::list_all`] lists it: data zone, digest, size in bytes (of the stored object).
pub type StoredBlob = (DataZone, String, u64);

/// What [`BlobStore::rotate_key`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RotateReport {
    /// The zone.
    pub zone: String,
    /// The new key's id.
    pub new_key: String,
    /// Data keys re-wrapped under the new key.
    pub rewrapped: usize,
    /// Data keys that the new key already wrapped (an interrupted rotation run again).
    pub already: usize,
}

/// True when `digest` is 64 lowercase hex characters.
pub fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A data zone's store and key, resolved.
struct Zoned {
    backend: Arc<Backend>,
    dz: String,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Blob(format!("cannot start the I/O runtime: {e}")))
}

impl BlobStore {
    /// A store on the local filesystem under `dir` (created if missing) for every data zone, with default keys
    /// in `dir/../keys`.
    pub fn local(dir: &Path) -> Result<BlobStore> {
        let keys = dir.parent().unwrap_or(dir).join("keys");
        Self::configured(dir, &keys, &Stores::new())
    }

    /// The stores of a `stores:` map (see [`crate::stores`]); data zones without an entry use a local store
    /// under `default_dir`, and entries without a key the default keys under `keys_dir`. Each entry's store is
    /// built when first used: missing credentials or an unreachable endpoint are reported then, naming the zone
    /// and the store.
    pub fn configured(default_dir: &Path, keys_dir: &Path, stores: &Stores) -> Result<BlobStore> {
        stores::validate(stores)?;
        Ok(BlobStore {
            rt: runtime()?,
            default: Arc::new(stores::local_backend(default_dir)?),
            stores: stores.clone(),
            backends: Mutex::new(BTreeMap::new()),
            keys_dir: Some(keys_dir.to_path_buf()),
            keys: Mutex::new(BTreeMap::new()),
        })
    }

    /// A store over any `object_store` backend for every data zone, with keys generated in memory (lost with
    /// this value: for tests and throwaway tools).
    pub fn with_store(store: Arc<dyn ObjectStore>, description: String) -> Result<BlobStore> {
        Ok(BlobStore {
            rt: runtime()?,
            default: Arc::new(Backend { store, description, local: None }),
            stores: Stores::new(),
            backends: Mutex::new(BTreeMap::new()),
            keys_dir: None,
            keys: Mutex::new(BTreeMap::new()),
        })
    }

    /// The stores map this store was built from.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The directory of the default local store, if it is one.
    pub fn local_dir(&self) -> Option<&Path> {
        self.default.local.as_deref()
    }

    /// Every local directory holding blobs (the default one and each `local:` store), for the temporary file
    /// sweep.
    pub fn local_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            self.default.local.iter().chain(self.stores.values().filter_map(|s| s.local.as_ref())).cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    /// The object path of a blob.
    pub fn location(zone: &DataZone, digest: &str) -> StorePath {
        StorePath::from(format!("zones/{}/{}/sha256/{}/{digest}", zone.zone, zone.stage, digest.get(..2).unwrap_or("")))
    }

    /// The object path of a blob's key object.
    pub fn key_location(zone: &DataZone, digest: &str) -> StorePath {
        StorePath::from(format!("{}.key", Self::location(zone, digest)))
    }

    /// Which store holds a data zone, in words (`data zone store `fr-par-secnum`: S3 bucket … at …`).
    pub fn describe(&self, zone: &DataZone) -> String {
        self.zoned(zone).map(|z| z.backend.description.clone()).unwrap_or_else(|e| e.to_string())
    }

    fn check(digest: &str) -> Result<()> {
        if is_sha256_hex(digest) {
            Ok(())
        } else {
            Err(Error::InvalidName(format!("`{digest}` is not a SHA-256 digest (64 lowercase hex characters)")))
        }
    }

    fn zoned(&self, dz: &DataZone) -> Result<Zoned> {
        let backend = match stores::entry_for(&self.stores, dz) {
            Some((name, _)) => self.backend(name)?,
            None => self.default.clone(),
        };
        Ok(Zoned { backend, dz: dz.to_string() })
    }

    /// The store of entry `name`, built on first use.
    fn backend(&self, name: &str) -> Result<Arc<Backend>> {
        let mut built = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = built.get(name) {
            return Ok(b.clone());
        }
        let spec = self.stores.get(name).ok_or_else(|| Error::Config(format!("no entry `{name}`")))?;
        let b = Arc::new(stores::build_backend(name, spec)?);
        built.insert(name.to_string(), b.clone());
        Ok(b)
    }

    /// The key-encryption key of a data zone: its entry's key, else the zone's default key (generated on first
    /// use, with a notice on standard error).
    fn key(&self, dz: &DataZone) -> Result<Arc<dyn KeyProvider>> {
        let (cache, spec) = match stores::entry_for(&self.stores, dz) {
            Some((name, s)) if s.key.is_some() => (format!("entry:{name}"), s.key.clone()),
            _ => (format!("zone:{}", dz.zone), None),
        };
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = keys.get(&cache) {
            return Ok(k.clone());
        }
        let key: Arc<dyn KeyProvider> = match (&spec, &self.keys_dir) {
            (Some(spec), _) => stores::load_key(&cache["entry:".len()..], spec)?,
            (None, Some(dir)) => Arc::new(default_key(dir, &dz.zone)?),
            (None, None) => Arc::new(FileKey::ephemeral()?),
        };
        keys.insert(cache, key.clone());
        Ok(key)
    }

    /// True when the blob exists in the data zone.
    pub fn exists(&self, zone: &DataZone, digest: &str) -> Result<bool> {
        Self::check(digest)?;
        self.zoned(zone)?.backend.exists(&self.rt, &Self::location(zone, digest))
    }

    /// Encrypts `plain` into blob `digest` of `zone`: the key object first, then the ciphertext, which becomes
    /// visible only when `plain` hashed to `digest`. Returns the plaintext size.
    fn write_blob(&self, zone: &DataZone, digest: &str, plain: &mut dyn Plain) -> Result<u64> {
        let z = self.zoned(zone)?;
        let key = self.key(zone)?;
        let (loc, kloc) = (Self::location(zone, digest), Self::key_location(zone, digest));
        let (object, enc) = crypt::seal_new(key.as_ref(), &zone.zone, &z.dz, digest)?;
        let json = serde_json::to_vec(&object).unwrap_or_default();
        z.backend.put_small(&self.rt, &kloc, Bytes::from(json))?;
        let mut pipe = EncPipe { plain, enc: Some(enc), queue: VecDeque::new(), size: 0 };
        match z.backend.write(&self.rt, &loc, &mut pipe) {
            Ok(()) => Ok(pipe.size),
            Err(e) => {
                let _ = z.backend.delete(&self.rt, &kloc);
                Err(e)
            }
        }
    }

    /// A reader of blob `digest` of `zone` that decrypts, authenticates and hashes.
    fn reader(&self, zone: &DataZone, digest: &str) -> Result<StoreReader> {
        let z = self.zoned(zone)?;
        let (loc, kloc) = (Self::location(zone, digest), Self::key_location(zone, digest));
        let location = format!("{loc} ({})", z.backend.description);
        let Some(key_bytes) = z.backend.get_small(&self.rt, &kloc)? else {
            return Err(if z.backend.exists(&self.rt, &loc)? {
                Error::Tampered {
                    location,
                    message: "there is no key object beside it (written before encryption at rest, or its key \
                              object was deleted)"
                        .into(),
                }
            } else {
                Error::Blob(format!("{location}: not found in data zone {zone}"))
            });
        };
        let key = self.key(zone)?;
        let (object, data_key) = crypt::open_existing(key.as_ref(), &key_bytes, &location, &z.dz, digest)?;
        let dec = crypt::decryptor(&object, &data_key, &location, digest)?;
        let source = z.backend.open(&self.rt, &loc)?;
        Ok(StoreReader {
            source,
            dec: Some(dec),
            queue: VecDeque::new(),
            hasher: Sha256::new(),
            size: 0,
            expected: digest.to_string(),
            location,
        })
    }

    /// Streams the local file `file` into the data zone as blob `expected`; the content is hashed on the way and
    /// the blob removed again if it does not hash to `expected`. Returns the size. An existing blob is kept
    /// (content addressing) after its digest is re-checked.
    pub fn put_file(&self, zone: &DataZone, file: &Path, expected: &str) -> Result<u64> {
        Self::check(expected)?;
        if self.exists(zone, expected)? {
            self.verify(zone, expected)?;
            return std::fs::metadata(file).map(|m| m.len()).map_err(|source| Error::Io {
                path: file.to_path_buf(),
                action: "cannot read",
                source,
            });
        }
        let f = std::fs::File::open(file).map_err(|source| Error::Io {
            path: file.to_path_buf(),
            action: "cannot open",
            source,
        })?;
        let mut plain =
            FilePlain { file: f, path: file.to_path_buf(), hasher: Sha256::new(), expected: expected.into() };
        self.write_blob(zone, expected, &mut plain)
    }

    /// Stores a small blob from memory (a bundle, a statement) and returns its digest.
    pub fn put_bytes(&self, zone: &DataZone, bytes: &[u8]) -> Result<String> {
        let digest = hex(&Sha256::digest(bytes));
        if self.exists(zone, &digest)? {
            self.verify(zone, &digest)?;
            return Ok(digest);
        }
        self.write_blob(zone, &digest, &mut MemPlain(Some(Bytes::copy_from_slice(bytes))))?;
        Ok(digest)
    }

    /// Reads a small blob into memory, checking its digest.
    pub fn get_bytes(&self, zone: &DataZone, digest: &str) -> Result<Vec<u8>> {
        Self::check(digest)?;
        let mut r = self.reader(zone, digest)?;
        let mut out = Vec::new();
        while let Some(p) = r.next(&self.rt)? {
            out.extend_from_slice(&p);
        }
        r.check()?;
        Ok(out)
    }

    /// Re-reads a blob (decrypting and authenticating it) and returns what its plaintext hashes to.
    pub fn digest(&self, zone: &DataZone, digest: &str) -> Result<String> {
        Self::check(digest)?;
        let mut r = self.reader(zone, digest)?;
        while r.next(&self.rt)?.is_some() {}
        Ok(hex(&r.hasher.clone().finalize()))
    }

    /// Re-reads a blob and fails with [`Error::DigestMismatch`] unless it hashes to its name (or with
    /// [`Error::Tampered`] when its ciphertext fails authentication).
    pub fn verify(&self, zone: &DataZone, digest: &str) -> Result<()> {
        let actual = self.digest(zone, digest)?;
        if actual != digest {
            return Err(Error::DigestMismatch {
                location: Self::location(zone, digest).to_string(),
                expected: digest.into(),
                actual,
            });
        }
        Ok(())
    }

    /// Copies a blob from one data zone to another as an independent copy: streamed in chunks, decrypted under
    /// the source zone's key, hashed, and encrypted under a fresh data key wrapped by the target zone's key; the
    /// target becomes visible only when the content hashed to `digest`. An existing target blob is kept.
    pub fn copy(&self, from: &DataZone, to: &DataZone, digest: &str) -> Result<()> {
        Self::check(digest)?;
        if self.exists(to, digest)? {
            return Ok(());
        }
        let mut reader = self.reader(from, digest)?;
        self.write_blob(to, digest, &mut reader).map(|_| ())
    }

    /// Writes a blob to a local file (through a temporary file renamed into place), checking its digest.
    pub fn get_to_file(&self, zone: &DataZone, digest: &str, dest: &Path) -> Result<u64> {
        Self::check(digest)?;
        let io = |action: &'static str| move |source| Error::Io { path: dest.to_path_buf(), action, source };
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io("cannot create the directory"))?;
        }
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dest.with_file_name(format!("{}{}-{name}", crate::sweep::TEMP_PREFIX, std::process::id()));
        let result = (|| -> Result<u64> {
            let mut r = self.reader(zone, digest)?;
            let mut out = std::fs::File::create(&tmp).map_err(io("cannot write"))?;
            while let Some(p) = r.next(&self.rt)? {
                out.write_all(&p).map_err(io("cannot write"))?;
            }
            r.check()?;
            out.sync_all().map_err(io("cannot write"))?;
            Ok(r.size)
        })();
        match result {
            Ok(size) => {
                std::fs::rename(&tmp, dest).map_err(io("cannot write"))?;
                Ok(size)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Every blob in every store: (data zone, digest, size), in path order, and the objects under `zones/` that
    /// are not blobs of a data zone that store serves (other names, key objects without their blob, blobs of a
    /// zone routed to another store), each with its store.
    pub fn list_all(&self) -> Result<(Vec<StoredBlob>, Vec<String>)> {
        let mut all: Vec<(String, Arc<Backend>)> = vec![("".into(), self.default.clone())];
        for name in self.stores.keys() {
            all.push((name.clone(), self.backend(name)?));
        }
        let (mut blobs, mut other) = (Vec::new(), Vec::new());
        for (entry, backend) in all {
            let objects = backend.list(&self.rt, "zones")?;
            let names: std::collections::BTreeSet<&str> = objects.iter().map(|(p, _)| p.as_str()).collect();
            for (path, size) in &objects {
                if let Some(blob) = path.strip_suffix(".key")
                    && names.contains(blob)
                {
                    continue;
                }
                match parse_blob_path(path) {
                    Some((dz, digest)) => {
                        let routed = stores::entry_for(&self.stores, &dz).map(|(k, _)| k).unwrap_or("");
                        if routed == entry {
                            blobs.push((dz, digest, *size));
                        } else {
                            other.push(format!(
                                "{path} (in {}, but data zone {dz} is served by another store)",
                                backend.description
                            ));
                        }
                    }
                    None => other.push(if entry.is_empty() {
                        path.clone()
                    } else {
                        format!("{path} ({})", backend.description)
                    }),
                }
            }
        }
        blobs.sort();
        other.sort();
        Ok((blobs, other))
    }

    /// Deletes a blob and its key object (missing is fine).
    pub fn delete(&self, zone: &DataZone, digest: &str) -> Result<()> {
        Self::check(digest)?;
        let z = self.zoned(zone)?;
        z.backend.delete(&self.rt, &Self::location(zone, digest))?;
        z.backend.delete(&self.rt, &Self::key_location(zone, digest))
    }

    /// Re-wraps every data key of `zone` (all its stages) under `new`, without touching the blobs: each key
    /// object is unwrapped with the zone's current key, wrapped with `new` (version + 1) and replaced atomically.
    /// Key objects `new` already wraps are left (so an interrupted rotation is finished by running it again).
    /// When the zone uses its default key (no `key:` in its entry), `new_default` (the new key's file) replaces
    /// `<registry>/keys/<zone>.kek` afterwards.
    pub fn rotate_key(
        &self,
        zone: &str,
        new: Arc<dyn KeyProvider>,
        new_default: Option<&Path>,
    ) -> Result<RotateReport> {
        let known = self.stores.keys().any(|k| stores::parse_name(k).map(|(z, _)| z == zone).unwrap_or(false));
        let default_path = self.keys_dir.as_ref().map(|d| d.join(format!("{zone}.kek")));
        if !known && !default_path.as_ref().is_some_and(|p| p.exists()) {
            return Err(Error::Config(format!(
                "zone `{zone}` has no entry in `stores:` and no default key ({}); nothing to rotate",
                default_path.map(|p| p.display().to_string()).unwrap_or_else(|| "in memory".into())
            )));
        }
        let mut report = RotateReport { zone: zone.into(), new_key: new.key_id(), rewrapped: 0, already: 0 };
        let mut uses_default = false;
        for stage in Stage::ALL {
            let dz = DataZone::new(zone, stage)?;
            uses_default |= stores::entry_for(&self.stores, &dz).and_then(|(_, s)| s.key.as_ref()).is_none();
            let z = self.zoned(&dz)?;
            let prefix = format!("zones/{zone}/{stage}");
            for (path, _) in z.backend.list(&self.rt, &prefix)? {
                let Some(digest) = path.strip_suffix(".key").and_then(parse_blob_path).map(|(_, d)| d) else {
                    continue;
                };
                let kloc = Self::key_location(&dz, &digest);
                let location = format!("{kloc} ({})", z.backend.description);
                let Some(bytes) = z.backend.get_small(&self.rt, &kloc)? else { continue };
                let current: KeyObject = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Tampered { location: location.clone(), message: e.to_string() })?;
                if current.kek.id == new.key_id() {
                    report.already += 1;
                    continue;
                }
                let old = self.key(&dz)?;
                let (mut object, data_key) = crypt::open_existing(old.as_ref(), &bytes, &location, &z.dz, &digest)?;
                let aad = crypt::wrap_aad(&z.dz, &digest);
                let wrapped = new.wrap(&data_key, &aad)?;
                new.unwrap(&wrapped, &aad)?;
                object.wrapped_key = hex(&wrapped);
                object.kek.id = new.key_id();
                object.kek.version = object.kek.version.saturating_add(1);
                z.backend.put_small(&self.rt, &kloc, Bytes::from(serde_json::to_vec(&object).unwrap_or_default()))?;
                report.rewrapped += 1;
            }
        }
        if uses_default && let (Some(path), Some(src)) = (default_path, new_default) {
            replace_default_key(src, &path)?;
        }
        // This store now reads with the new key.
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.retain(|k, _| {
            k != &format!("zone:{zone}")
                && !self.stores.keys().any(|n| k == &format!("entry:{n}") && n.split('/').next() == Some(zone))
        });
        Ok(report)
    }
}

/// `zones/<zone>/<stage>/sha256/<xx>/<digest>` → (data zone, digest).
fn parse_blob_path(path: &str) -> Option<(DataZone, String)> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["zones", zone, stage, "sha256", xx, digest] if is_sha256_hex(digest) && digest.get(..2) == Some(*xx) => {
            stage.parse().ok().and_then(|s| DataZone::new(zone, s).ok()).map(|dz| (dz, digest.to_string()))
        }
        _ => None,
    }
}

/// Loads `<dir>/<zone>.kek`, generating it (mode 0600) with a notice on first use.
fn default_key(dir: &Path, zone: &str) -> Result<FileKey> {
    let path = dir.join(format!("{zone}.kek"));
    if path.exists() {
        return FileKey::load(&path);
    }
    let key = FileKey::generate(&path)?;
    eprintln!(
        "sovra: generated the key-encryption key of zone {zone} at {} (mode 0600). A key kept beside the data \
         protects nothing: in production, name a key file on another volume or a PKCS#11 token in the zone's \
         `stores:` entry (docs/registry.md).",
        path.display()
    );
    Ok(key)
}

fn replace_default_key(src: &Path, dest: &Path) -> Result<()> {
    FileKey::load(src)?;
    let bad =
        |e: std::io::Error| Error::Io { path: dest.to_path_buf(), action: "cannot replace the default key", source: e };
    let bytes = zeroize::Zeroizing::new(std::fs::read(src).map_err(bad)?);
    let mut tmp = tempfile::Builder::new()
        .prefix(crate::sweep::TEMP_PREFIX)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dest.parent().unwrap_or(Path::new(".")))
        .map_err(bad)?;
    tmp.write_all(&bytes).and_then(|()| tmp.as_file().sync_all()).map_err(bad)?;
    tmp.persist(dest).map_err(|e| bad(e.error))?;
    Ok(())
}
