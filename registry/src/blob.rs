//! Content-addressed blobs, one namespace per data zone, behind the `object_store` interface.
//!
//! A blob is named by the SHA-256 of its content: `zones/<zone>/<stage>/sha256/<first two hex>/<digest>`. The local
//! filesystem backend (`object_store::local::LocalFileSystem`) is the default; any other `ObjectStore` (S3 and
//! S3-compatible stores through object_store's `aws` feature) plugs into [`BlobStore::with_store`] unchanged. Every
//! write is hashed while it streams and refused (and removed) when the content does not match the expected digest;
//! [`BlobStore::digest`] re-reads a stored blob and hashes it, which is how promotions re-verify a copy.
//!
//! On the local filesystem the store writes blobs itself rather than through `object_store`'s multipart upload:
//! that upload stages to `<name>#<n>`, a name that says neither who wrote it nor that it is temporary, and leaves
//! it behind when the process is killed (a 1 GiB promotion left 214 MiB). Here each blob streams into a
//! `.sovra-tmp-<pid>-…` file in its destination directory, is synced, renamed into place and the directory synced;
//! a killed writer's file is found and removed by [`crate::sweep`] at the next open.

use crate::error::{Error, Result};
use crate::hex;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use sovra_domain::datazone::DataZone;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Read size while streaming a file into the store, and part size of uploads: 8 MiB.
const CHUNK: usize = 8 << 20;

/// The bytes of a stored blob, chunk by chunk. A local file is read directly in [`CHUNK`]-sized reads:
/// object_store's own stream of a local file reads 8 KiB at a time, each through the blocking thread pool, which
/// made a 4 GiB promotion spend most of its time in the kernel.
enum Source {
    File(std::fs::File, u64),
    Stream(futures::stream::BoxStream<'static, object_store::Result<Bytes>>),
}

impl Source {
    async fn open(store: &dyn ObjectStore, loc: &StorePath) -> object_store::Result<Source> {
        let got = store.get_opts(loc, object_store::GetOptions::default()).await?;
        let range = got.range.clone();
        Ok(match got.payload {
            object_store::GetResultPayload::File(mut file, path) => {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(range.start)).map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("{}: {e}", path.display()).into(),
                })?;
                Source::File(file, range.end - range.start)
            }
            object_store::GetResultPayload::Stream(s) => Source::Stream(s),
        })
    }

    async fn next(&mut self) -> Option<object_store::Result<Bytes>> {
        match self {
            Source::File(file, remaining) => {
                if *remaining == 0 {
                    return None;
                }
                let mut buf = vec![0u8; (*remaining).min(CHUNK as u64) as usize];
                match read_full(file, &mut buf) {
                    Ok(0) => Some(Err(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: "the blob file is shorter than its listed size".into(),
                    })),
                    Ok(n) => {
                        buf.truncate(n);
                        *remaining -= n as u64;
                        Some(Ok(Bytes::from(buf)))
                    }
                    Err(e) => Some(Err(object_store::Error::Generic { store: "LocalFileSystem", source: e.into() })),
                }
            }
            Source::Stream(s) => s.next().await,
        }
    }
}

/// A content-addressed blob store with one namespace per data zone.
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
    description: String,
    /// The directory of a local filesystem store (blobs are then written directly, see the module docs).
    local: Option<PathBuf>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("store", &self.description).finish()
    }
}

/// A stored blob as [`BlobStore::list_all`] lists it: data zone, digest, size in bytes.
pub type StoredBlob = (DataZone, String, u64);

