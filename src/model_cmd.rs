//! `sovra model sign | verify` (and the registry subcommands of `promote_cmd`): OpenSSF Model Signing (OMS v1.0) in key mode, interoperable with `model_signing`
//! 1.1.1 (see docs/signing.md).
//!
//! Exit codes: 0 signed / verified; 1 the signature does not verify or the model differs from it (the changed,
//! added and missing files are printed); 2 bad input (a file, key or flag is wrong; nothing was written).

use crate::promote_cmd::{fail, from_promote, print_json, short, split_ref, utc_of};
use crate::{Failure, Output};
use clap::Subcommand;
use serde_json::json;
use sovra_oms::{Error, SignOptions, VerifyOptions, sign_model, verify_model};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The `sovra model` subcommands.
#[derive(Subcommand)]
pub(crate) enum ModelCommand {
    /// Sign a model directory (or file) with an EC P-256/P-384 PEM private key: an OMS v1.0 Sigstore bundle, as
    /// `model_signing sign key` writes it.
    Sign {
        /// The model directory, or a single model file.
        model_path: PathBuf,
        /// The signing key, P-256 or P-384: a PEM file (SEC1 `EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`),
        /// `file:PATH?passphrase-env=VAR` (encrypted PKCS#8) or `pkcs11:token=…;object=…` (docs/keys.md).
        #[arg(long, visible_alias = "key", alias = "private_key", value_name = "KEY")]
        private_key: PathBuf,
        /// Where to write the bundle. Default: model.sig in the current directory (as model_signing does).
        #[arg(long, default_value = "model.sig")]
        signature: PathBuf,
        /// Leave this path out (repeatable): resolved against the current directory, else relative to the model.
        #[arg(long = "ignore-paths", value_name = "PATH")]
        ignore_paths: Vec<PathBuf>,
        /// Do not leave out the top-level .git, .github, .gitignore and .gitattributes.
        #[arg(long)]
        no_ignore_git_paths: bool,
        /// Hash symbolic links that stay inside the model (refused by default; links leaving it always are).
        #[arg(long, alias = "allow_symlinks")]
        allow_symlinks: bool,
        /// Sign shards of this many bytes instead of whole files (the OMS `shards` method; `model_signing verify`
        /// cannot check those, `sovra model verify` can).
        #[arg(long, value_name = "BYTES")]
        shard_size: Option<u64>,
        /// Hashing threads. Default: all cores.
        #[arg(long)]
        threads: Option<usize>,
        /// Sign even if the model has no files (refused by default; the registry never stores an empty model).
        #[arg(long)]
        allow_empty: bool,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Verify a model against an OMS bundle and the signer's PEM public key; on a mismatch, list the changed,
    /// added and missing files and exit 1.
    Verify {
        /// The model directory, or a single model file.
        model_path: PathBuf,
        /// The bundle (e.g. model.sig).
        #[arg(long)]
        signature: PathBuf,
        /// The signer's PEM public key.
        #[arg(long, alias = "public_key")]
        public_key: PathBuf,
        /// Also leave this path out (repeatable); the bundle's own ignore_paths always apply.
        #[arg(long = "ignore-paths", value_name = "PATH")]
        ignore_paths: Vec<PathBuf>,
        /// Do not leave out the top-level git paths (those the bundle lists still are).
        #[arg(long)]
        no_ignore_git_paths: bool,
        /// Hash symbolic links that stay inside the model (pass it again if the model was signed with it).
        #[arg(long, alias = "allow_symlinks")]
        allow_symlinks: bool,
        /// Hashing threads. Default: all cores.
        #[arg(long)]
        threads: Option<usize>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Generate an EC P-256 key pair (PREFIX.pem, PREFIX.pub.pem) for a signer, approver, admin or the promotion
    /// service.
    Keygen(KeygenArgs),
    /// Print the JSON Schema of the document the promotion gates read (`input` in Rego): the contract a policy
    /// author writes against (committed as promotion/policies/gate-input.schema.json).
    GateSchema,
    /// Verify a signed model and store it in a training data zone of the registry.
    Push(crate::promote_cmd::PushArgs),
    /// Write a version's files into DEST and its bundle beside it (DEST.sig), checking every digest.
    Pull(crate::promote_cmd::PullArgs),
    /// List the registry's model versions and the data zones holding them.
    List(crate::promote_cmd::ListArgs),
    /// Show a version: where it is, its promotions (statements verified), approvals and exceptions.
    Status(StatusArgs),
    /// Promote a version to the next stage (training → registry → inference) through the gates; exit 1 with every
    /// failed gate and its reason when denied.
    Promote(crate::promote_cmd::PromoteArgs),
    /// Sign an approval of (model digest, from, to) with an approver's key.
    Approve(crate::promote_cmd::ApproveArgs),
    /// Withdraw a version from one data zone (signed by an admin key, audited): pulls from that zone are refused
    /// afterwards, status shows it with the reason, and promoting it there again needs fresh approvals.
    Withdraw(crate::withdraw_cmd::WithdrawArgs),
    /// Re-verify a stored version in every data zone it is in: the OMS signature, the signed manifest, every blob
    /// (decrypted) against its digest. Exit 1 when any of it fails.
    Check(crate::withdraw_cmd::CheckArgs),
}

/// `sovra model keygen`.
#[derive(clap::Args)]
pub(crate) struct KeygenArgs {
    /// Path prefix: writes PREFIX.pem (private, mode 0600) and PREFIX.pub.pem.
    prefix: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `sovra model status`.
#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    /// NAME or NAME@DIGEST-PREFIX.
    model: String,
    #[command(flatten)]
    at: crate::promote_cmd::Where,
}

/// Runs a `sovra model` subcommand; returns the exit code.
pub(crate) fn run(command: ModelCommand) -> Result<u8, Failure> {
    use crate::promote_cmd;
    match command {
        ModelCommand::Keygen(a) => keygen(a),
        ModelCommand::GateSchema => {
            let schema = sovra_promotion::payloads::gate_input_schema();
            println!("{}", serde_json::to_string_pretty(&schema).unwrap_or_default());
            Ok(0)
        }
        ModelCommand::Push(a) => promote_cmd::push(a),
        ModelCommand::Pull(a) => promote_cmd::pull(a),
        ModelCommand::List(a) => promote_cmd::list(a),
        ModelCommand::Status(a) => status(a),
        ModelCommand::Promote(a) => promote_cmd::promote(a),
        ModelCommand::Approve(a) => promote_cmd::approve(a),
        ModelCommand::Withdraw(a) => crate::withdraw_cmd::withdraw(a),
        ModelCommand::Check(a) => crate::withdraw_cmd::check(a),
        ModelCommand::Sign {
            model_path,
            private_key,
            signature,
            ignore_paths,
            no_ignore_git_paths,
            allow_symlinks,
            shard_size,
            threads,
            allow_empty,
            output,
        } => {
            let options = SignOptions {
                ignore_paths,
                ignore_git_paths: !no_ignore_git_paths,
                allow_symlinks,
                shard_size,
                threads,
                allow_empty,
            };
            let start = Instant::now();
            let out = sign_model(&model_path, &private_key, &signature, &options).map_err(failure)?;
            let secs = start.elapsed().as_secs_f64();
            let curve = format!("{:?}", out.curve).replace('P', "P-");
            match output {
                Output::Json => println!(
                    "{}",
                    json!({
                        "status": "signed",
                        "model": model_path,
                        "signature": out.signature,
                        "root_digest": out.root_digest,
                        "curve": curve,
                        "key_hint": out.hint,
                        "files": out.manifest.resources.len(),
                        "bytes": out.bytes,
                        "seconds": secs,
                        "resources": out.manifest.resources,
                    })
                ),
                Output::Text => {
                    println!(
                        "Signed {} → {} ({} resource(s), {}, {curve} key {})",
                        model_path.display(),
                        out.signature.display(),
                        out.manifest.resources.len(),
                        throughput(out.bytes, secs),
                        &out.hint[..16]
                    );
                    println!("  root digest sha256:{}", out.root_digest);
                }
            }
            Ok(0)
        }
        ModelCommand::Verify {
            model_path,
            signature,
            public_key,
            ignore_paths,
            no_ignore_git_paths,
            allow_symlinks,
            threads,
            output,
        } => {
            let options =
                VerifyOptions { ignore_paths, ignore_git_paths: !no_ignore_git_paths, allow_symlinks, threads };
            let start = Instant::now();
            match verify_model(&model_path, &signature, &public_key, &options) {
                Ok(out) => {
                    let secs = start.elapsed().as_secs_f64();
                    match output {
                        Output::Json => println!(
                            "{}",
                            json!({
                                "status": "verified",
                                "model": model_path,
                                "signature": signature,
                                "root_digest": out.root_digest,
                                "files": out.manifest.resources.len(),
                                "bytes": out.bytes,
                                "seconds": secs,
                                "warnings": out.warnings,
                            })
                        ),
                        Output::Text => {
                            for w in &out.warnings {
                                eprintln!("warning: {w}");
                            }
                            println!(
                                "Verified {} against {} ({} resource(s), {})",
                                model_path.display(),
                                signature.display(),
                                out.manifest.resources.len(),
                                throughput(out.bytes, secs)
                            );
                            println!("  root digest sha256:{}", out.root_digest);
                        }
                    }
                    Ok(0)
                }
                Err(e) if e.is_verification_failure() => {
                    let diff = match &e {
                        Error::ManifestMismatch { diff, .. } => Some(diff),
                        _ => None,
                    };
                    match output {
                        Output::Json => println!(
                            "{}",
                            json!({
                                "status": "failed",
                                "model": model_path,
                                "signature": signature,
                                "error": e.to_string(),
                                "changed": diff.map(|d| &d.changed),
                                "added": diff.map(|d| &d.added),
                                "missing": diff.map(|d| &d.missing),
                            })
                        ),
                        Output::Text => {
                            println!("Verification FAILED for {}", model_path.display());
                            if let Some(d) = diff {
                                for (what, list) in
                                    [("changed", &d.changed), ("added", &d.added), ("missing", &d.missing)]
                                {
                                    for name in list {
                                        println!("  {what:<8} {name}");
                                    }
                                }
                            }
                        }
                    }
                    Err(failure(e))
                }
                Err(e) => Err(failure(e)),
            }
        }
    }
}

/// `sovra model keygen`.
fn keygen(a: KeygenArgs) -> Result<u8, Failure> {
    let private = PathBuf::from(format!("{}.pem", a.prefix.display()));
    let public = PathBuf::from(format!("{}.pub.pem", a.prefix.display()));
    for p in [&private, &public] {
        if p.exists() {
            return Err(fail(2, format!("{}: exists; keys are never overwritten, choose another prefix", p.display())));
        }
    }
    let (sk, pk) = sovra_oms::keys::generate_p256().map_err(|e| fail(2, e.to_string()))?;
    if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(2, format!("{}: cannot create: {e}", dir.display())))?;
    }
    let write = |path: &Path, text: &str, mode: u32| -> Result<(), Failure> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| fail(2, format!("{}: cannot write: {e}", path.display())))?;
        f.write_all(text.as_bytes()).map_err(|e| fail(2, format!("{}: cannot write: {e}", path.display())))
    };
    write(&private, &sk, 0o600)?;
    write(&public, &pk, 0o644)?;
    let hint = sovra_oms::PublicKey::from_pem(&pk).map(|k| k.hint()).unwrap_or_default();
    match a.output {
        Output::Json => {
            print_json(&json!({"private_key": private, "public_key": public, "curve": "P-256", "hint": hint}))
        }
        Output::Text => println!("Wrote {} and {} (P-256, hint {})", private.display(), public.display(), short(&hint)),
    }
    Ok(0)
}

