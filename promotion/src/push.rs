//! Push: verify a signed model and store it in a training data zone.

use crate::service::{Promoter, PushRequest, Res, bad, short};
use serde_json::{Value, json};
use sha2::Digest;
use sovra_domain::datazone::{Stage, check_name};
use sovra_oms::keys::PublicKey;
use sovra_oms::manifest::Method;
use sovra_oms::paths::normalize_name;
use sovra_oms::verifying::{VerifyOptions, verify_model_with_key};
use sovra_registry::{AuditEvent, FileEntry, Location, Registry, VersionRecord};
use std::path::{Path, PathBuf};

fn read_doc(path: &Path, what: &str) -> Res<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("{}: cannot read the {what} file: {e}", path.display())))?;
    let v: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| bad(format!("{}: the {what} file is not valid YAML/JSON: {e}", path.display())))?;
    if !v.is_object() {
        return Err(bad(format!("{}: the {what} file must be a mapping of fields", path.display())));
    }
    Ok(v)
}

impl Promoter {
    /// Verifies a model against its bundle and stores it in a training data zone. Nothing is stored unless the
    /// signature and every file verify.
    pub fn push(&self, req: &PushRequest) -> Res<VersionRecord> {
        check_name("model name", &req.name)?;
        if self.cluster.class(&req.residency_class).is_none() {
            return Err(bad(format!(
                "--residency-class `{}` is not a residency class of the cluster config (classes: {})",
                req.residency_class,
                self.cluster.residency_classes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let provenance = match &req.provenance {
            Some(p) => read_doc(p, "provenance")?,
            None => json!({}),
        };
        let metrics = match &req.metrics {
            Some(p) => {
                let m = read_doc(p, "metrics")?;
                if let Some((k, _)) = m.as_object().into_iter().flatten().find(|(_, v)| !v.is_number()) {
                    return Err(bad(format!("{}: metric `{k}` is not a number", p.display())));
                }
                m
            }
            None => json!({}),
        };
        // Receipts are checked for shape here (a malformed document is refused, naming the field); their
        // signatures and zones are judged by the training_zone gate at each promotion.
        let receipt_zone = match provenance.get("receipts") {
            Some(doc) => {
                let doc = crate::receipts::parse(doc).map_err(|e| bad(format!("provenance: {e}")))?;
                let zones = crate::receipts::placed_zones(&doc);
                if zones.len() == 1 { zones.into_iter().next() } else { None }
            }
            None => None,
        };
        let zone = req
            .zone
            .clone()
            .or_else(|| provenance.get("training_zone").and_then(Value::as_str).map(str::to_string))
            .or(receipt_zone)
            .unwrap_or_else(|| self.config.stages.training[0].clone());
        let dz = self.data_zone(&zone, Stage::Training)?;
        let bundle = std::fs::read(&req.signature)
            .map_err(|e| bad(format!("{}: cannot read the signature: {e}", req.signature.display())))?;
        let (key, key_label) = match &req.public_key {
            Some(p) => (PublicKey::from_pem_file(p)?, p.clone()),
            None => {
                let hint = sovra_oms::bundle::Bundle::from_json(&bundle)
                    .map_err(|m| bad(format!("{}: not a valid OMS signature bundle: {m}", req.signature.display())))?
                    .verification_material
                    .public_key
                    .hint
                    .unwrap_or_default();
                let s = self.signer(&hint).ok_or_else(|| {
                    bad(format!(
                        "{}: signed by key {hint}, which is not a configured signer; pass --public-key",
                        req.signature.display()
                    ))
                })?;
                (s.key.clone(), PathBuf::from(format!("signer `{}`", s.name)))
            }
        };
        let out = verify_model_with_key(&req.model, &req.signature, &key, &key_label, &VerifyOptions::default())?;
        if !matches!(out.manifest.serialization.method, Method::Files) {
            return Err(bad(format!(
                "{}: the registry stores models signed file by file; re-sign without --shard-size",
                req.signature.display()
            )));
        }
        if out.manifest.resources.is_empty() {
            return Err(bad(format!(
                "{}: the model has no files (the signature lists none); the registry refuses empty models, push the \
                 directory that holds the weights",
                req.model.display()
            )));
        }
        if let Some(existing) = self.registry.version(&req.name, &out.root_digest)? {
            return Err(bad(format!(
                "{}@{} is already in the registry (pushed {}, now in {}); nothing to do",
                req.name,
                short(&out.root_digest),
                existing.pushed_at,
                existing.current().map(|l| l.data_zone.to_string()).unwrap_or_default()
            )));
        }
        let mut files = Vec::new();
        let mut stored: Vec<String> = Vec::new();
        let cleanup = |stored: &[String]| {
            for d in stored {
                let _ = self.registry.blobs().delete(&dz, d);
            }
        };
        for r in &out.manifest.resources {
            let name = normalize_name(&r.name)
                .ok_or_else(|| bad(format!("manifest names `{}`, outside the model", r.name)))?;
            let path = if name == "." { req.model.clone() } else { req.model.join(&name) };
            // Under the blob's lock: a concurrent push of the same file must not interleave its write with this one.
            let (existed, put) = self.blob_locks.with(&format!("{dz}/{}", r.digest), || {
                let existed = self.registry.blobs().exists(&dz, &r.digest)?;
                Ok::<_, sovra_registry::Error>((existed, self.registry.blobs().put_file(&dz, &path, &r.digest)))
            })?;
            match put {
                Ok(size) => {
                    if !existed {
                        stored.push(r.digest.clone());
                    }
                    files.push(FileEntry { name, digest: r.digest.clone(), size });
                }
                Err(e) => {
                    cleanup(&stored);
                    return Err(e.into());
                }
            }
        }
        let bundle_key = format!("{dz}/{}", sovra_registry::hex(&sha2::Sha256::digest(&bundle)));
        let bundle_digest = match self.blob_locks.with(&bundle_key, || self.registry.blobs().put_bytes(&dz, &bundle)) {
            Ok(d) => d,
            Err(e) => {
                cleanup(&stored);
                return Err(e.into());
            }
        };
        let now = self.now();
        let v = VersionRecord {
            model: req.name.clone(),
            digest: out.root_digest.clone(),
            residency_class: req.residency_class.clone(),
            files,
            bundle: bundle_digest,
            signer_hint: key.hint(),
            signer_key_pem: key.to_pem().to_string(),
            provenance,
            metrics,
            pushed_at: now,
            locations: vec![Location { data_zone: dz.clone(), since: now, promotion: None }],
            withdrawn: Vec::new(),
        };
        let event = AuditEvent {
            kind: "push".into(),
            subject: format!("{}@{}", v.model, v.digest),
            actor: self.signer(&v.signer_hint).map(|s| s.name.clone()).unwrap_or_else(|| v.signer_hint.clone()),
            details: json!({"data_zone": dz.to_string(), "files": v.files.len(), "bytes": v.size(),
                            "residency_class": v.residency_class}),
        };
        // The version must still be absent: of two concurrent pushes of one version exactly one is recorded.
        let writes =
            [Registry::version_write(&v).expecting(None), Registry::alias_write(&dz, &v.model, "latest", &v.digest)?];
        match self.registry.commit(&writes, event) {
            Ok(_) => Ok(v),
            // Another push of the same version won: its record holds these same content-addressed blobs, so none
            // is removed.
            Err(sovra_registry::Error::Conflict { .. }) => Err(bad(format!(
                "{}@{} is already in the registry (pushed concurrently by another writer); nothing to do",
                v.model,
                short(&v.digest)
            ))),
            // Committed: the blobs belong to the version now; only the head file write failed.
            Err(e @ sovra_registry::Error::HeadNotWritten { .. }) => Err(e.into()),
            Err(e) => {
                cleanup(&stored);
                Err(e.into())
            }
        }
    }
}
