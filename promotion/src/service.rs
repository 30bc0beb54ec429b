//! The promotion service: push, approve, grant exceptions, promote and pull, over a [`Registry`].
//!
//! A model version moves training → registry → inference, one stage at a time and never back. Every promotion
//! re-verifies the OMS signature and every blob in the source data zone, evaluates the gates ([`crate::gates`]) over
//! one input document, copies the blobs into the target data zone and re-verifies each digest there, then records
//! an in-toto promotion statement signed (DSSE) by the service key. Denials, approvals, exceptions and promotions
//! all land in the registry's hash-chained audit log.

use crate::config::{Identity, PromotionConfig};
use crate::gates::{GateResult, Gates};
use crate::payloads::{
    GATE_INPUT_VERSION, GateInput, InputApproval, InputApprovals, InputDataZone, InputEvaluation, InputManifest,
    InputModel, InputResource, InputSignature, InputSigner, InputTarget, InputThreshold,
};
use serde_json::{Value, json};
use sovra_domain::ClusterConfig;
use sovra_domain::datazone::{DataZone, Stage};
use sovra_oms::dsse::Envelope;
use sovra_oms::keys::PublicKey;
use sovra_oms::verifying::verify_bundle;
use sovra_registry::{AuditEvent, Location, Registry, SignedRecord, VersionRecord};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// payloadType of approvals.
pub const APPROVAL_TYPE: &str = "application/vnd.sovra.approval.v1+json";
/// payloadType of exceptions.
pub const EXCEPTION_TYPE: &str = "application/vnd.sovra.exception.v1+json";
/// payloadType of promotion statements (in-toto).
pub const STATEMENT_TYPE: &str = "application/vnd.in-toto+json";
/// predicateType of promotion statements.
pub const PROMOTION_PREDICATE: &str = "https://sovra.dev/promotion/v1";

/// How often [`Promoter::promote`] re-reads and re-decides when another writer changed the version or the alias
/// between its read and its commit.
pub const PROMOTE_TRIES: usize = 8;

/// Why a service call failed. [`PromoteError::exit_code`]: 1 denied, failed verification or lost to concurrent
/// writers, 2 bad input.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// A file, flag or name is wrong; nothing was written or promoted.
    #[error("{0}")]
    BadInput(String),
    /// The gates denied the promotion; every failed gate is listed with its reasons.
    #[error("promotion of {subject} {from} → {to} DENIED by {} gate(s): {}", failed.len(), summary(failed))]
    Denied {
        /// `model@digest`.
        subject: String,
        /// Source data zone.
        from: String,
        /// Target data zone.
        to: String,
        /// The failed gates.
        failed: Vec<GateResult>,
        /// All gates evaluated.
        gates: Vec<GateResult>,
    },
    /// A signature or digest did not verify; nothing was written or promoted.
    #[error("{0}")]
    Verification(String),
    /// Other writers kept changing the records this call read (every retry lost a compare-and-swap); nothing was
    /// written. Run it again.
    #[error("{0}")]
    Conflict(String),
}

/// The first 12 characters (never splits a character: names and ids may come from untrusted files).
pub(crate) fn short(s: &str) -> String {
    s.chars().take(12).collect()
}

fn summary(failed: &[GateResult]) -> String {
    failed.iter().map(|g| format!("{}: {}", g.gate, g.reasons.join("; "))).collect::<Vec<_>>().join(" | ")
}

impl PromoteError {
    /// 1 when denied, a verification failed or concurrent writers won every retry, 2 for bad input.
    pub fn exit_code(&self) -> u8 {
        match self {
            PromoteError::BadInput(_) => 2,
            PromoteError::Denied { .. } | PromoteError::Verification(_) | PromoteError::Conflict(_) => 1,
        }
    }
}