/// `sovra model status`.
fn status(a: StatusArgs) -> Result<u8, Failure> {
    let p = crate::promote_cmd::backend(&a.at)?;
    let (name, r) = split_ref(&a.model);
    let s = p.status(name, r).map_err(from_promote)?;
    match a.at.output {
        Output::Json => print_json(&s),
        Output::Text => {
            println!(
                "{}@{}  class {}  {} file(s), {} bytes",
                s["model"].as_str().unwrap_or(""),
                short(s["digest"].as_str().unwrap_or("")),
                s["residency_class"].as_str().unwrap_or(""),
                s["files"],
                s["bytes"]
            );
            println!(
                "  current: {}   next stage: {}",
                s["current"].as_str().unwrap_or("-"),
                s["next_stage"].as_str().unwrap_or("none")
            );
            for l in s["locations"].as_array().into_iter().flatten() {
                let zone = format!("{}/{}", l["zone"].as_str().unwrap_or("?"), l["stage"].as_str().unwrap_or("?"));
                let aliases: Vec<&str> = s["aliases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["data_zone"].as_str() == Some(zone.as_str()))
                    .filter_map(|a| a["alias"].as_str())
                    .collect();
                let tags = if aliases.is_empty() { String::new() } else { format!(" [{}]", aliases.join(", ")) };
                println!("  in {zone} since {}{tags}", utc_of(&l["since"]));
            }
            for w in s["withdrawn"].as_array().into_iter().flatten() {
                println!(
                    "  WITHDRAWN from {}/{} at {} by {} (record #{}): {}",
                    w["zone"].as_str().unwrap_or("?"),
                    w["stage"].as_str().unwrap_or("?"),
                    utc_of(&w["at"]),
                    w["by"].as_str().unwrap_or("?"),
                    w["record"],
                    w["reason"].as_str().unwrap_or("")
                );
            }
            for pr in s["promotions"].as_array().into_iter().flatten() {
                println!(
                    "  promotion #{}: {} → {}{}  statement {}",
                    pr["id"],
                    pr["from"].as_str().unwrap_or(""),
                    pr["to"].as_str().unwrap_or(""),
                    if pr["under_exception"] == true { " (UNDER EXCEPTION)" } else { "" },
                    if pr["statement_verified"] == true { "verified" } else { "DOES NOT VERIFY" }
                );
            }
            for ap in s["approvals"].as_array().into_iter().flatten() {
                println!(
                    "  approval #{} by {}: {} → {}{}",
                    ap["id"],
                    ap["approver"].as_str().unwrap_or("?"),
                    ap["from"].as_str().unwrap_or(""),
                    ap["to"].as_str().unwrap_or(""),
                    if ap["withdrawn_since"] == true {
                        " (issued before a withdrawal: no longer counts)"
                    } else if ap["expired"] == true {
                        " (expired)"
                    } else {
                        ""
                    }
                );
            }
            for ex in s["exceptions"].as_array().into_iter().flatten() {
                println!(
                    "  exception #{} on gate {} by {}: {}{}",
                    ex["id"],
                    ex["gate"].as_str().unwrap_or(""),
                    ex["admin"].as_str().unwrap_or(""),
                    ex["reason"].as_str().unwrap_or(""),
                    if ex["live"] == true {
                        " (live)"
                    } else if ex["withdrawn_since"] == true {
                        " (granted before a withdrawal: no longer applies)"
                    } else {
                        " (expired)"
                    }
                );
            }
        }
    }
    Ok(0)
}

fn failure(e: Error) -> Failure {
    Failure { code: e.exit_code(), message: e.to_string() }
}

/// `1.2 GiB in 0.61 s (2.0 GiB/s)`.
fn throughput(bytes: u64, secs: f64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    let size = if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else {
        format!("{bytes} bytes")
    };
    let rate = if secs > 0.0 && b >= MIB { format!(" ({:.0} MiB/s)", b / MIB / secs) } else { String::new() };
    format!("{size} in {secs:.2} s{rate}")
}
