//! The streamed calls: Push (the upload is staged in a private temporary directory and handed to
//! `Promoter::push`, which verifies the signature and every file before anything is stored) and Pull (the version
//! is pulled, every digest checked, into a staging directory, then streamed).

use crate::server::{PromotionService, blocking, doc, parse_stage, status_of};
use serde_json::json;
use sovra_api::v1::{
    AuditEntryJson, FileChunk, ModelDocument, PullChunk, PullHeader, PullModelRequest, PulledFile, PushChunk,
    pull_chunk, push_chunk,
};
use sovra_oms::paths::normalize_name;
use sovra_promotion::PushRequest;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Response, Status, Streaming};

/// Pull's reply stream.
pub type PullStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<PullChunk, Status>> + Send + 'static>>;
/// AuditExport's reply stream.
pub type AuditStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<AuditEntryJson, Status>> + Send + 'static>>;

/// Pieces of this size are streamed.
const CHUNK: usize = 1 << 20;

fn io(path: &Path) -> impl Fn(std::io::Error) -> Status + '_ {
    move |e| Status::internal(format!("{}: {e}", path.display()))
}

fn staging_dir(staging: &Path, prefix: &str) -> Result<tempfile::TempDir, Status> {
    std::fs::create_dir_all(staging).map_err(io(staging))?;
    tempfile::Builder::new().prefix(prefix).tempdir_in(staging).map_err(io(staging))
}

/// Receives a push stream into a staging directory, then pushes it (on the blocking pool).
pub(crate) async fn push(
    s: &PromotionService,
    mut stream: Streaming<PushChunk>,
) -> Result<Response<ModelDocument>, Status> {
    let dir = staging_dir(&s.staging, "sovra-push-")?;
    let root = dir.path().to_path_buf();
    let Some(PushChunk { part: Some(push_chunk::Part::Header(h)) }) = stream.message().await? else {
        return Err(Status::invalid_argument("push: the first message must be the header (name, class, bundle)"));
    };
    let model = root.join("model");
    if !h.single_file {
        tokio::fs::create_dir(&model).await.map_err(io(&model))?;
    }
    let write = |name: &str, data: &[u8]| -> Result<PathBuf, Status> {
        let p = root.join(name);
        std::fs::write(&p, data).map_err(io(&p))?;
        Ok(p)
    };
    let signature = write("bundle.sig", &h.bundle)?;
    let json_file = |text: &str, name: &str, what: &str| -> Result<Option<PathBuf>, Status> {
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| Status::invalid_argument(format!("{what}: not JSON: {e}")))?;
        write(name, text.as_bytes()).map(Some)
    };
    let provenance = json_file(&h.provenance_json, "provenance.json", "provenance_json")?;
    let metrics = json_file(&h.metrics_json, "metrics.json", "metrics_json")?;
    let public_key =
        if h.public_key_pem.is_empty() { None } else { Some(write("signer.pub.pem", h.public_key_pem.as_bytes())?) };
    let mut total = h.bundle.len() as u64;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<(String, tokio::fs::File)> = None;
    while let Some(chunk) = stream.message().await? {
        let Some(push_chunk::Part::File(FileChunk { name, data })) = chunk.part else {
            return Err(Status::invalid_argument("push: a second header; send the header once, then file chunks"));
        };
        total = total.saturating_add(data.len() as u64);
        if total > s.max_upload {
            return Err(Status::invalid_argument(format!(
                "push: the upload exceeds service.max_upload_bytes ({} bytes)",
                s.max_upload
            )));
        }
        if current.as_ref().is_none_or(|(n, _)| *n != name) {
            if let Some((_, mut f)) = current.take() {
                f.flush().await.map_err(io(&model))?;
            }
            let norm = normalize_name(&name)
                .filter(|n| (n == ".") == h.single_file)
                .ok_or_else(|| Status::invalid_argument(format!("push: file name `{name}` leaves the model")))?;
            if !seen.insert(norm.clone()) {
                return Err(Status::invalid_argument(format!("push: file `{norm}` was sent twice")));
            }
            let path = if h.single_file { model.clone() } else { model.join(&norm) };
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(io(parent))?;
            }
            let f = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await.map_err(io(&path))?;
            current = Some((name.clone(), f));
        }
        if let Some((_, f)) = current.as_mut() {
            f.write_all(&data).await.map_err(io(&model))?;
        }
    }
    if let Some((_, mut f)) = current.take() {
        f.flush().await.map_err(io(&model))?;
    }
    if h.single_file && seen.is_empty() {
        tokio::fs::write(&model, b"").await.map_err(io(&model))?;
    }
    let req = PushRequest {
        name: h.name,
        model,
        signature,
        public_key,
        residency_class: h.residency_class,
        provenance,
        metrics,
        zone: Some(h.zone).filter(|z| !z.is_empty()),
    };
    let p = s.promoter.clone();
    blocking(move || {
        let v = p.push(&req).map_err(status_of)?;
        drop(dir);
        Ok(doc(&json!({"status": "pushed", "version": v})))
    })
    .await
}

/// Pulls a version into a staging directory (every digest checked), then streams it: the header, then each
/// file's bytes in order.
/// The pull is audited with `actor`, the caller's identity.
pub(crate) async fn pull(
    s: &PromotionService,
    m: PullModelRequest,
    actor: String,
) -> Result<Response<PullStream>, Status> {
    let stage = if m.stage.is_empty() { None } else { Some(parse_stage(&m.stage, "stage")?) };
    let from = sovra_promotion::PullFrom { stage, zone: Some(m.zone.clone()).filter(|z| !z.is_empty()) };
    let (name, r) = match m.model.split_once('@') {
        Some((n, r)) => (n.to_string(), Some(r.to_string())),
        None => (m.model.clone(), None),
    };
    let dir = staging_dir(&s.staging, "sovra-pull-")?;
    let (dest, sig) = (dir.path().join("model"), dir.path().join("bundle.sig"));
    let p = s.promoter.clone();
    let (d2, s2) = (dest.clone(), sig.clone());
    let (v, dz) = blocking(move || p.pull(&name, r.as_deref(), &from, &d2, &s2, &actor).map_err(status_of)).await?;
    let bundle = tokio::fs::read(&sig).await.map_err(io(&sig))?;
    let header = PullHeader {
        model: v.model.clone(),
        digest: v.digest.clone(),
        data_zone: dz.to_string(),
        files: v
            .files
            .iter()
            .map(|f| PulledFile { name: f.name.clone(), digest: f.digest.clone(), size: f.size })
            .collect(),
        bundle,
        version_json: serde_json::to_string(&v).unwrap_or_default(),
        data_zone_json: serde_json::to_string(&dz).unwrap_or_default(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<PullChunk, Status>>(4);
    tokio::spawn(async move {
        let _dir = dir;
        if tx.send(Ok(PullChunk { part: Some(pull_chunk::Part::Header(header)) })).await.is_err() {
            return;
        }
        for f in &v.files {
            let path = if f.name == "." { dest.clone() } else { dest.join(&f.name) };
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(e) => {
                    let _ = tx.send(Err(io(&path)(e))).await;
                    return;
                }
            };
            let mut sent_any = false;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = match file.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(io(&path)(e))).await;
                        return;
                    }
                };
                if n == 0 && sent_any {
                    break;
                }
                buf.truncate(n);
                sent_any = true;
                let part = pull_chunk::Part::File(FileChunk { name: f.name.clone(), data: buf });
                if tx.send(Ok(PullChunk { part: Some(part) })).await.is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
            }
        }
    });
    Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
}
