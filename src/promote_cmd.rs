//! `sovra model keygen | push | pull | list | status | promote | approve`, `sovra exception grant` and
//! `sovra audit verify | log`: the model registry and gated promotion (docs/registry.md).
//!
//! The registry directory comes from `--registry` or `SOVRA_REGISTRY` (default `./sovra-registry`), the promotion
//! config from `--promotion-config` or `SOVRA_PROMOTION_CONFIG` (default `./promotion.yaml`). Exit codes: 0 done;
//! 1 denied by the gates (every failed gate is listed), a signature or digest did not verify, or the audit chain
//! is broken or the registry is damaged (its log does not reach the recorded audit head); 2 bad input (a file,
//! key, name or flag is wrong; nothing was written or promoted). The `audit` and `registry` subcommands live in
//! `registry_cmd`.

use crate::promotion_client::{Backend, BackendError};
use crate::{Failure, Output};
use serde_json::{Value, json};
use sovra_domain::ClusterConfig;
use sovra_domain::datazone::Stage;
use sovra_promotion::{PromoteError, Promoter, PromotionConfig, PushRequest};
use sovra_registry::{OpenOptions, Registry};
use std::path::{Path, PathBuf};

pub(crate) use crate::registry_cmd::{AuditCommand, audit};

/// A stage on the command line (clap lists these on a bad value).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StageArg {
    /// Where training jobs write models.
    Training,
    /// The curated registry.
    Registry,
    /// Where inference jobs read models.
    Inference,
}

impl From<StageArg> for Stage {
    fn from(s: StageArg) -> Stage {
        match s {
            StageArg::Training => Stage::Training,
            StageArg::Registry => Stage::Registry,
            StageArg::Inference => Stage::Inference,
        }
    }
}

/// A stage a model can be promoted (or approved) into: nothing is promoted into training.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TargetStage {
    /// The curated registry.
    Registry,
    /// Where inference jobs read models.
    Inference,
}

impl From<TargetStage> for Stage {
    fn from(s: TargetStage) -> Stage {
        match s {
            TargetStage::Registry => Stage::Registry,
            TargetStage::Inference => Stage::Inference,
        }
    }
}

/// Where the registry and the promotion config are.
#[derive(clap::Args, Clone)]
pub(crate) struct Where {
    /// Registry directory (blobs and sled metadata); created on first push.
    #[arg(long, env = "SOVRA_REGISTRY", hide_env_values = true, default_value = "sovra-registry")]
    registry: PathBuf,
    /// Promotion config (stages → zones, signers, approvers, admins, service key, thresholds); see
    /// examples/promotion.yaml.
    #[arg(long, env = "SOVRA_PROMOTION_CONFIG", hide_env_values = true, default_value = "promotion.yaml")]
    promotion_config: PathBuf,
    /// A second file that keeps the audit head (e.g. on another volume): written after every commit beside
    /// REGISTRY/audit.head and checked at every open; see docs/registry.md.
    #[arg(long, env = "SOVRA_AUDIT_WITNESS", hide_env_values = true, value_name = "FILE")]
    audit_witness: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    /// The promotion service to run on instead (`--server`; see src/promotion_client.rs).
    #[command(flatten)]
    pub(crate) service: crate::promotion_client::ServerArgs,
}

/// `sovra model push`.
#[derive(clap::Args)]
pub(crate) struct PushArgs {
    /// Model name (letters, digits, `-`, `_`, `.`).
    name: String,
    /// The model directory (or file).
    model_path: PathBuf,
    /// Its OMS bundle (`sovra model sign` or `model_signing sign key`).
    #[arg(long)]
    signature: PathBuf,
    /// The signer's public key. Default: the configured signer whose key hint the bundle carries.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// Residency class of the training data (a class of the cluster config).
    #[arg(long)]
    residency_class: String,
    /// Provenance file (YAML/JSON): `training_job`, `training_zone`, ... A self-declared `training_zone` counts
    /// only where the promotion config sets `provenance.require_receipts: false`.
    #[arg(long)]
    provenance: Option<PathBuf>,
    /// The training job whose signed placement receipts prove where the model was trained: fetched from the
    /// scheduler (SOVRA_SERVER, SOVRA_TOKEN, SOVRA_CA) and attached to the provenance.
    #[arg(long, value_name = "ID", conflicts_with = "receipts")]
    training_job: Option<u64>,
    /// The training job's receipts document (`sovra job receipts ID -o json`), attached to the provenance.
    #[arg(long, value_name = "FILE")]
    receipts: Option<PathBuf>,
    /// Evaluation metrics file (YAML/JSON): name → number.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Training zone to store it in. Default: the provenance's training_zone, else the first training zone.
    #[arg(long)]
    zone: Option<String>,
    #[command(flatten)]
    at: Where,
}

