//! Reading a version back: pull (files and bundle, every digest checked) and status.

use crate::service::{Promoter, Res, bad, short};
use serde_json::{Value, json};
use sovra_domain::datazone::{DataZone, Stage};
use sovra_oms::paths::normalize_name;
use sovra_registry::VersionRecord;
use std::path::{Path, PathBuf};

/// Where `pull` writes the bundle by default: `DEST.sig` *beside* the pulled directory (or file), never inside it
/// — a file inside the model would be an extra file to `model_signing verify` and would hide as `DEST/.sig` when
/// DEST is written with a trailing slash. `None` when DEST has no name to put `.sig` after (`.`, `..`, `/`).
pub fn default_signature_path(dest: &Path) -> Option<PathBuf> {
    let name = dest.file_name()?;
    let mut sig = name.to_os_string();
    sig.push(".sig");
    Some(dest.with_file_name(sig))
}

impl Promoter {
    /// Writes a version's files from a data zone (default: its current one) into `dest` (which must not exist or
    /// be empty) and its bundle to `signature`; every digest is checked on the way.
    pub fn pull(
        &self,
        model: &str,
        reference: Option<&str>,
        stage: Option<Stage>,
        dest: &Path,
        signature: &Path,
    ) -> Res<(VersionRecord, DataZone)> {
        let v = self.registry.resolve(model, reference)?;
        let loc = match stage {
            Some(s) => v
                .locations
                .iter()
                .rev()
                .find(|l| l.data_zone.stage == s)
                .ok_or_else(|| bad(format!("{model}@{}: not in any {s} data zone", short(&v.digest))))?,
            None => v.current().ok_or_else(|| bad("the version has no location"))?,
        };
        if dest.exists() && std::fs::read_dir(dest).map(|mut d| d.next().is_some()).unwrap_or(true) {
            return Err(bad(format!(
                "{}: exists and is not an empty directory; choose a new directory",
                dest.display()
            )));
        }
        if signature.exists() {
            return Err(bad(format!(
                "{}: exists; pull never overwrites a file, remove it or give --signature",
                signature.display()
            )));
        }
        if signature.as_os_str().is_empty() {
            return Err(bad(format!("{}: give the path of the bundle file to write", signature.display())));
        }
        for f in &v.files {
            let name = normalize_name(&f.name)
                .ok_or_else(|| bad(format!("stored file name `{}` leaves the model", f.name)))?;
            let path = if name == "." { dest.to_path_buf() } else { dest.join(&name) };
            self.registry.blobs().get_to_file(&loc.data_zone, &f.digest, &path)?;
        }
        let bundle = self.registry.blobs().get_bytes(&loc.data_zone, &v.bundle)?;
        std::fs::write(signature, bundle).map_err(|e| bad(format!("{}: cannot write: {e}", signature.display())))?;
        Ok((v.clone(), loc.data_zone.clone()))
    }

    /// A version's status: where it is, its promotion chain (statements verified), approvals, exceptions.
    pub fn status(&self, model: &str, reference: Option<&str>) -> Res<Value> {
        let v = self.registry.resolve(model, reference)?;
        let now = self.now();
        let live = self.live_exceptions(&v);
        let mut promotions = Vec::new();
        let mut approvals = Vec::new();
        let mut exceptions = Vec::new();
        for r in self.registry.records(&v.model, &v.digest)? {
            match r.kind.as_str() {
                "promotion" => promotions.push(json!({"id": r.id, "at": r.recorded_at, "from": r.fields["from"],
                    "to": r.fields["to"], "under_exception": r.fields["under_exception"],
                    "statement_verified": self.promotion_record(r.id, &v).is_some()})),
                "approval" => approvals.push(json!({"id": r.id, "approver": r.fields["approver"],
                    "from": r.fields["from"], "to": r.fields["to"],
                    "expired": r.fields["expires_at"].as_u64().is_none_or(|t| t <= now)})),
                "exception" => {
                    exceptions.push(json!({"id": r.id, "gate": r.fields["gate"], "reason": r.fields["reason"],
                    "admin": r.fields["admin"], "expires_at": r.fields["expires_at"],
                    "live": live.values().any(|id| *id == r.id)}))
                }
                _ => {}
            }
        }
        let current = v.current().map(|l| l.data_zone.to_string());
        Ok(json!({
            "model": v.model, "digest": v.digest, "residency_class": v.residency_class,
            "files": v.files.len(), "bytes": v.size(), "current": current,
            "next_stage": v.current().and_then(|l| l.data_zone.stage.next()),
            "aliases": self.registry.aliases(&v.model)?.into_iter().filter(|(_, _, d)| *d == v.digest)
                .map(|(zone, alias, _)| json!({"data_zone": zone, "alias": alias})).collect::<Vec<_>>(),
            "locations": v.locations, "promotions": promotions, "approvals": approvals, "exceptions": exceptions,
            "provenance": v.provenance, "metrics": v.metrics,
        }))
    }
}
