//! Push and pull through the service: files go up in 1 MiB chunks after a header (the service verifies the
//! signature and every file before anything is stored), and come down the same way into a temporary directory
//! beside DEST, each file's SHA-256 and size checked against the version's file list before DEST appears.

use super::{BackendError, Remote, Res, fail};
use crate::Failure;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sovra_api::v1::{FileChunk, PullModelRequest, PushChunk, PushHeader, pull_chunk, push_chunk};
use sovra_domain::datazone::DataZone;
use sovra_oms::paths::normalize_name;
use sovra_promotion::{PullFrom, PushRequest};
use sovra_registry::{FileEntry, VersionRecord};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const CHUNK: usize = 1 << 20;

fn read_doc(path: &Path, what: &str) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(2, format!("{}: cannot read the {what} file: {e}", path.display())))?;
    let v: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| fail(2, format!("{}: the {what} file is not valid YAML/JSON: {e}", path.display())))?;
    if !v.is_object() {
        return Err(fail(2, format!("{}: the {what} file must be a mapping of fields", path.display())));
    }
    Ok(v)
}

/// Every regular file under `dir` (sorted, `/`-separated names), leaving out the top-level `.git` (never part of
/// a signed model). Symbolic links are refused.
fn files(dir: &Path) -> Result<Vec<(String, PathBuf)>, Failure> {
    let mut out = Vec::new();
    let mut todo = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, d)) = todo.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| fail(2, format!("{}: cannot read: {e}", d.display())))?;
        for e in entries {
            let e = e.map_err(|e| fail(2, format!("{}: cannot read: {e}", d.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let t = e.file_type().map_err(|err| fail(2, format!("{}: {err}", e.path().display())))?;
            if t.is_symlink() {
                return Err(fail(
                    2,
                    format!(
                        "{}: a symbolic link; push through the service sends regular files only",
                        e.path().display()
                    ),
                ));
            } else if t.is_dir() {
                if !(prefix.is_empty() && name == ".git") {
                    todo.push((rel, e.path()));
                }
            } else {
                out.push((rel, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Uploads a model: the push document the service answers with.
pub(super) fn push(r: &Remote, req: &PushRequest) -> Res<Value> {
    let bundle = std::fs::read(&req.signature)
        .map_err(|e| fail(2, format!("{}: cannot read the signature: {e}", req.signature.display())))?;
    let provenance = req.provenance.as_deref().map(|p| read_doc(p, "provenance")).transpose()?;
    let metrics = req.metrics.as_deref().map(|p| read_doc(p, "metrics")).transpose()?;
    if let (Some(m), Some(p)) = (&metrics, &req.metrics)
        && let Some((k, _)) = m.as_object().into_iter().flatten().find(|(_, v)| !v.is_number())
    {
        return Err(fail(2, format!("{}: metric `{k}` is not a number", p.display())).into());
    }
    let public_key_pem = match &req.public_key {
        Some(p) => std::fs::read_to_string(p).map_err(|e| fail(2, format!("{}: cannot read: {e}", p.display())))?,
        None => String::new(),
    };
    let meta = std::fs::metadata(&req.model)
        .map_err(|e| fail(2, format!("{}: cannot read the model: {e}", req.model.display())))?;
    let single_file = meta.is_file();
    let list = if single_file { vec![(".".to_string(), req.model.clone())] } else { files(&req.model)? };
    let header = PushHeader {
        name: req.name.clone(),
        residency_class: req.residency_class.clone(),
        provenance_json: provenance.map(|v| v.to_string()).unwrap_or_default(),
        metrics_json: metrics.map(|v| v.to_string()).unwrap_or_default(),
        zone: req.zone.clone().unwrap_or_default(),
        public_key_pem,
        bundle,
        single_file,
    };
    // Files are read as the stream is sent; a read error ends the stream (the service then refuses the
    // incomplete upload) and is reported here.
    let error: Arc<Mutex<Option<Failure>>> = Arc::default();
    let err2 = error.clone();
    let mut pending = list.into_iter();
    let mut open: Option<(String, PathBuf, std::fs::File, bool)> = None;
    let body = std::iter::from_fn(move || {
        loop {
            if open.is_none() {
                let (name, path) = pending.next()?;
                match std::fs::File::open(&path) {
                    Ok(f) => open = Some((name, path, f, false)),
                    Err(e) => {
                        *err2.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(fail(2, format!("{}: cannot read: {e}", path.display())));
                        return None;
                    }
                }
            }
            let (name, path, f, sent) = open.as_mut()?;
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf) {
                Ok(0) if *sent => open = None,
                Ok(n) => {
                    buf.truncate(n);
                    *sent = true;
                    let chunk = FileChunk { name: name.clone(), data: buf };
                    if n == 0 {
                        open = None;
                    }
                    return Some(PushChunk { part: Some(push_chunk::Part::File(chunk)) });
                }
                Err(e) => {
                    *err2.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(fail(2, format!("{}: cannot read: {e}", path.display())));
                    return None;
                }
            }
        }
    });
    let first = PushChunk { part: Some(push_chunk::Part::Header(header)) };
    let stream = tokio_stream::iter(std::iter::once(first).chain(body));
    let mut c = r.client.clone();
    let answer = r.rt.block_on(c.push(r.req(stream)));
    if let Some(f) = error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(BackendError::Failure(f));
    }
    r.doc(answer)
}

/// One file being received: its entry, where it goes, the running hash and size.
struct Receiving {
    entry: FileEntry,
    file: std::fs::File,
    hash: Sha256,
    size: u64,
}

impl Receiving {
    fn finish(self) -> Result<(), Failure> {
        let digest: String = self.hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if digest != self.entry.digest || self.size != self.entry.size {
            return Err(fail(
                1,
                format!(
                    "{}: received {} bytes with sha256 {digest}, the version lists {} bytes with {}; nothing was \
                     written",
                    self.entry.name, self.size, self.entry.size, self.entry.digest
                ),
            ));
        }
        self.file.sync_all().map_err(|e| fail(1, format!("{}: {e}", self.entry.name)))
    }
}

/// Downloads a version into `dest` (which must not exist or be empty) and its bundle into `signature`.
pub(super) fn pull(
    r: &Remote,
    model: &str,
    from: &PullFrom,
    dest: &Path,
    signature: &Path,
) -> Res<(VersionRecord, DataZone)> {
    if dest.exists() && std::fs::read_dir(dest).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(fail(
            2,
            format!("{}: exists and is not an empty directory; choose a new directory", dest.display()),
        )
        .into());
    }
    if signature.exists() {
        return Err(fail(
            2,
            format!("{}: exists; pull never overwrites a file, remove it or give --signature", signature.display()),
        )
        .into());
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".sovra-pull-")
        .tempdir_in(&parent)
        .map_err(|e| fail(2, format!("{}: cannot create a temporary directory: {e}", parent.display())))?;
    let staged = tmp.path().join("model");
    let m = PullModelRequest {
        model: model.to_string(),
        stage: from.stage.map(|s| s.as_str().to_string()).unwrap_or_default(),
        zone: from.zone.clone().unwrap_or_default(),
    };
    let mut c = r.client.clone();
    let (header, dz) = r.rt.block_on(async {
        let mut s = c.pull(r.req(m)).await.map_err(|e| r.status(e))?.into_inner();
        let Some(pull_chunk::Part::Header(h)) = s.message().await.map_err(|e| r.status(e))?.and_then(|c| c.part) else {
            return Err(fail(1, "the promotion service's pull stream did not start with its header"));
        };
        let dz: DataZone = serde_json::from_str(&h.data_zone_json)
            .map_err(|e| fail(1, format!("the service's data zone `{}`: {e}", h.data_zone)))?;
        let entries: Vec<FileEntry> = h
            .files
            .iter()
            .map(|f| FileEntry { name: f.name.clone(), digest: f.digest.clone(), size: f.size })
            .collect();
        let mut next = 0usize;
        let mut cur: Option<Receiving> = None;
        while let Some(chunk) = s.message().await.map_err(|e| r.status(e))? {
            let Some(pull_chunk::Part::File(FileChunk { name, data })) = chunk.part else {
                return Err(fail(1, "the promotion service sent a second header"));
            };
            if cur.as_ref().is_none_or(|c| c.entry.name != name) {
                if let Some(done) = cur.take() {
                    done.finish()?;
                }
                let entry = entries.get(next).filter(|e| e.name == name).cloned().ok_or_else(|| {
                    fail(1, format!("the promotion service sent `{name}`, not the next file of the version"))
                })?;
                next += 1;
                let norm = normalize_name(&entry.name)
                    .ok_or_else(|| fail(1, format!("stored file name `{}` leaves the model", entry.name)))?;
                let path = if norm == "." { staged.clone() } else { staged.join(&norm) };
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p).map_err(|e| fail(2, format!("{}: {e}", p.display())))?;
                }
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| fail(2, format!("{}: cannot write: {e}", path.display())))?;
                cur = Some(Receiving { entry, file, hash: Sha256::new(), size: 0 });
            }
            if let Some(c) = cur.as_mut() {
                c.hash.update(&data);
                c.size += data.len() as u64;
                c.file.write_all(&data).map_err(|e| fail(2, format!("{}: cannot write: {e}", c.entry.name)))?;
            }
        }
        if let Some(done) = cur.take() {
            done.finish()?;
        }
        if next != entries.len() {
            return Err(fail(
                1,
                format!("the pull stream ended after {next} of {} file(s); nothing was written", entries.len()),
            ));
        }
        Ok((h, dz))
    })?;
    let files: Vec<FileEntry> = header
        .files
        .iter()
        .map(|f| FileEntry { name: f.name.clone(), digest: f.digest.clone(), size: f.size })
        .collect();
    let v: VersionRecord = serde_json::from_str(&header.version_json)
        .map_err(|e| fail(1, format!("the service's version record: {e}")))?;
    if v.files != files || v.digest != header.digest {
        return Err(fail(1, "the service's version record differs from the files it sent; nothing was kept").into());
    }
    if files.is_empty() {
        std::fs::create_dir_all(&staged).map_err(|e| fail(2, format!("{}: {e}", staged.display())))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(signature)
        .and_then(|mut f| f.write_all(&header.bundle))
        .map_err(|e| fail(2, format!("{}: cannot write: {e}", signature.display())))?;
    if dest.exists() {
        let _ = std::fs::remove_dir(dest);
    }
    std::fs::rename(&staged, dest).map_err(|e| {
        let _ = std::fs::remove_file(signature);
        fail(2, format!("{}: cannot move the pulled files into place: {e}", dest.display()))
    })?;
    Ok((v, dz))
}