/// `sovra model pull`.
#[derive(clap::Args)]
pub(crate) struct PullArgs {
    /// NAME or NAME@DIGEST-PREFIX.
    model: String,
    /// Directory to write (must not exist or be empty).
    dest: PathBuf,
    /// Where to write the bundle. Default: DEST.sig beside DEST (never inside it; `out/` gives `out.sig`).
    #[arg(long)]
    signature: Option<PathBuf>,
    /// Pull from this stage's data zone. Default: the furthest stage reached.
    #[arg(long, value_enum)]
    stage: Option<StageArg>,
    /// Pull from this zone's data zone (with --stage: that one). Every pull is audited: who, what, which zone.
    #[arg(long)]
    zone: Option<String>,
    #[command(flatten)]
    at: Where,
}

/// `sovra model list`.
#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// Only this model.
    name: Option<String>,
    #[command(flatten)]
    at: Where,
}

/// `sovra model promote`.
#[derive(clap::Args)]
pub(crate) struct PromoteArgs {
    /// NAME or NAME@DIGEST-PREFIX.
    model: String,
    /// Target stage (only the next stage is allowed).
    #[arg(long, value_enum)]
    to: TargetStage,
    /// Target zone. Default: the stage's first zone in the promotion config.
    #[arg(long)]
    zone: Option<String>,
    /// Approval envelope files (from `sovra model approve --out`), in addition to those recorded in the registry.
    #[arg(long = "approval", value_name = "FILE")]
    approvals: Vec<PathBuf>,
    /// Evaluate the stage order, the chain and the gates only: nothing is copied, recorded or audited. Exit 0 if
    /// the promotion would pass, 1 if it would be denied.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: also print the input document the gates see (JSON output only).
    #[arg(long, requires = "dry_run")]
    explain: bool,
    #[command(flatten)]
    at: Where,
}

/// `sovra model approve`.
#[derive(clap::Args)]
pub(crate) struct ApproveArgs {
    /// NAME or NAME@DIGEST-PREFIX.
    model: String,
    /// The stage the approval lets it enter.
    #[arg(long, value_enum)]
    to: TargetStage,
    /// The approver's PEM private key.
    #[arg(long)]
    key: PathBuf,
    /// Validity, e.g. 30m, 24h, 7d. Default and maximum: approvals.max_age of the promotion config.
    #[arg(long)]
    ttl: Option<String>,
    /// Also write the signed approval (DSSE JSON) here, to pass to `sovra model promote --approval` in CI.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only write --out; do not record the approval in the registry.
    #[arg(long, requires = "out")]
    no_record: bool,
    #[command(flatten)]
    at: Where,
}

/// `sovra exception ...`.
#[derive(clap::Subcommand)]
pub(crate) enum ExceptionCommand {
    /// Break-glass: let one gate pass for one model version until the TTL runs out; signed by an admin key,
    /// audited, and every promotion made under it is marked.
    Grant {
        /// NAME or NAME@DIGEST-PREFIX.
        #[arg(long)]
        model: String,
        /// The gate to override (e.g. approvals, evaluation).
        #[arg(long)]
        gate: String,
        /// How long it lasts, e.g. 30m, 4h; at most exceptions.max_ttl of the promotion config (default 24h).
        #[arg(long)]
        ttl: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// An admin's PEM private key.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        at: Where,
    },
}

pub(crate) fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

pub(crate) fn from_promote(e: impl Into<BackendError>) -> Failure {
    Failure::from(e.into())
}

/// A registry error on the command line: damage (a rolled-back or unreadable store) exits 1, the rest 2.
pub(crate) fn from_registry(e: sovra_registry::Error) -> Failure {
    fail(if e.is_damage() { 1 } else { 2 }, e.to_string())
}

/// Opens (or creates) a registry; refuses a damaged one (exit 1) — every command but `sovra audit verify | log |
/// reset-head`, which report on it instead.
pub(crate) fn open_registry(path: &Path, options: &OpenOptions) -> Result<Registry, Failure> {
    Registry::open_opts(path, options).map_err(from_registry)
}

/// Opens an existing registry only (reading commands never create one).
pub(crate) fn open_existing(path: &Path, options: &OpenOptions) -> Result<Registry, Failure> {
    if !path.join("meta.sled").exists() && !path.join(sovra_registry::head::HEAD_FILE).exists() {
        return Err(fail(
            2,
            format!("{}: no registry here; give --registry or SOVRA_REGISTRY (push creates one)", path.display()),
        ));
    }
    open_registry(path, options)
}