impl From<sovra_registry::Error> for PromoteError {
    fn from(e: sovra_registry::Error) -> Self {
        match e {
            // A corrupt blob or a damaged metadata store: a check failed (exit 1), not bad input.
            sovra_registry::Error::DigestMismatch { .. } | sovra_registry::Error::Damaged { .. } => {
                PromoteError::Verification(e.to_string())
            }
            sovra_registry::Error::Conflict { .. } => PromoteError::Conflict(e.to_string()),
            other => PromoteError::BadInput(other.to_string()),
        }
    }
}

impl From<sovra_domain::datazone::NameError> for PromoteError {
    fn from(e: sovra_domain::datazone::NameError) -> Self {
        PromoteError::BadInput(e.to_string())
    }
}

impl From<sovra_oms::Error> for PromoteError {
    fn from(e: sovra_oms::Error) -> Self {
        if e.is_verification_failure() {
            PromoteError::Verification(e.to_string())
        } else {
            PromoteError::BadInput(e.to_string())
        }
    }
}

pub(crate) type Res<T> = std::result::Result<T, PromoteError>;

pub(crate) fn bad(m: impl Into<String>) -> PromoteError {
    PromoteError::BadInput(m.into())
}

/// What to push.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Model name.
    pub name: String,
    /// The model directory (or file).
    pub model: PathBuf,
    /// Its OMS bundle.
    pub signature: PathBuf,
    /// The signer's public key; default: the configured signer whose hint the bundle carries.
    pub public_key: Option<PathBuf>,
    /// Residency class of the training data (a class of the cluster config).
    pub residency_class: String,
    /// Provenance file (YAML/JSON): `training_job`, `training_zone`, ...
    pub provenance: Option<PathBuf>,
    /// Metrics file (YAML/JSON): metric name → number.
    pub metrics: Option<PathBuf>,
    /// Training zone to store it in; default: the provenance's `training_zone`, else the first training zone.
    pub zone: Option<String>,
}

/// A successful promotion.
#[derive(Debug, Clone)]
pub struct Promoted {
    /// The version after the promotion.
    pub version: VersionRecord,
    /// The stored promotion record (statement envelope inside).
    pub record: SignedRecord,
    /// Source data zone.
    pub from: DataZone,
    /// Target data zone.
    pub to: DataZone,
    /// The gates evaluated.
    pub gates: Vec<GateResult>,
    /// True when a break-glass exception let a failed gate pass.
    pub under_exception: bool,
    /// The audit entry number.
    pub audit_seq: u64,
}

/// What the stage order, the chain check and the gates decided for a promotion, before anything is done.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The version.
    pub version: VersionRecord,
    /// Source data zone.
    pub from: DataZone,
    /// Target data zone.
    pub to: DataZone,
    /// Every gate evaluated (or the one structural check that failed: `stage_order`, `chain`).
    pub gates: Vec<GateResult>,
    /// A live exception let a failed gate pass.
    pub under_exception: bool,
    /// True when every gate passed or is covered by an exception.
    pub allowed: bool,
    /// The gates' input document (`null` when a structural check failed first).
    pub input: Value,
    /// Ids of the live exceptions of this version.
    pub exceptions: Vec<u64>,
    /// The promotion record that brought the version to its current data zone.
    pub previous: Option<u64>,
}

/// What a decision was made on: the stored bytes the promotion's compare-and-swap writes expect.
#[derive(Debug, Clone, Default)]
pub(crate) struct Read {
    /// The version record.
    pub(crate) version: Option<Vec<u8>>,
    /// The target data zone's `latest` alias.
    pub(crate) alias: Option<Vec<u8>>,
}

impl Decision {
    fn refused(version: VersionRecord, from: DataZone, to: DataZone, gate: GateResult) -> Decision {
        Decision {
            version,
            from,
            to,
            gates: vec![gate],
            under_exception: false,
            allowed: false,
            input: Value::Null,
            exceptions: Vec::new(),
            previous: None,
        }
    }
}

