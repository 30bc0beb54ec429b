//! Withdrawing a version from a data zone: signed by an admin, recorded, audited, and final for every grant issued
//! before it.
//!
//! A withdrawal is a DSSE envelope (`application/vnd.sovra.withdrawal.v1+json`) over `{_type, model, digest, zone,
//! stage, reason, admin, issued_at}`, signed on the client with a key listed under `admins` — the same keys that
//! grant exceptions: taking a model out of service is a break-glass act, one admin signs it (a policy needing more
//! would be a gate; none is defined for withdrawals). Recording it removes the data zone from the version's
//! locations, keeps the withdrawal (zone, time, reason, admin, record) in the version, deletes the version's blobs
//! from that data zone (those no other version located there references), and appends an audit entry — the record,
//! the version and the audit entry in one commit, the blobs deleted only after it.
//!
//! Afterwards pulls from that data zone are refused with the reason, `status` lists the withdrawal, and a
//! re-promotion into the zone needs fresh approvals: approvals and exceptions issued before the latest withdrawal
//! of the version no longer count ([`Promoter::granted_since`]).

use crate::grants::CLOCK_SKEW_SECS;
use crate::payloads::{WITHDRAWAL_V1, WithdrawalGrant, parse};
use crate::service::{Promoter, Res, bad, short};
use serde_json::{Value, json};
use sovra_domain::datazone::{DataZone, Stage};
use sovra_oms::dsse::Envelope;
use sovra_oms::keys::SigningKey;
use sovra_registry::{AuditEvent, Registry, SignedRecord, VersionRecord, Withdrawal};
use std::collections::BTreeSet;
use std::path::Path;

/// payloadType of withdrawals.
pub const WITHDRAWAL_TYPE: &str = "application/vnd.sovra.withdrawal.v1+json";

/// Client side: signs the withdrawal of `model@digest` from data zone `dz` with an admin's private key.
pub fn sign_withdrawal(
    model: &str,
    digest: &str,
    dz: &DataZone,
    reason: &str,
    admin: &str,
    key: &SigningKey,
    now: u64,
) -> Res<Envelope> {
    if reason.trim().is_empty() {
        return Err(bad("--reason: give the reason for the withdrawal (it is audited and shown by status)"));
    }
    let payload = serde_json::to_value(WithdrawalGrant {
        kind: WITHDRAWAL_V1.into(),
        model: model.into(),
        digest: digest.into(),
        zone: dz.zone.clone(),
        stage: dz.stage.to_string(),
        reason: reason.into(),
        admin: admin.into(),
        issued_at: now,
    })
    .unwrap_or(Value::Null);
    Envelope::sign(WITHDRAWAL_TYPE, payload.to_string().as_bytes(), key).map_err(|e| bad(e.to_string()))
}

fn refused(m: impl Into<String>) -> crate::PromoteError {
    crate::PromoteError::Verification(m.into())
}

/// The data zone of `v` in `zone` to withdraw: the one of `stage`, or the only one the version has there.
pub fn withdrawal_zone(v: &VersionRecord, zone: &str, stage: Option<Stage>) -> Res<DataZone> {
    let here: Vec<&DataZone> = v
        .locations
        .iter()
        .map(|l| &l.data_zone)
        .filter(|dz| dz.zone == zone && stage.is_none_or(|s| dz.stage == s))
        .collect();
    match here.as_slice() {
        [dz] => Ok((*dz).clone()),
        [] => Err(bad(format!(
            "--zone {zone}{}: {}@{} is not there (it is in {})",
            stage.map(|s| format!(" --stage {s}")).unwrap_or_default(),
            v.model,
            short(&v.digest),
            v.locations.iter().map(|l| l.data_zone.to_string()).collect::<Vec<_>>().join(", ")
        ))),
        many => Err(bad(format!(
            "--zone {zone}: {}@{} is in {} there; name one with --stage",
            v.model,
            short(&v.digest),
            many.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" and ")
        ))),
    }
}

impl Promoter {
    /// Local mode: signs the withdrawal with the admin key at `admin_key` and records it.
    pub fn withdraw(
        &self,
        model: &str,
        reference: Option<&str>,
        zone: &str,
        stage: Option<Stage>,
        reason: &str,
        admin_key: &Path,
    ) -> Res<SignedRecord> {
        let v = self.registry.resolve(model, reference)?;
        let dz = withdrawal_zone(&v, zone, stage)?;
        let (key, admin) = self.admin_key(admin_key, "a withdrawal is signed by an admin")?;
        let env = sign_withdrawal(&v.model, &v.digest, &dz, reason, &admin.name, &key, self.now())?;
        self.record_withdrawal(&env, &admin.name.clone())
    }