fn options(at: &Where) -> OpenOptions {
    OpenOptions { witness: at.audit_witness.clone(), inspect: false }
}

pub(crate) fn promoter(at: &Where) -> Result<Promoter, Failure> {
    let config = PromotionConfig::load(&at.promotion_config).map_err(|e| {
        fail(2, format!("{e}\n  (give the promotion config with --promotion-config or SOVRA_PROMOTION_CONFIG; see examples/promotion.yaml)"))
    })?;
    let cluster = match &config.cluster {
        Some(p) => ClusterConfig::load(p)?,
        None => ClusterConfig::from_yaml("<built-in examples/cluster.yaml>", crate::EXAMPLE_CLUSTER)?,
    };
    let registry = open_registry(&at.registry, &options(at))?;
    let p = Promoter::new(registry, config, cluster).map_err(from_promote)?;
    for w in p.gates.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(p)
}

/// The promotion service when `--server` is given, else a local promoter.
pub(crate) fn backend(at: &Where) -> Result<Backend, Failure> {
    match at.service.connect()? {
        Some(r) => Ok(Backend::Remote(Box::new(r))),
        None => Ok(Backend::Local(Box::new(promoter(at)?))),
    }
}

pub(crate) fn split_ref(s: &str) -> (&str, Option<&str>) {
    match s.split_once('@') {
        Some((n, r)) => (n, Some(r)),
        None => (s, None),
    }
}

