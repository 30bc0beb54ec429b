//! One object store (a local directory or an S3 bucket) and the streaming reads and writes the blob layer uses.
//!
//! On the local filesystem objects are written directly rather than through `object_store`'s multipart upload:
//! that upload stages to `<name>#<n>`, a name that says neither who wrote it nor that it is temporary, and leaves
//! it behind when the process is killed (a 1 GiB promotion left 214 MiB). Here each object streams into a
//! `.sovra-tmp-<pid>-…` file in its destination directory, is synced, renamed into place and the directory synced;
//! a killed writer's file is found and removed by [`crate::sweep`] at the next open. Other stores get a multipart
//! upload (8 MiB parts), aborted on any error, so nothing half-written becomes visible.

use crate::error::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Read size while streaming a file, and part size of uploads: 8 MiB.
pub(crate) const CHUNK: usize = 8 << 20;

/// One store.
pub(crate) struct Backend {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// `local filesystem /srv/fr`, `S3 bucket fr at http://…`.
    pub(crate) description: String,
    /// The directory of a local filesystem store.
    pub(crate) local: Option<PathBuf>,
}

/// A stream of bytes to write, and the check that decides whether the object may become visible.
pub(crate) trait Pipe {
    /// The next piece, or `None` at the end.
    fn next(&mut self, rt: &tokio::runtime::Runtime) -> Result<Option<Bytes>>;
    /// Called after the last piece, before the object is committed: an error discards it.
    fn check(&mut self) -> Result<()>;
}

/// The bytes of a stored object, piece by piece. A local file is read directly in [`CHUNK`]-sized reads:
/// object_store's own stream of a local file reads 8 KiB at a time, each through the blocking thread pool, which
/// made a 4 GiB promotion spend most of its time in the kernel.
pub(crate) enum Source {
    File(std::fs::File, u64),
    Stream(futures::stream::BoxStream<'static, object_store::Result<Bytes>>),
}

impl Source {
    pub(crate) async fn open(store: &dyn ObjectStore, loc: &StorePath) -> object_store::Result<Source> {
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

    pub(crate) fn next(&mut self, rt: &tokio::runtime::Runtime) -> Option<object_store::Result<Bytes>> {
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
            Source::Stream(s) => rt.block_on(s.next()),
        }
    }
}

impl Backend {
    /// An error of this store about `what`.
    pub(crate) fn err(&self, what: impl std::fmt::Display) -> impl Fn(object_store::Error) -> Error {
        let prefix = format!("{} ({what})", self.description);
        move |e| Error::Blob(format!("{prefix}: {e}"))
    }

    pub(crate) fn exists(&self, rt: &tokio::runtime::Runtime, loc: &StorePath) -> Result<bool> {
        match rt.block_on(self.store.head(loc)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(loc)(e)),
        }
    }

    /// A small object, read whole; `None` when missing.
    pub(crate) fn get_small(&self, rt: &tokio::runtime::Runtime, loc: &StorePath) -> Result<Option<Bytes>> {
        match rt.block_on(async { self.store.get(loc).await?.bytes().await }) {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(loc)(e)),
        }
    }

    /// Writes a small object (replacing one of that name atomically).
    pub(crate) fn put_small(&self, rt: &tokio::runtime::Runtime, loc: &StorePath, bytes: Bytes) -> Result<()> {
        struct Once(Option<Bytes>);
        impl Pipe for Once {
            fn next(&mut self, _: &tokio::runtime::Runtime) -> Result<Option<Bytes>> {
                Ok(self.0.take())
            }
            fn check(&mut self) -> Result<()> {
                Ok(())
            }
        }
        if self.local.is_some() {
            return self.write(rt, loc, &mut Once(Some(bytes)));
        }
        rt.block_on(self.store.put(loc, bytes.into())).map(|_| ()).map_err(self.err(loc))
    }

    pub(crate) fn delete(&self, rt: &tokio::runtime::Runtime, loc: &StorePath) -> Result<()> {
        match rt.block_on(self.store.delete(loc)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(loc)(e)),
        }
    }

    pub(crate) fn open(&self, rt: &tokio::runtime::Runtime, loc: &StorePath) -> Result<Source> {
        rt.block_on(Source::open(self.store.as_ref(), loc)).map_err(self.err(loc))
    }

    /// Every object under `prefix`: (path, size).
    pub(crate) fn list(&self, rt: &tokio::runtime::Runtime, prefix: &str) -> Result<Vec<(String, u64)>> {
        rt.block_on(async {
            let mut stream = self.store.list(Some(&StorePath::from(prefix)));
            let mut out = Vec::new();
            while let Some(m) = stream.next().await {
                let m = m?;
                out.push((m.location.to_string(), m.size));
            }
            Ok::<_, object_store::Error>(out)
        })
        .map_err(self.err(format!("listing {prefix}/")))
    }

    /// Streams `pipe` into object `loc`; the object becomes visible only when every piece was written and
    /// [`Pipe::check`] passed.
    pub(crate) fn write(&self, rt: &tokio::runtime::Runtime, loc: &StorePath, pipe: &mut dyn Pipe) -> Result<()> {
        if let Some(dir) = &self.local {
            return write_local(rt, dir, loc, pipe);
        }
        let err = self.err(loc);
        let _enter = rt.enter();
        let upload = rt.block_on(self.store.put_multipart(loc)).map_err(&err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let result = (|| -> Result<()> {
            while let Some(piece) = pipe.next(rt)? {
                rt.block_on(writer.wait_for_capacity(4)).map_err(&err)?;
                writer.put(piece);
            }
            pipe.check()
        })();
        match result {
            Ok(()) => rt.block_on(writer.finish()).map(|_| ()).map_err(err),
            Err(e) => {
                let _ = rt.block_on(writer.abort());
                Err(e)
            }
        }
    }
}

/// Streams `pipe` into object `loc` of the local store at `dir`: a `.sovra-tmp-<pid>-…` file in the object's
/// directory, renamed into place (file and directory synced) only when [`Pipe::check`] passes, else removed.
fn write_local(rt: &tokio::runtime::Runtime, dir: &Path, loc: &StorePath, pipe: &mut dyn Pipe) -> Result<()> {
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
    // Produce (read, hash, encrypt) here while a second thread writes (two pieces in flight), so that the disk
    // and the computation overlap. On any error `tmp` is dropped, which removes the file.
    let file = tmp.as_file_mut();
    let (produced, written) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(2);
        let writer = scope.spawn(move || -> std::io::Result<()> {
            for piece in rx {
                file.write_all(&piece)?;
            }
            Ok(())
        });
        let mut produce = || -> Result<()> {
            while let Some(piece) = pipe.next(rt)? {
                if tx.send(piece).is_err() {
                    break; // the writer stopped on an error, returned below
                }
            }
            Ok(())
        };
        let produced = produce();
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| Err(std::io::Error::other("the blob writer thread panicked")));
        (produced, written)
    });
    written.map_err(io("cannot write"))?;
    produced?;
    pipe.check()?;
    tmp.as_file().sync_all().map_err(io("cannot write"))?;
    tmp.persist(&dest).map_err(|e| Error::Io { path: dest.clone(), action: "cannot write", source: e.error })?;
    std::fs::File::open(&parent).and_then(|d| d.sync_all()).map_err(io("cannot sync the blob directory"))?;
    Ok(())
}

/// Reads until `buf` is full or the end of the file.
pub(crate) fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
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