/// The promotion service.
#[derive(Debug)]
pub struct Promoter {
    /// The registry.
    pub registry: Registry,
    /// The promotion config.
    pub config: PromotionConfig,
    /// The cluster config (zones, residency classes).
    pub cluster: ClusterConfig,
    /// The gates.
    pub gates: Gates,
    now: Option<u64>,
    pub(crate) blob_locks: crate::locks::BlobLocks,
    /// Refused attempts, by attempt (the service's `/metrics`).
    pub refusals: std::sync::Arc<crate::refusals::Refusals>,
}

fn zone_doc(z: &sovra_domain::Zone) -> Value {
    serde_json::to_value(z).unwrap_or(Value::Null)
}

impl Promoter {
    /// A service over `registry`; checks that the config's zones exist in `cluster` and loads the policies.
    pub fn new(mut registry: Registry, config: PromotionConfig, cluster: ClusterConfig) -> Res<Promoter> {
        config.check_zones(&cluster).map_err(bad)?;
        registry.use_stores(&config.stores).map_err(|e| bad(format!("{}: stores: {e}", config.path.display())))?;
        let gates = Gates::load(config.policies.as_deref()).map_err(bad)?;
        Ok(Promoter {
            registry,
            config,
            cluster,
            gates,
            now: None,
            blob_locks: Default::default(),
            refusals: Default::default(),
        })
    }

    /// Fixes the clock (tests, and replaying a decision as of a past time).
    pub fn with_now(mut self, now: u64) -> Promoter {
        self.now = Some(now);
        self
    }

    /// Sets or clears the fixed clock.
    pub fn set_now(&mut self, now: Option<u64>) {
        self.now = now;
    }

    /// The service's clock (Unix seconds).
    pub fn now(&self) -> u64 {
        self.now.unwrap_or_else(sovra_registry::now)
    }

    pub(crate) fn data_zone(&self, zone: &str, stage: Stage) -> Res<DataZone> {
        if !self.config.stages.zones(stage).iter().any(|z| z == zone) {
            return Err(bad(format!(
                "zone `{zone}` holds no {stage} data zone in {} (stages.{stage}: {})",
                self.config.path.display(),
                self.config.stages.zones(stage).join(", ")
            )));
        }
        Ok(DataZone::new(zone, stage)?)
    }

    pub(crate) fn signer(&self, hint: &str) -> Option<&Identity> {
        self.config.signers.iter().find(|s| s.hint == hint)
    }

    /// Re-verifies the signature and every blob of `v` in data zone `dz`: Ok, or what failed.
    pub(crate) fn verify_in(
        &self,
        v: &VersionRecord,
        dz: &DataZone,
        key: &PublicKey,
    ) -> std::result::Result<(), String> {
        let bundle = self.registry.blobs().get_bytes(dz, &v.bundle).map_err(|e| format!("bundle: {e}"))?;
        let (manifest, _) = verify_bundle(&bundle, key, Path::new("stored bundle"), Path::new("signer key"))
            .map_err(|e| e.to_string())?;
        let signed: BTreeSet<(String, String)> =
            manifest.resources.iter().map(|r| (r.name.clone(), r.digest.clone())).collect();
        let stored: BTreeSet<(String, String)> = v.files.iter().map(|f| (f.name.clone(), f.digest.clone())).collect();
        if signed != stored {
            return Err("the signed manifest differs from the version's file list".into());
        }
        let root = manifest.root_digest().map_err(|e| e.to_string())?;
        if root != v.digest {
            return Err(format!("the bundle signs {root}, the version is {}", v.digest));
        }
        for f in &v.files {
            self.registry.blobs().verify(dz, &f.digest).map_err(|e| format!("{}: {e}", f.name))?;
        }
        Ok(())
    }

