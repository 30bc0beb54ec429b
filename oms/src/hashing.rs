//! Walking a model and hashing it (model-transparency's `hashing` and `serialization` modules).
//!
//! Every file is streamed through SHA-256 in [`CHUNK`]-sized reads, so memory stays flat whatever the model size.
//! Files (or shards) are hashed in parallel by scoped std threads pulling the next task from a shared counter,
//! largest first, so that one big file does not end up last on a single core.

use crate::error::{Error, Result};
use crate::manifest::{Manifest, Method, Resource, SHA256, Serialization, to_hex};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Read size while hashing: 1 MiB.
pub const CHUNK: usize = 1 << 20;

/// Paths `model_signing` ignores at the top of every model unless told otherwise.
pub const GIT_PATHS: [&str; 4] = [".git", ".github", ".gitignore", ".gitattributes"];

/// How to turn a model into a manifest.
#[derive(Debug, Clone)]
pub struct HashConfig {
    /// Files or shards.
    pub method: Method,
    /// Follow symbolic links (they must stay inside the model); refused otherwise.
    pub allow_symlinks: bool,
    /// Model-relative POSIX paths to leave out (a path and everything under it).
    pub ignore_paths: Vec<String>,
    /// Worker threads; `None` = all cores.
    pub threads: Option<usize>,
}

impl Default for HashConfig {
    fn default() -> Self {
        HashConfig { method: Method::Files, allow_symlinks: false, ignore_paths: Vec::new(), threads: None }
    }
}

/// One file of the model, as found by [`walk_model`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// POSIX path relative to the model root, or `.` when the model is a single file.
    pub name: String,
    /// Where to read it (a link inside the model when links are allowed).
    pub path: PathBuf,
    /// Size in bytes when it was listed.
    pub size: u64,
}

/// True when `name` equals or lies under one of `ignore` (component-wise, so `a.txt` is not under `a`).
pub fn is_ignored(name: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|i| {
        let i = i.trim_end_matches('/');
        !i.is_empty() && (name == i || (name.starts_with(i) && name.as_bytes().get(i.len()) == Some(&b'/')))
    })
}

/// Lists the files of a model in component order (Python's `PurePosixPath` sort): a directory walked recursively
/// with each directory's entries sorted by name, or a single file named `.`.
///
/// Symbolic links are refused unless `allow_symlinks`; an allowed link must resolve inside the model (a link to a
/// directory is skipped, as `model_signing` does). FIFOs, sockets and devices are refused.
pub fn walk_model(model: &Path, allow_symlinks: bool, ignore: &[String]) -> Result<Vec<ModelFile>> {
    let meta = fs::metadata(model).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::ModelNotFound { path: model.to_path_buf() },
        _ => Error::Io { path: model.to_path_buf(), action: "cannot read the model", source: e },
    })?;
    if meta.is_file() {
        return Ok(vec![ModelFile { name: ".".into(), path: model.to_path_buf(), size: meta.len() }]);
    }
    if !meta.is_dir() {
        return Err(Error::UnsupportedFileType { path: model.to_path_buf() });
    }
    let root = fs::canonicalize(model).map_err(Error::io(model, "cannot resolve the model path"))?;
    let mut out = Vec::new();
    walk_dir(model, &root, "", allow_symlinks, ignore, &mut out)?;
    out.sort_by(|a, b| a.name.split('/').cmp(b.name.split('/')));
    Ok(out)
}

fn walk_dir(
    dir: &Path,
    root: &Path,
    prefix: &str,
    allow_symlinks: bool,
    ignore: &[String],
    out: &mut Vec<ModelFile>,
) -> Result<()> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(dir, "cannot list the directory"))? {
        let entry = entry.map_err(Error::io(dir, "cannot list the directory"))?;
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|_| Error::NonUtf8Name { path: path.clone() })?;
        entries.push((name, path));
    }
    entries.sort();
    for (name, path) in entries {
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        if is_ignored(&rel, ignore) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(Error::io(&path, "cannot read"))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            walk_dir(&path, root, &rel, allow_symlinks, ignore, out)?;
        } else if ft.is_file() {
            out.push(ModelFile { name: rel, path, size: meta.len() });
        } else if ft.is_symlink() {
            if !allow_symlinks {
                return Err(Error::SymlinkRefused { path });
            }
            let target = fs::canonicalize(&path).map_err(|_| Error::BrokenSymlink { path: path.clone() })?;
            if !target.starts_with(root) {
                return Err(Error::OutsideModel { path, target });
            }
            let tmeta = fs::metadata(&target).map_err(Error::io(&target, "cannot read"))?;
            if tmeta.is_file() {
                out.push(ModelFile { name: rel, path, size: tmeta.len() });
            } else if !tmeta.is_dir() {
                return Err(Error::UnsupportedFileType { path });
            }
        } else {
            return Err(Error::UnsupportedFileType { path });
        }
    }
    Ok(())
}

/// SHA-256 of `len` bytes of `path` from `start` (`None` = to the end), read in [`CHUNK`]s.
pub fn hash_range(path: &Path, start: u64, len: Option<u64>) -> Result<[u8; 32]> {
    let mut file = fs::File::open(path).map_err(Error::io(path, "cannot open"))?;
    if start > 0 {
        file.seek(SeekFrom::Start(start)).map_err(Error::io(path, "cannot read"))?;
    }
    let mut reader: Box<dyn Read> = match len {
        Some(n) => Box::new(file.take(n)),
        None => Box::new(file),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    let mut read_total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io { path: path.to_path_buf(), action: "cannot read", source: e }),
        };
        hasher.update(&buf[..n]);
        read_total += n as u64;
    }
    if let Some(n) = len
        && read_total != n
    {
        return Err(Error::Io {
            path: path.to_path_buf(),
            action: "cannot read",
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was hashed"),
        });
    }
    Ok(hasher.finalize().into())
}