/// True when `digest` is 64 lowercase hex characters.
pub fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobStore {
    /// A store on the local filesystem under `dir` (created if missing).
    pub fn local(dir: &Path) -> Result<BlobStore> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            action: "cannot create the blob directory",
            source,
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::Blob(format!("{}: {e}", dir.display())))?;
        let mut store = Self::with_store(Arc::new(fs), format!("local filesystem {}", dir.display()))?;
        store.local = Some(dir.to_path_buf());
        Ok(store)
    }

    /// The directory of a local filesystem store, if this is one.
    pub fn local_dir(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// A store over any `object_store` backend (e.g. `AmazonS3Builder::from_env().build()` for S3).
    pub fn with_store(store: Arc<dyn ObjectStore>, description: String) -> Result<BlobStore> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| Error::Blob(format!("cannot start the I/O runtime: {e}")))?;
        Ok(BlobStore { store, rt, description, local: None })
    }

    /// The object path of a blob.
    pub fn location(zone: &DataZone, digest: &str) -> StorePath {
        StorePath::from(format!("zones/{}/{}/sha256/{}/{digest}", zone.zone, zone.stage, digest.get(..2).unwrap_or("")))
    }

    fn check(digest: &str) -> Result<()> {
        if is_sha256_hex(digest) {
            Ok(())
        } else {
            Err(Error::InvalidName(format!("`{digest}` is not a SHA-256 digest (64 lowercase hex characters)")))
        }
    }

    /// True when the blob exists in the data zone.
    pub fn exists(&self, zone: &DataZone, digest: &str) -> Result<bool> {
        Self::check(digest)?;
        let loc = Self::location(zone, digest);
        self.rt.block_on(async {
            match self.store.head(&loc).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(Error::Blob(format!("{loc}: {e}"))),
            }
        })
    }

    /// Streams the local file `file` into the data zone as blob `expected`; the content is hashed on the way and
    /// the blob removed again if it does not hash to `expected`. Returns the size. An existing blob is kept
    /// (content addressing) after its digest is re-checked.
    pub fn put_file(&self, zone: &DataZone, file: &Path, expected: &str) -> Result<u64> {
        Self::check(expected)?;
        let loc = Self::location(zone, expected);
        if self.exists(zone, expected)? {
            self.verify(zone, expected)?;
            return std::fs::metadata(file).map(|m| m.len()).map_err(|source| Error::Io {
                path: file.to_path_buf(),
                action: "cannot read",
                source,
            });
        }
        let mut f = std::fs::File::open(file).map_err(|source| Error::Io {
            path: file.to_path_buf(),
            action: "cannot open",
            source,
        })?;
        if let Some(dir) = &self.local {
            let mut next = || -> Result<Option<Bytes>> {
                let mut buf = vec![0u8; CHUNK];
                let n = read_full(&mut f, &mut buf).map_err(|source| Error::Io {
                    path: file.to_path_buf(),
                    action: "cannot read",
                    source,
                })?;
                buf.truncate(n);
                Ok((n > 0).then(|| Bytes::from(buf)))
            };
            let (actual, size) = write_local(dir, &loc, expected, &mut next)?;
            if actual != expected {
                return Err(Error::DigestMismatch {
                    location: file.display().to_string(),
                    expected: expected.into(),
                    actual,
                });
            }
            return Ok(size);
        }
        let blob_err = |e: object_store::Error| Error::Blob(format!("{loc}: {e}"));
        let result: Result<(String, u64)> = self.rt.block_on(async {
            let upload = self.store.put_multipart(&loc).await.map_err(blob_err)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = match read_full(&mut f, &mut buf) {
                    Ok(n) => n,
                    Err(source) => {
                        let _ = writer.abort().await;
                        return Err(Error::Io { path: file.to_path_buf(), action: "cannot read", source });
                    }
                };
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                hasher.update(&buf);
                size += n as u64;
                writer.wait_for_capacity(2).await.map_err(blob_err)?;
                writer.put(Bytes::from(buf));
            }
            writer.finish().await.map_err(blob_err)?;
            Ok((hex(&hasher.finalize()), size))
        });
        let (actual, size) = result?;
        if actual != expected {
            self.delete(zone, expected)?;
            return Err(Error::DigestMismatch {
                location: file.display().to_string(),
                expected: expected.into(),
                actual,
            });
        }
        Ok(size)
    }

    /// Stores a small blob from memory (a bundle, a statement) and returns its digest.
    pub fn put_bytes(&self, zone: &DataZone, bytes: &[u8]) -> Result<String> {
        let digest = hex(&Sha256::digest(bytes));
        let loc = Self::location(zone, &digest);
        if let Some(dir) = &self.local {
            let mut once = Some(Bytes::copy_from_slice(bytes));
            write_local(dir, &loc, &digest, &mut || Ok(once.take()))?;
            return Ok(digest);
        }
        self.rt
            .block_on(self.store.put(&loc, Bytes::copy_from_slice(bytes).into()))
            .map_err(|e| Error::Blob(format!("{loc}: {e}")))?;
        Ok(digest)
    }

    /// Reads a small blob into memory, checking its digest.
    pub fn get_bytes(&self, zone: &DataZone, digest: &str) -> Result<Vec<u8>> {
        Self::check(digest)?;
        let loc = Self::location(zone, digest);
        let bytes = self
            .rt
            .block_on(async { self.store.get(&loc).await?.bytes().await })
            .map_err(|e| Error::Blob(format!("{loc}: {e}")))?;
        let actual = hex(&Sha256::digest(&bytes));
        if actual != digest {
            return Err(Error::DigestMismatch { location: loc.to_string(), expected: digest.into(), actual });
        }
        Ok(bytes.to_vec())
    }

    /// Re-reads a blob and returns what its content hashes to.
    pub fn digest(&self, zone: &DataZone, digest: &str) -> Result<String> {
        Self::check(digest)?;
        let loc = Self::location(zone, digest);
        self.rt
            .block_on(async {
                let mut stream = Source::open(self.store.as_ref(), &loc).await?;
                let mut hasher = Sha256::new();
                while let Some(chunk) = stream.next().await {
                    hasher.update(&chunk?);
                }
                Ok::<_, object_store::Error>(hex(&hasher.finalize()))
            })
            .map_err(|e| Error::Blob(format!("{loc}: {e}")))
    }

    /// Re-reads a blob and fails with [`Error::DigestMismatch`] unless it hashes to its name.
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

    /// Copies a blob from one data zone to another as an independent copy: its bytes are streamed from the
    /// source into a new object (hashed on the way, removed again if they do not match), never hard-linked, so
    /// each zone's directory may sit on its own volume and a change to one copy cannot reach the other. An
    /// existing target blob is kept.
    pub fn copy(&self, from: &DataZone, to: &DataZone, digest: &str) -> Result<()> {
        Self::check(digest)?;
        if self.exists(to, digest)? {
            return Ok(());
        }
        let (src, dst) = (Self::location(from, digest), Self::location(to, digest));
        let err = |e: object_store::Error| Error::Blob(format!("copy {src} → {dst}: {e}"));
        if let Some(dir) = &self.local {
            let mut stream = self.rt.block_on(Source::open(self.store.as_ref(), &src)).map_err(err)?;
            let mut next = || self.rt.block_on(stream.next()).transpose().map_err(err);
            let (actual, _) = write_local(dir, &dst, digest, &mut next)?;
            if actual != digest {
                return Err(Error::DigestMismatch { location: src.to_string(), expected: digest.into(), actual });
            }
            return Ok(());
        }
        let actual = self.rt.block_on(async {
            let mut stream = Source::open(self.store.as_ref(), &src).await.map_err(err)?;
            let upload = self.store.put_multipart(&dst).await.map_err(err)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
            let mut hasher = Sha256::new();
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(err(e));
                    }
                };
                hasher.update(&chunk);
                writer.wait_for_capacity(2).await.map_err(err)?;
                writer.put(chunk);
            }
            writer.finish().await.map_err(err)?;
            Ok::<_, Error>(hex(&hasher.finalize()))
        })?;
        if actual != digest {
            self.delete(to, digest)?;
            return Err(Error::DigestMismatch { location: src.to_string(), expected: digest.into(), actual });
        }
        Ok(())
    }

    /// Writes a blob to a local file (through a temporary file renamed into place), checking its digest.
    pub fn get_to_file(&self, zone: &DataZone, digest: &str, dest: &Path) -> Result<u64> {
        Self::check(digest)?;
        let loc = Self::location(zone, digest);
        let io = |action: &'static str| move |source| Error::Io { path: dest.to_path_buf(), action, source };
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io("cannot create the directory"))?;
        }
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dest.with_file_name(format!("{}{}-{name}", crate::sweep::TEMP_PREFIX, std::process::id()));
        let result = self.rt.block_on(async {
            let mut out = std::fs::File::create(&tmp).map_err(io("cannot write"))?;
            let mut stream =
                Source::open(self.store.as_ref(), &loc).await.map_err(|e| Error::Blob(format!("{loc}: {e}")))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| Error::Blob(format!("{loc}: {e}")))?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                out.write_all(&chunk).map_err(io("cannot write"))?;
            }
            out.sync_all().map_err(io("cannot write"))?;
            Ok::<_, Error>((hex(&hasher.finalize()), size))
        });
        match result {
            Ok((actual, size)) if actual == digest => {
                std::fs::rename(&tmp, dest).map_err(io("cannot write"))?;
                Ok(size)
            }
            Ok((actual, _)) => {
                let _ = std::fs::remove_file(&tmp);
                Err(Error::DigestMismatch { location: loc.to_string(), expected: digest.into(), actual })
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Every blob in the store: (data zone, digest, size), in path order, and the paths of other objects under
    /// `zones/` that are not named like blobs.
    pub fn list_all(&self) -> Result<(Vec<StoredBlob>, Vec<String>)> {
        let metas = self.rt.block_on(async {
            let mut stream = self.store.list(Some(&StorePath::from("zones")));
            let mut out = Vec::new();
            while let Some(m) = stream.next().await {
                out.push(m?);
            }
            Ok::<_, object_store::Error>(out)
        });
        let metas = metas.map_err(|e| Error::Blob(format!("cannot list the blobs: {e}")))?;
        let (mut blobs, mut other) = (Vec::new(), Vec::new());
        for m in metas {
            let path = m.location.to_string();
            let parts: Vec<&str> = path.split('/').collect();
            let parsed = match parts.as_slice() {
                ["zones", zone, stage, "sha256", xx, digest]
                    if is_sha256_hex(digest) && digest.get(..2) == Some(*xx) =>
                {
                    stage.parse().ok().and_then(|s| DataZone::new(zone, s).ok()).map(|dz| (dz, digest.to_string()))
                }
                _ => None,
            };
            match parsed {
                Some((dz, digest)) => blobs.push((dz, digest, m.size)),
                None => other.push(path),
            }
        }
        blobs.sort();
        other.sort();
        Ok((blobs, other))
    }

    /// Deletes a blob (missing is fine).
    pub fn delete(&self, zone: &DataZone, digest: &str) -> Result<()> {
        Self::check(digest)?;
        let loc = Self::location(zone, digest);
        match self.rt.block_on(self.store.delete(&loc)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Blob(format!("{loc}: {e}"))),
        }
    }
}