    /// Server side: verifies a withdrawal signed on the client by a configured admin — for a version in the
    /// registry, a data zone it is in, a reason, issued no later than now (plus [`CLOCK_SKEW_SECS`]) — and
    /// records it. `actor` (the caller's identity) is the audit entry's actor.
    pub fn record_withdrawal(&self, env: &Envelope, actor: &str) -> Res<SignedRecord> {
        let keyid = env.keyid().unwrap_or("").to_string();
        let admin = self.config.admins.iter().find(|a| a.hint == keyid).ok_or_else(|| {
            refused(format!(
                "the withdrawal is signed by key {}, which is not an admin key of {}",
                short(&keyid),
                self.config.path.display()
            ))
        })?;
        let payload = env
            .verify(WITHDRAWAL_TYPE, &admin.key)
            .map_err(|e| refused(format!("withdrawal by {}: {e}", admin.name)))?;
        parse::<WithdrawalGrant>(&payload, WITHDRAWAL_V1)
            .map_err(|e| refused(format!("withdrawal by {}: {e}", admin.name)))?;
        let p: Value = serde_json::from_slice(&payload)
            .map_err(|e| refused(format!("withdrawal by {}: the payload is not JSON: {e}", admin.name)))?;
        let field = |k: &str| p[k].as_str().ok_or_else(|| refused(format!("withdrawal by {}: no `{k}`", admin.name)));
        let (model, digest, zone, stage, reason) =
            (field("model")?, field("digest")?, field("zone")?, field("stage")?, field("reason")?);
        if p["_type"].as_str() != Some(WITHDRAWAL_V1) || field("admin")? != admin.name {
            return Err(refused(format!("withdrawal by {}: not a withdrawal/v1 payload naming its admin", admin.name)));
        }
        if reason.trim().is_empty() {
            return Err(bad("the withdrawal gives no reason; sign it again with --reason \"…\" (it is audited)"));
        }
        let now = self.now();
        let issued = p["issued_at"].as_u64().unwrap_or(u64::MAX);
        if issued > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(refused(format!("withdrawal by {}: issued at {issued}, in the future", admin.name)));
        }
        let stage: Stage = stage.parse().map_err(|e| bad(format!("withdrawal `stage`: {e}")))?;
        let (mut v, raw) = self.registry.version_with_raw(model, digest)?.ok_or_else(|| {
            bad(format!("the withdrawal is for {model}@{}, which is not in the registry", short(digest)))
        })?;
        let dz = withdrawal_zone(&v, zone, Some(stage))?;
        // No replay: a withdrawal signed before the version (re-)arrived in the data zone is not for this stay.
        if let Some(l) = v.locations.iter().find(|l| l.data_zone == dz)
            && issued < l.since
        {
            return Err(refused(format!(
                "withdrawal by {}: issued at {issued}, before {}@{} arrived in {dz} at {}; sign a new one",
                admin.name,
                v.model,
                short(&v.digest),
                l.since
            )));
        }
        let id = self.registry.next_id()?;
        let rec = SignedRecord {
            id,
            kind: "withdrawal".into(),
            model: v.model.clone(),
            digest: v.digest.clone(),
            recorded_at: now,
            fields: p.clone(),
            envelope: serde_json::to_value(env).unwrap_or(Value::Null),
        };
        v.locations.retain(|l| l.data_zone != dz);
        v.withdrawn.push(Withdrawal {
            data_zone: dz.clone(),
            at: now,
            reason: reason.to_string(),
            by: admin.name.clone(),
            record: id,
        });
        let event = AuditEvent {
            kind: "withdrawal".into(),
            subject: format!("{}@{}", v.model, v.digest),
            actor: actor.to_string(),
            details: json!({"data_zone": dz.to_string(), "reason": reason, "admin": admin.name, "record": id}),
        };
        // Compare-and-swap: a promotion that changed the version meanwhile makes this a conflict (exit 1, retry),
        // never a lost location.
        let writes = [Registry::record_write(&rec), Registry::version_write(&v).expecting(Some(raw))];
        self.registry.commit(&writes, event)?;
        self.delete_withdrawn_blobs(&v, &dz)?;
        Ok(rec)
    }

    /// Deletes `v`'s blobs from `dz`, except those another version located there references. Each blob is
    /// checked under its lock, so a concurrent promotion copying the same bytes into `dz` keeps them. A blob that
    /// cannot be deleted now is an orphan `sovra registry gc` lists; the withdrawal stands.
    fn delete_withdrawn_blobs(&self, v: &VersionRecord, dz: &DataZone) -> Res<()> {
        let mut digests: BTreeSet<&str> = v.files.iter().map(|f| f.digest.as_str()).collect();
        digests.insert(&v.bundle);
        for d in digests {
            self.blob_locks.with(&format!("{dz}/{d}"), || {
                let used = self.registry.versions(None).map(|vs| {
                    vs.iter().any(|o| {
                        o.locations.iter().any(|l| l.data_zone == *dz)
                            && (o.bundle == d || o.files.iter().any(|f| f.digest == d))
                    })
                });
                if matches!(used, Ok(false)) {
                    let _ = self.registry.blobs().delete(dz, d);
                }
            });
        }
        Ok(())
    }

    /// Unix time of the latest withdrawal of `v`: approvals and exceptions issued before it no longer count.
    pub(crate) fn granted_since(&self, v: &VersionRecord) -> u64 {
        v.withdrawn.iter().map(|w| w.at).max().unwrap_or(0)
    }

    /// Refuses a pull from a data zone `v` was withdrawn from (and is not back in).
    pub(crate) fn check_not_withdrawn(&self, v: &VersionRecord, dz: &DataZone) -> Res<()> {
        if v.locations.iter().any(|l| l.data_zone == *dz) {
            return Ok(());
        }
        match v.withdrawn.iter().rev().find(|w| w.data_zone == *dz) {
            Some(w) => Err(refused(format!(
                "{}@{} was withdrawn from {dz} at {} by {}: {}",
                v.model,
                short(&v.digest),
                w.at,
                w.by,
                w.reason
            ))),
            None => Ok(()),
        }
    }
}