/// One unit of hashing work.
struct Task {
    name: String,
    path: PathBuf,
    start: u64,
    len: Option<u64>,
    weight: u64,
}

/// Hashes a model into a manifest: [`walk_model`], then every file (or shard) in parallel. Also returns the number
/// of bytes hashed.
pub fn hash_model(model: &Path, config: &HashConfig) -> Result<(Manifest, u64)> {
    let files = walk_model(model, config.allow_symlinks, &config.ignore_paths)?;
    let bytes = files.iter().map(|f| f.size).sum();
    let (tasks, algorithm) = match config.method {
        Method::Files => {
            let tasks = files
                .into_iter()
                .map(|f| Task { name: f.name, path: f.path, start: 0, len: None, weight: f.size })
                .collect::<Vec<_>>();
            (tasks, SHA256.to_string())
        }
        Method::Shards { shard_size } => {
            if shard_size == 0 {
                return Err(Error::InvalidOption("--shard-size 0: use a shard size of at least 1 byte".into()));
            }
            let mut tasks = Vec::new();
            for f in files {
                let mut start = 0;
                while start < f.size {
                    let end = start.saturating_add(shard_size).min(f.size);
                    tasks.push(Task {
                        name: format!("{}:{start}:{end}", f.name),
                        path: f.path.clone(),
                        start,
                        len: Some(end - start),
                        weight: end - start,
                    });
                    start = end;
                }
            }
            (tasks, format!("{SHA256}-sharded-{shard_size}"))
        }
    };
    let digests = hash_tasks(&tasks, config.threads)?;
    let resources = tasks
        .into_iter()
        .zip(digests)
        .map(|(t, d)| Resource { name: t.name, algorithm: algorithm.clone(), digest: to_hex(&d) })
        .collect();
    let manifest = Manifest {
        model_name: model_name(model),
        resources,
        serialization: Serialization {
            method: config.method,
            hash_type: SHA256.into(),
            allow_symlinks: config.allow_symlinks,
            ignore_paths: config.ignore_paths.clone(),
        },
    };
    Ok((manifest, bytes))
}

/// The subject name: the last component of the model path (of the resolved path for `.` or `..`).
pub fn model_name(model: &Path) -> String {
    let resolved = fs::canonicalize(model).unwrap_or_else(|_| model.to_path_buf());
    resolved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Hashes the tasks on up to `threads` threads, largest first; digests come back in task order.
fn hash_tasks(tasks: &[Task], threads: Option<usize>) -> Result<Vec<[u8; 32]>> {
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tasks[i].weight));
    let workers = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, tasks.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<[u8; 32]>>> = Mutex::new(vec![None; tasks.len()]);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    let t = &tasks[i];
                    match hash_range(&t.path, t.start, t.len) {
                        Ok(d) => {
                            if let Ok(mut r) = results.lock() {
                                r[i] = Some(d);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let results =
        results.into_inner().map_err(|_| Error::InvalidOption("internal error: a hashing thread panicked".into()))?;
    results
        .into_iter()
        .map(|d| d.ok_or_else(|| Error::InvalidOption("internal error: a file was not hashed".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_is_component_wise() {
        let ig = vec![".git".to_string(), "a".to_string()];
        assert!(is_ignored(".git", &ig));
        assert!(is_ignored(".git/config", &ig));
        assert!(is_ignored("a/b", &ig));
        assert!(!is_ignored("a.txt", &ig));
        assert!(!is_ignored(".gitignore", &ig));
        assert!(!is_ignored("sub/.git", &ig));
    }

    #[test]
    fn component_order_puts_dir_before_dotted_sibling() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("a")).unwrap();
        fs::write(dir.path().join("a/b"), b"x").unwrap();
        fs::write(dir.path().join("a.txt"), b"y").unwrap();
        let names: Vec<_> = walk_model(dir.path(), false, &[]).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["a/b", "a.txt"]);
    }

    #[test]
    fn hashes_ranges_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        let whole: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(hash_range(&p, 0, None).unwrap(), whole);
        let part: [u8; 32] = Sha256::digest(&data[CHUNK + 3..2 * CHUNK + 5]).into();
        assert_eq!(hash_range(&p, CHUNK as u64 + 3, Some(CHUNK as u64 + 2)).unwrap(), part);
    }

    #[test]
    fn shards_skip_empty_files_and_cut_at_multiples() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("e"), b"").unwrap();
        fs::write(dir.path().join("f"), b"0123456789").unwrap();
        let cfg = HashConfig { method: Method::Shards { shard_size: 4 }, ..HashConfig::default() };
        let (m, bytes) = hash_model(dir.path(), &cfg).unwrap();
        assert_eq!(bytes, 10);
        let names: Vec<_> = m.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["f:0:4", "f:4:8", "f:8:10"]);
        assert!(m.resources.iter().all(|r| r.algorithm == "sha256-sharded-4"));
        assert_eq!(m.resources[2].digest, to_hex(&Sha256::digest(b"89")));
    }
}
