//! Reading a version back: pull (files and bundle, every digest checked) and status.

use crate::service::{Promoter, Res, bad, short};
use serde_json::{Value, json};
use sovra_domain::datazone::{DataZone, Stage};
use sovra_oms::paths::normalize_name;
use sovra_registry::{AuditEvent, VersionRecord};
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

/// Which data zone a pull reads from: the latest location of the version matching both (either may be left out;
/// neither: the furthest stage reached).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullFrom {
    /// The stage.
    pub stage: Option<Stage>,
    /// The zone (of the cluster config).
    pub zone: Option<String>,
}

impl Promoter {
    /// The data zone a pull of `v` reads from; a data zone the version was withdrawn from is refused with the
    /// withdrawal's reason.
    pub fn pull_zone(&self, v: &VersionRecord, from: &PullFrom) -> Res<DataZone> {
        let matches = |dz: &DataZone| {
            from.stage.is_none_or(|s| dz.stage == s) && from.zone.as_deref().is_none_or(|z| dz.zone == z)
        };
        let loc = if from.stage.is_none() && from.zone.is_none() {
            v.current()
        } else {
            v.locations.iter().rev().find(|l| matches(&l.data_zone))
        };
        if let Some(l) = loc {
            return Ok(l.data_zone.clone());
        }
        if let Some(w) = v.withdrawn.iter().rev().find(|w| matches(&w.data_zone)) {
            self.check_not_withdrawn(v, &w.data_zone)?;
        }
        let wanted = [from.zone.clone(), from.stage.map(|s| s.to_string())].into_iter().flatten();
        let wanted = wanted.collect::<Vec<_>>().join(" ");
        Err(bad(format!(
            "{}@{}: not in any data zone matching `{}` (it is in {})",
            v.model,
            short(&v.digest),
            if wanted.is_empty() { "any" } else { wanted.as_str() },
            v.locations.iter().map(|l| l.data_zone.to_string()).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Writes a version's files from a data zone ([`PullFrom`]) into `dest` (which must not exist or be empty)
    /// and its bundle to `signature`; every digest is checked on the way. The pull is audited — who (`actor`),
    /// what, from which data zone; if the audit entry cannot be written, the files are removed and the pull fails.
    pub fn pull(
        &self,
        model: &str,
        reference: Option<&str>,
        from: &PullFrom,
        dest: &Path,
        signature: &Path,
        actor: &str,
    ) -> Res<(VersionRecord, DataZone)> {
        let v = self.registry.resolve(model, reference)?;
        let dz = self.pull_zone(&v, from).inspect_err(|e| {
            self.refused_attempt("pull-refused", &format!("{}@{}", v.model, v.digest), &e.to_string(), false)
        })?;
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
            self.registry.blobs().get_to_file(&dz, &f.digest, &path)?;
        }
        let bundle = self.registry.blobs().get_bytes(&dz, &v.bundle)?;
        std::fs::write(signature, bundle).map_err(|e| bad(format!("{}: cannot write: {e}", signature.display())))?;
        let event = AuditEvent {
            kind: "pull".into(),
            subject: format!("{}@{}", v.model, v.digest),
            actor: actor.to_string(),
            details: json!({"data_zone": dz.to_string(), "files": v.files.len(), "bytes": v.size()}),
        };
        if let Err(e) = self.registry.audit(event) {
            let _ = std::fs::remove_file(signature);
            let _ = if dest.is_dir() { std::fs::remove_dir_all(dest) } else { std::fs::remove_file(dest) };
            return Err(bad(format!("the pull could not be audited, so nothing was pulled: {e}")));
        }
        Ok((v, dz))
    }

    /// Re-verifies a version in every data zone it is in — the bundle against the signer's key, the signed
    /// manifest against the version's files and digest, every blob's digest — without changing anything (the
    /// `Verify` RPC and `sovra model check`). `verified` is true only when every data zone verified.
    pub fn verify_stored(&self, v: &VersionRecord) -> Value {
        let key = match self.signer(&v.signer_hint) {
            Some(s) => Some(s.key.clone()),
            None => sovra_oms::keys::PublicKey::from_pem(&v.signer_key_pem).ok(),
        };
        let zones: Vec<Value> = v
            .locations
            .iter()
            .map(|l| {
                let r = match &key {
                    Some(k) => self.verify_in(v, &l.data_zone, k),
                    None => Err("the signer's public key cannot be read".into()),
                };
                json!({"data_zone": l.data_zone.to_string(), "verified": r.is_ok(), "error": r.err()})
            })
            .collect();
        let all = zones.iter().all(|z| z["verified"] == true);
        json!({"status": if all { "verified" } else { "failed" }, "model": v.model, "digest": v.digest,
               "verified": all, "data_zones": zones})
    }

    /// A version's status: where it is, its promotion chain (statements verified), approvals, exceptions.
    pub fn status(&self, model: &str, reference: Option<&str>) -> Res<Value> {
        let v = self.registry.resolve(model, reference)?;
        let now = self.now();
        let live = self.live_exceptions(&v);
        let mut promotions = Vec::new();
        let mut approvals = Vec::new();
        let mut exceptions = Vec::new();
        // Grants issued before the latest withdrawal no longer count (promotion/src/withdraw.rs).
        let since = self.granted_since(&v);
        let before = |t: &Value| t.as_u64().is_some_and(|t| t < since);
        for r in self.registry.records(&v.model, &v.digest)? {
            match r.kind.as_str() {
                "promotion" => promotions.push(json!({"id": r.id, "at": r.recorded_at, "from": r.fields["from"],
                    "to": r.fields["to"], "under_exception": r.fields["under_exception"],
                    "statement_verified": self.promotion_record(r.id, &v).is_some(),
                    "envelope": r.envelope})),
                "approval" => approvals.push(json!({"id": r.id, "approver": r.fields["approver"],
                    "from": r.fields["from"], "to": r.fields["to"],
                    "expired": r.fields["expires_at"].as_u64().is_none_or(|t| t <= now),
                    "withdrawn_since": before(&r.fields["issued_at"])})),
                "exception" => {
                    exceptions.push(json!({"id": r.id, "gate": r.fields["gate"], "reason": r.fields["reason"],
                    "admin": r.fields["admin"], "expires_at": r.fields["expires_at"],
                    "live": live.values().any(|id| *id == r.id),
                    "withdrawn_since": before(&r.fields["granted_at"])}))
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
            "locations": v.locations, "withdrawn": v.withdrawn, "promotions": promotions, "approvals": approvals, "exceptions": exceptions,
            "provenance": v.provenance, "metrics": v.metrics,
        }))
    }
}