    pub(crate) fn promotion_record(&self, id: u64, v: &VersionRecord) -> Option<SignedRecord> {
        let r = self
            .registry
            .records(&v.model, &v.digest)
            .ok()?
            .into_iter()
            .find(|r| r.id == id && r.kind == "promotion")?;
        let env: Envelope = serde_json::from_value(r.envelope.clone()).ok()?;
        env.verify(STATEMENT_TYPE, &self.config.service_public_key).ok()?;
        Some(r)
    }

    pub(crate) fn deny(
        &self,
        v: &VersionRecord,
        from: &DataZone,
        to: &DataZone,
        gates: Vec<GateResult>,
    ) -> PromoteError {
        let failed: Vec<GateResult> = gates.iter().filter(|g| !g.allows()).cloned().collect();
        let event = AuditEvent {
            kind: "denial".into(),
            subject: format!("{}@{}", v.model, v.digest),
            actor: "promotion-service".into(),
            details: json!({"from": from.to_string(), "to": to.to_string(), "failed": failed,
                            "policy_digest": self.gates.digest()}),
        };
        if let Err(e) = self.registry.audit(event) {
            return PromoteError::BadInput(format!("the denial could not be audited: {e}"));
        }
        for g in &failed {
            let why = g.reasons.join("; ");
            self.refused_attempt(
                &format!("promotion-denied:{}", g.gate),
                &format!("{}@{}", v.model, v.digest),
                &why,
                true,
            );
        }
        PromoteError::Denied {
            subject: format!("{}@{}", v.model, short(&v.digest)),
            from: from.to_string(),
            to: to.to_string(),
            failed,
            gates,
        }
    }