/// Streams chunks from `next` into blob `loc` of the local store at `dir`: a `.sovra-tmp-<pid>-…` file in the
/// blob's directory, hashed on the way; renamed into place (file and directory synced) only when the content
/// hashes to `expected`, else removed. Returns what the content hashed to and its size.
fn write_local(
    dir: &Path,
    loc: &StorePath,
    expected: &str,
    next: &mut dyn FnMut() -> Result<Option<Bytes>>,
) -> Result<(String, u64)> {
    let dest = dir.join(loc.as_ref());
    let parent = dest.parent().unwrap_or(dir).to_path_buf();
    let io = |action: &'static str| {
        let dest = dest.clone();
        move |source| Error::Io { path: dest, action, source }
    };
    std::fs::create_dir_all(&parent).map_err(io("cannot create the blob directory"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{}{}-", crate::sweep::TEMP_PREFIX, std::process::id()))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&parent)
        .map_err(io("cannot create a temporary file"))?;
    // Read and hash here while a second thread writes (two chunks in flight), so that the disk and the hash
    // overlap as they did in object_store's upload. On any error `tmp` is dropped, which removes the file.
    let file = tmp.as_file_mut();
    let (hashed, written) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(2);
        let writer = scope.spawn(move || -> std::io::Result<()> {
            for chunk in rx {
                file.write_all(&chunk)?;
            }
            Ok(())
        });
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut read = || -> Result<()> {
            while let Some(chunk) = next()? {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                if tx.send(chunk).is_err() {
                    break; // the writer stopped on an error, returned below
                }
            }
            Ok(())
        };
        let read = read();
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| Err(std::io::Error::other("the blob writer thread panicked")));
        (read.map(|()| (hex(&hasher.finalize()), size)), written)
    });
    written.map_err(io("cannot write"))?;
    let (actual, size) = hashed?;
    if actual != expected {
        return Ok((actual, size));
    }
    tmp.as_file().sync_all().map_err(io("cannot write"))?;
    tmp.persist(&dest).map_err(|e| Error::Io { path: dest.clone(), action: "cannot write", source: e.error })?;
    std::fs::File::open(&parent).and_then(|d| d.sync_all()).map_err(io("cannot sync the blob directory"))?;
    Ok((actual, size))
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
