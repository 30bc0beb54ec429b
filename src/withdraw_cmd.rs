//! `sovra model withdraw NAME@DIGEST --zone Z --reason "…" --key admin.pem`: takes a version out of one data zone.
//! Signed here with an admin's key, recorded by the promotion service (`--server`) or the local registry; see
//! promotion/src/withdraw.rs for what it changes. Exit codes: 0 withdrawn, 1 refused (not an admin, a signature
//! that does not verify), 2 bad input (the version is not in that zone, no reason, a key that cannot be read).
//! Also `sovra model check NAME`: re-verifies a stored version in every data zone it is in (the `Verify` RPC).

use crate::promote_cmd::StageArg;
use crate::promote_cmd::{Where, backend, fail, from_promote, print_json, short, split_ref};
use crate::{Failure, Output};
use serde_json::json;
use sovra_domain::datazone::Stage;
use std::path::PathBuf;

/// `sovra model withdraw`.
#[derive(clap::Args)]
pub(crate) struct WithdrawArgs {
    /// NAME@DIGEST-PREFIX (or NAME: the `latest` alias).
    model: String,
    /// The zone to withdraw it from.
    #[arg(long)]
    zone: String,
    /// The stage of that zone's data zone; needed only when the version is in more than one stage there.
    #[arg(long, value_enum)]
    stage: Option<StageArg>,
    /// Why (audited, and shown by `sovra model status` and to every refused pull).
    #[arg(long)]
    reason: String,
    /// An admin's PEM private key (a key listed under `admins` of the promotion config).
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    at: Where,
}

/// Runs `sovra model withdraw`.
pub(crate) fn withdraw(a: WithdrawArgs) -> Result<u8, Failure> {
    if a.reason.trim().is_empty() {
        return Err(fail(2, "--reason: give the reason for the withdrawal (it is audited and shown by status)"));
    }
    let p = backend(&a.at)?;
    let (name, r) = split_ref(&a.model);
    let rec = p.withdraw(name, r, &a.zone, a.stage.map(Stage::from), &a.reason, &a.key).map_err(from_promote)?;
    let dz = format!("{}/{}", rec.fields["zone"].as_str().unwrap_or(""), rec.fields["stage"].as_str().unwrap_or(""));
    match a.at.output {
        Output::Json => print_json(&json!({"status": "withdrawn", "record": rec.id, "model": rec.model,
            "digest": rec.digest, "data_zone": dz, "admin": rec.fields["admin"], "reason": a.reason})),
        Output::Text => {
            println!(
                "Withdrawn {}@{} from {dz} by {} (record #{}): {}",
                rec.model,
                short(&rec.digest),
                rec.fields["admin"].as_str().unwrap_or(""),
                rec.id,
                a.reason
            );
            println!("  pulls from {dz} are refused; promoting it there again needs fresh approvals");
        }
    }
    Ok(0)
}

/// `sovra model check`.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// NAME or NAME@DIGEST-PREFIX.
    model: String,
    #[command(flatten)]
    at: Where,
}

/// Runs `sovra model check`: exit 0 when the version verifies in every data zone it is in, 1 otherwise.
pub(crate) fn check(a: CheckArgs) -> Result<u8, Failure> {
    let p = backend(&a.at)?;
    let (name, r) = split_ref(&a.model);
    let d = p.check(name, r).map_err(from_promote)?;
    let ok = d["verified"] == true;
    match a.at.output {
        Output::Json => print_json(&d),
        Output::Text => {
            let model = d["model"].as_str().unwrap_or("");
            let digest = short(d["digest"].as_str().unwrap_or(""));
            println!("{model}@{digest}: {}", if ok { "verified in every data zone" } else { "FAILED" });
            for z in d["data_zones"].as_array().into_iter().flatten() {
                let dz = z["data_zone"].as_str().unwrap_or("?");
                match z["error"].as_str() {
                    None => println!("  {dz}: signature, manifest and every blob verify"),
                    Some(e) => println!("  {dz}: {e}"),
                }
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}