pub(crate) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Unix seconds as UTC `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, proleptic Gregorian calendar), by `jiff`. An instant past
/// jiff's range (after 9999-12-30T22:00:00Z) is shown as plain seconds rather than a made-up date.
pub(crate) fn utc(secs: u64) -> String {
    match i64::try_from(secs).ok().and_then(|s| jiff::Timestamp::from_second(s).ok()) {
        Some(t) => t.to_string(),
        None => format!("{secs} s after 1970-01-01T00:00:00Z (past jiff's range)"),
    }
}

pub(crate) fn utc_of(v: &Value) -> String {
    v.as_u64().map(utc).unwrap_or_else(|| "?".into())
}

pub(crate) fn short(d: &str) -> String {
    d.chars().take(12).collect()
}

/// After a write that appended to the audit log: `audit head: COUNT HASH` on stderr, for a pipeline to record
/// and check later (`sovra audit verify --expect-head`, tests/audit_verify.py). Local mode only.
fn print_head(p: &Backend) {
    if let Some(h) = p.audit_head() {
        eprintln!("audit head: {} {}", h.count, h.hash);
    }
}

/// `sovra model push`.
pub(crate) fn push(a: PushArgs) -> Result<u8, Failure> {
    // Kept until the push ends: the provenance with the training job's receipts attached.
    let merged = crate::receipts_cmd::attach(a.training_job, a.receipts.as_deref(), a.provenance.as_deref())?;
    let p = backend(&a.at)?;
    let req = PushRequest {
        name: a.name,
        model: a.model_path,
        signature: a.signature,
        public_key: a.public_key,
        residency_class: a.residency_class,
        provenance: merged.as_ref().map(|f| f.path().to_path_buf()).or(a.provenance),
        metrics: a.metrics,
        zone: a.zone,
    };
    let v = p.push(&req).map_err(from_promote)?;
    print_head(&p);
    let loc = v.current().map(|l| l.data_zone.to_string()).unwrap_or_default();
    match a.at.output {
        Output::Json => print_json(&json!({"status": "pushed", "model": v.model, "digest": v.digest,
            "data_zone": loc, "files": v.files.len(), "bytes": v.size(), "signer_hint": v.signer_hint})),
        Output::Text => println!(
            "Pushed {}@{} → {loc} ({} file(s), {} bytes; signature and every digest verified)",
            v.model,
            short(&v.digest),
            v.files.len(),
            v.size()
        ),
    }
    Ok(0)
}

/// `sovra model pull`.
pub(crate) fn pull(a: PullArgs) -> Result<u8, Failure> {
    let sig = match a.signature.clone() {
        Some(s) => s,
        None => sovra_promotion::default_signature_path(&a.dest).ok_or_else(|| {
            fail(2, format!("{}: has no name to put `.sig` after; give --signature", a.dest.display()))
        })?,
    };
    let p = backend(&a.at)?;
    let (name, r) = split_ref(&a.model);
    let from = sovra_promotion::PullFrom { stage: a.stage.map(Stage::from), zone: a.zone.clone() };
    let (v, dz) = p.pull(name, r, &from, &a.dest, &sig).map_err(from_promote)?;
    match a.at.output {
        Output::Json => print_json(&json!({"status": "pulled", "model": v.model, "digest": v.digest,
            "data_zone": dz.to_string(), "dest": a.dest, "signature": sig, "files": v.files.len()})),
        Output::Text => {
            println!("Pulled {}@{} from {dz} (every digest checked):", v.model, short(&v.digest),);
            println!("  files  → {} ({} file(s), {} bytes)", a.dest.display(), v.files.len(), v.size());
            println!("  bundle → {} (the OMS signature, beside the files, not inside them)", sig.display());
            println!(
                "  check: sovra model verify {} --signature {} --public-key SIGNER.pub.pem",
                a.dest.display(),
                sig.display()
            );
        }
    }
    Ok(0)
}

/// `sovra model list`.
pub(crate) fn list(a: ListArgs) -> Result<u8, Failure> {
    let versions = match a.at.service.connect()? {
        Some(remote) => remote.versions(a.name.as_deref())?,
        None => {
            let reg = open_existing(&a.at.registry, &options(&a.at))?;
            reg.versions(a.name.as_deref()).map_err(from_registry)?
        }
    };
    match a.at.output {
        Output::Json => print_json(&json!(
            versions
                .iter()
                .map(|v| json!({"model": v.model, "digest": v.digest,
            "residency_class": v.residency_class, "current": v.current().map(|l| l.data_zone.to_string()),
            "files": v.files.len(), "bytes": v.size(), "pushed_at": v.pushed_at, "locations": v.locations}))
                .collect::<Vec<_>>()
        )),
        Output::Text => {
            if versions.is_empty() {
                println!("no models in {}", a.at.registry.display());
            }
            for v in &versions {
                let zones: Vec<String> = v.locations.iter().map(|l| l.data_zone.to_string()).collect();
                println!(
                    "{}@{}  class {}  {} file(s), {} bytes  in {}",
                    v.model,
                    short(&v.digest),
                    v.residency_class,
                    v.files.len(),
                    v.size(),
                    zones.join(", ")
                );
            }
        }
    }
    Ok(0)
}

/// `sovra model promote`.
pub(crate) fn promote(a: PromoteArgs) -> Result<u8, Failure> {
    let p = backend(&a.at)?;
    let (name, r) = split_ref(&a.model);
    if a.dry_run {
        let (d, policy_digest) =
            p.evaluate(name, r, a.to.into(), a.zone.as_deref(), &a.approvals, a.explain).map_err(from_promote)?;
        let failed: Vec<_> = d.gates.iter().filter(|g| !g.allows()).collect();
        match a.at.output {
            Output::Json => {
                let mut doc = json!({"status": if d.allowed { "would-promote" } else { "would-deny" },
                    "model": d.version.model, "digest": d.version.digest, "from": d.from.to_string(),
                    "to": d.to.to_string(), "under_exception": d.under_exception, "failed": failed,
                    "gates": d.gates, "policy_digest": policy_digest});
                if a.explain {
                    doc["input"] = d.input.clone();
                }
                print_json(&doc);
            }
            Output::Text => {
                println!(
                    "{} (dry run): {}@{} {} → {}",
                    if d.allowed { "WOULD PROMOTE" } else { "WOULD BE DENIED" },
                    d.version.model,
                    short(&d.version.digest),
                    d.from,
                    d.to
                );
                for g in &d.gates {
                    println!("  {:<14} {}", g.gate, g.result);
                    for reason in &g.reasons {
                        println!("      {reason}");
                    }
                }
            }
        }
        return Ok(if d.allowed { 0 } else { 1 });
    }
    let result = p.promote(name, r, a.to.into(), a.zone.as_deref(), &a.approvals);
    if matches!(result, Ok(_) | Err(BackendError::Promote(PromoteError::Denied { .. }))) {
        print_head(&p);
    }
    match result {
        Ok(done) => {
            match a.at.output {
                Output::Json => print_json(&json!({"status": "promoted", "model": done.version.model,
                    "digest": done.version.digest, "from": done.from.to_string(), "to": done.to.to_string(),
                    "under_exception": done.under_exception, "gates": done.gates, "record": done.record.id,
                    "statement": done.record.envelope, "audit_seq": done.audit_seq})),
                Output::Text => {
                    println!(
                        "Promoted {}@{} {} → {}{}",
                        done.version.model,
                        short(&done.version.digest),
                        done.from,
                        done.to,
                        if done.under_exception { " UNDER EXCEPTION" } else { "" }
                    );
                    for g in &done.gates {
                        println!("  {:<14} {}", g.gate, g.result);
                    }
                    println!(
                        "  statement #{} signed by the promotion service; audit entry {}",
                        done.record.id, done.audit_seq
                    );
                }
            }
            Ok(0)
        }
        Err(BackendError::Promote(PromoteError::Denied { subject, from, to, failed, gates })) => {
            match a.at.output {
                Output::Json => print_json(&json!({"status": "denied", "model": subject, "from": from, "to": to,
                    "failed": failed, "gates": gates})),
                Output::Text => {
                    println!("DENIED: {subject} {from} → {to}");
                    for g in &gates {
                        println!("  {:<14} {}", g.gate, g.result);
                        for reason in &g.reasons {
                            println!("      {reason}");
                        }
                    }
                }
            }
            Err(fail(
                1,
                format!(
                    "promotion denied by {} gate(s): {}",
                    failed.len(),
                    failed.iter().map(|g| g.gate.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ))
        }
        Err(e) => Err(from_promote(e)),
    }
}

/// `sovra model approve`.
pub(crate) fn approve(a: ApproveArgs) -> Result<u8, Failure> {
    let p = backend(&a.at)?;
    let (name, r) = split_ref(&a.model);
    let ttl = a
        .ttl
        .as_deref()
        .map(sovra_promotion::config::parse_duration)
        .transpose()
        .map_err(|e| fail(2, format!("--ttl: {e}")))?;
    let rec = p.approve(name, r, a.to.into(), &a.key, ttl, !a.no_record).map_err(from_promote)?;
    if !a.no_record {
        print_head(&p);
    }
    if let Some(out) = &a.out {
        let bytes = serde_json::to_vec_pretty(&rec.envelope).unwrap_or_default();
        std::fs::write(out, bytes).map_err(|e| fail(2, format!("{}: cannot write: {e}", out.display())))?;
    }
    let approver = rec.fields["approver"].as_str().unwrap_or("unknown").to_string();
    if approver == "unknown" {
        eprintln!("warning: {} is not a configured approver's key; this approval will not count", a.key.display());
    }
    match a.at.output {
        Output::Json => print_json(&json!({"status": "approved", "approver": approver, "model": rec.model,
            "digest": rec.digest, "from": rec.fields["from"], "to": rec.fields["to"],
            "expires_at": rec.fields["expires_at"], "recorded": !a.no_record, "record": rec.id,
            "out": a.out, "envelope": rec.envelope})),
        Output::Text => println!(
            "Approved {}@{} {} → {} by {approver} (expires {}){}",
            rec.model,
            short(&rec.digest),
            rec.fields["from"].as_str().unwrap_or(""),
            rec.fields["to"].as_str().unwrap_or(""),
            utc_of(&rec.fields["expires_at"]),
            a.out.as_ref().map(|o| format!("; written to {}", o.display())).unwrap_or_default()
        ),
    }
    Ok(0)
}

/// `sovra exception ...`.
pub(crate) fn exception(c: ExceptionCommand) -> Result<u8, Failure> {
    let ExceptionCommand::Grant { model, gate, ttl, reason, key, at } = c;
    let ttl = sovra_promotion::config::parse_duration(&ttl).map_err(|e| fail(2, format!("--ttl: {e}")))?;
    let p = backend(&at)?;
    let (name, r) = split_ref(&model);
    let rec = p.grant_exception(name, r, &gate, ttl, &reason, &key).map_err(from_promote)?;
    print_head(&p);
    match at.output {
        Output::Json => print_json(&json!({"status": "granted", "record": rec.id, "model": rec.model,
            "digest": rec.digest, "gate": gate, "admin": rec.fields["admin"], "expires_at": rec.fields["expires_at"]})),
        Output::Text => println!(
            "Exception #{} granted by {}: gate {gate} for {}@{} until {} ({reason})",
            rec.id,
            rec.fields["admin"].as_str().unwrap_or(""),
            rec.model,
            short(&rec.digest),
            utc_of(&rec.fields["expires_at"])
        ),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_406_068), "2026-11-23T03:54:28Z");
        assert_eq!(super::utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(super::utc(253_402_207_200), "9999-12-30T22:00:00Z");
    }

    #[test]
    fn utc_past_jiffs_range_is_not_a_made_up_date() {
        assert_eq!(super::utc(253_402_207_201), "253402207201 s after 1970-01-01T00:00:00Z (past jiff's range)");
        assert!(super::utc(u64::MAX).starts_with("18446744073709551615 s after"));
    }
}