    /// The signature check, made in Rust whatever the policies say: the signer is a configured signer, its OMS
    /// signature verifies, the signed manifest is the version's file list, and every blob in data zone `from`
    /// hashes to its digest. Ok, or every reason it failed.
    pub(crate) fn check_signature(&self, v: &VersionRecord, from: &DataZone) -> std::result::Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        let key = match self.signer(&v.signer_hint) {
            Some(s) => Some(s.key.clone()),
            None => {
                reasons.push(format!(
                    "signer key {} is not among the allowed signers ({}); sign with an allowed key or add it under \
                     `signers` in {}",
                    v.signer_hint,
                    self.config.signers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
                    self.config.path.display()
                ));
                PublicKey::from_pem(&v.signer_key_pem).ok()
            }
        };
        match key {
            Some(k) => {
                if let Err(e) = self.verify_in(v, from, &k) {
                    reasons.push(format!("the OMS signature does not verify: {e}"));
                }
            }
            None => reasons.push("the OMS signature does not verify: the signer's public key cannot be read".into()),
        }
        if reasons.is_empty() { Ok(()) } else { Err(reasons) }
    }

    /// The input document the gates see for promoting `v` from `from` to `to` (exposed for `--explain` and tests).
    /// It re-verifies the signature in `from` (see [`Promoter::check_signature`]); the gates may read the result,
    /// but no policy decides it.
    pub fn gate_input(&self, v: &VersionRecord, from: &DataZone, to: &DataZone, extra_approvals: &[Envelope]) -> Value {
        let verified = self.check_signature(v, from);
        self.gate_input_with(v, from, to, extra_approvals, &verified)
    }

    fn gate_input_with(
        &self,
        v: &VersionRecord,
        from: &DataZone,
        to: &DataZone,
        extra_approvals: &[Envelope],
        verified: &std::result::Result<(), Vec<String>>,
    ) -> Value {
        let class = self.cluster.class(&v.residency_class);
        let target = self.cluster.zone(&to.zone);
        let violations: Vec<String> = match (class, target) {
            (Some(c), Some(z)) => c.violations(z).into_iter().map(|x| x.message).collect(),
            _ => vec![format!("zone {} or class {} is not in the cluster config", to.zone, v.residency_class)],
        };
        let training = self.training_facts(v, class);
        let (valid, rejected) = self.count_approvals(v, from.stage, to.stage, extra_approvals);
        let signer = self.signer(&v.signer_hint);
        let dz = |d: &DataZone| InputDataZone { stage: d.stage.to_string(), zone: d.zone.clone() };
        let input = GateInput {
            version: GATE_INPUT_VERSION,
            model: InputModel {
                name: v.model.clone(),
                digest: v.digest.clone(),
                residency_class: v.residency_class.clone(),
                files: v.files.len(),
                bytes: v.size(),
            },
            manifest: InputManifest {
                root_digest: v.digest.clone(),
                resources: v
                    .files
                    .iter()
                    .map(|f| InputResource { name: f.name.clone(), digest: f.digest.clone() })
                    .collect(),
            },
            signature: InputSignature {
                verified: verified.is_ok(),
                error: verified.as_ref().err().map(|r| r.join("; ")).unwrap_or_default(),
            },
            signer: InputSigner {
                hint: v.signer_hint.clone(),
                name: signer.map(|s| s.name.clone()),
                allowed: signer.is_some(),
                allowed_names: self.config.signers.iter().map(|s| s.name.clone()).collect(),
            },
            provenance: v.provenance.clone(),
            metrics: v.metrics.clone(),
            evaluation: InputEvaluation {
                thresholds: self
                    .config
                    .evaluation
                    .iter()
                    .map(|(k, t)| (k.clone(), InputThreshold { min: t.min, max: t.max }))
                    .collect(),
            },
            approvals: InputApprovals {
                required: self.config.required_approvals(to.stage),
                valid: valid.into_iter().map(|(approver, record)| InputApproval { approver, record }).collect(),
                rejected,
                approvers: self.config.approvers.iter().map(|a| a.name.clone()).collect(),
            },
            from: dz(from),
            to: dz(to),
            target: InputTarget {
                zone: target.map(zone_doc),
                satisfies_residency: violations.is_empty(),
                residency_violations: violations,
            },
            residency_class: class.map(|c| serde_json::to_value(c).unwrap_or(Value::Null)),
            training,
            now: self.now(),
        };
        serde_json::to_value(&input).unwrap_or(Value::Null)
    }

    /// Evaluates a promotion of `model@reference` into stage `to` without doing it: the stage order, the chain,
    /// then every gate (with live exceptions). Nothing is copied, recorded or audited (`sovra model promote
    /// --dry-run`).
    pub fn evaluate(
        &self,
        model: &str,
        reference: Option<&str>,
        to: Stage,
        zone: Option<&str>,
        approval_files: &[PathBuf],
    ) -> Res<Decision> {
        Ok(self.decide(model, reference, to, zone, approval_files)?.0)
    }

    /// [`Promoter::evaluate`], and the stored bytes the decision was made on.
    pub(crate) fn decide(
        &self,
        model: &str,
        reference: Option<&str>,
        to: Stage,
        zone: Option<&str>,
        approval_files: &[PathBuf],
    ) -> Res<(Decision, Read)> {
        let found = self.registry.resolve(model, reference)?;
        // The record and its bytes in one read: the decision is made on exactly what the commit will expect.
        let (v, version_raw) = self.registry.version_with_raw(&found.model, &found.digest)?.ok_or_else(|| {
            bad(format!("{}@{}: the version disappeared while being read; retry", found.model, short(&found.digest)))
        })?;
        let mut extra = Vec::new();
        for f in approval_files {
            let text = std::fs::read(f).map_err(|e| bad(format!("{}: cannot read the approval: {e}", f.display())))?;
            let env: Envelope = serde_json::from_slice(&text).map_err(|e| {
                bad(format!(
                    "{}: not an approval envelope (DSSE JSON from `sovra model approve --out`): {e}",
                    f.display()
                ))
            })?;
            extra.push(env);
        }
        let zone = zone.map(str::to_string).unwrap_or_else(|| self.config.stages.zones(to)[0].clone());
        let target = self.data_zone(&zone, to)?;
        let read = Read { version: Some(version_raw), alias: self.registry.alias_raw(&target, &v.model, "latest")? };
        // Stage order: every promotion is one edge, training → registry or registry → inference, from a data zone
        // of the stage just before the target (the one in the target's own zone when there is one, else the
        // latest). Never skipping, never backwards; a version may fan out to several zones of a stage.
        let stage_order = |reason: String| GateResult {
            gate: "stage_order".into(),
            result: "fail".into(),
            reasons: vec![reason],
            exception: None,
        };
        let Some(prev) = Stage::ALL.into_iter().find(|s| s.next() == Some(to)) else {
            let from = v.current().map(|l| l.data_zone.clone()).unwrap_or_else(|| target.clone());
            let g = stage_order("nothing is promoted into training; push the model instead".into());
            return Ok((Decision::refused(v, from, target, g), read));
        };
        let sources: Vec<&Location> = v.locations.iter().filter(|l| l.data_zone.stage == prev).collect();
        let Some(cur) = sources
            .iter()
            .find(|l| l.data_zone.zone == target.zone)
            .or_else(|| sources.iter().max_by_key(|l| l.since))
            .map(|l| (*l).clone())
        else {
            let from = v.current().map(|l| l.data_zone.clone()).unwrap_or_else(|| target.clone());
            let g = stage_order(format!(
                "the version is in {from} and in no {prev} data zone: {} → {to} would skip {prev}; promote to {prev} \
                 first",
                from.stage
            ));
            return Ok((Decision::refused(v, from, target, g), read));
        };
        let from = cur.data_zone.clone();
        if v.locations.iter().any(|l| l.data_zone == target) {
            let g = stage_order(format!("the version is already in {target}"));
            return Ok((Decision::refused(v, from, target, g), read));
        }
        // Content: an empty model (pushed before push refused them) is never promoted; no exception covers it.
        if v.files.is_empty() {
            let g = GateResult {
                gate: "content".into(),
                result: "fail".into(),
                reasons: vec!["the version has no files; empty models are never promoted".into()],
                exception: None,
            };
            return Ok((Decision::refused(v, from, target, g), read));
        }
        // Chain: a version outside training must have arrived by a verified promotion.
        if from.stage != Stage::Training {
            let ok = cur.promotion.and_then(|id| self.promotion_record(id, &v)).is_some();
            if !ok {
                let g = GateResult {
                    gate: "chain".into(),
                    result: "fail".into(),
                    reasons: vec![format!("no verified promotion record brought the version into {from}")],
                    exception: None,
                };
                return Ok((Decision::refused(v, from, target, g), read));
            }
        }
        let verified = self.check_signature(&v, &from);
        let input = self.gate_input_with(&v, &from, &target, &extra, &verified);
        let mut gates = self.gates.evaluate(&input).map_err(bad)?;
        // The signature is checked here, in Rust: listed with the gates so that a denial names every failure, but
        // no policy file replaces it and no exception waives it.
        gates.push(GateResult {
            gate: "signature".into(),
            result: if verified.is_ok() { "pass" } else { "fail" }.into(),
            reasons: verified.err().unwrap_or_default(),
            exception: None,
        });
        gates.sort_by(|a, b| a.gate.cmp(&b.gate));
        let exceptions = self.live_exceptions(&v);
        let mut under_exception = false;
        for g in &mut gates {
            if g.result == "fail"
                && !crate::gates::is_built_in(&g.gate)
                && let Some(id) = exceptions.get(&g.gate)
            {
                g.result = "exception".into();
                g.exception = Some(*id);
                under_exception = true;
            }
        }
        let allowed = gates.iter().all(GateResult::allows);
        let d = Decision {
            version: v,
            from,
            to: target,
            gates,
            under_exception,
            allowed,
            input,
            exceptions: exceptions.values().copied().collect(),
            previous: cur.promotion,
        };
        Ok((d, read))
    }
}
