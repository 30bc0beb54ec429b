//! `sovra job exception propose | sign | grant`: break-glass for placement (docs/receipts.md). One approver (or
//! an operator) proposes the exception — one job, one zone, the one requirement of its class waived there, a
//! reason, a window — as an unsigned DSSE envelope; each approver adds a signature with `sign` (every approver
//! signs the same bytes); `grant` hands the envelope to the scheduler, which counts the configured approvers.

use crate::remote::{Remote, authed, connect, print_job, status, to_json};
use crate::{Failure, Output};
use serde_json::json;
use sovra_api::v1::GrantExceptionRequest;
use sovra_api::v1::admin_client::AdminClient;
use sovra_oms::dsse::Envelope;
use sovra_scheduler::service::exceptions::{EXCEPTION_TYPE, EXCEPTION_V1};
use std::path::{Path, PathBuf};

/// `sovra job exception ...`.
#[derive(clap::Subcommand)]
pub(crate) enum ExceptionCommand {
    /// Write an unsigned placement exception for job ID: it may run in --zone, which fails its class only in
    /// --waive, for --for from now. Approvers then `sign` the file and someone `grant`s it.
    Propose {
        /// Job id.
        id: u64,
        /// The zone the job may run in.
        #[arg(long)]
        zone: String,
        /// The one requirement of the job's class waived in that zone: `certification:NAME`, `country`,
        /// `jurisdiction`, `operator_hq` or `zone` (as `sovra job ID --explain` names what the zone fails).
        #[arg(long, value_name = "REQUIREMENT")]
        waive: String,
        /// Why (every receipt of the job carries it).
        #[arg(long)]
        reason: String,
        /// How long: e.g. `90m`, `8h`, `2d` (at most the scheduler's `max_hours`).
        #[arg(long = "for", value_name = "DURATION", value_parser = sovra_scheduler::service::parse_retention)]
        duration: std::time::Duration,
        /// Where to write the envelope.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Add your signature to a proposed exception (in place). Signing twice with one key replaces the signature.
    Sign {
        /// The envelope file.
        file: PathBuf,
        /// Your approver private key (P-256 PEM), as the scheduler's `--break-glass` file names its public half.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Hand a signed exception to the scheduler: granted when N of its M approvers signed and every check passes.
    Grant {
        /// The envelope file.
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

fn fail(code: u8, message: String) -> Failure {
    Failure { code, message }
}

fn read(file: &Path) -> Result<Envelope, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| fail(2, format!("{}: {e}", file.display())))?;
    serde_json::from_str(&text).map_err(|e| fail(2, format!("{}: not a DSSE envelope: {e}", file.display())))
}

fn write(file: &Path, env: &Envelope) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(env).unwrap_or_default() + "\n";
    std::fs::write(file, text).map_err(|e| fail(1, format!("{}: cannot write: {e}", file.display())))
}

/// Runs one `sovra job exception` command.
pub(crate) fn run(cmd: ExceptionCommand) -> Result<u8, Failure> {
    match cmd {
        ExceptionCommand::Propose { id, zone, waive, reason, duration, out } => {
            if reason.trim().is_empty() {
                return Err(fail(2, "--reason is empty; an exception states why".into()));
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let payload = json!({"_type": EXCEPTION_V1, "job": id, "zone": zone, "requirement": waive,
                                 "reason": reason, "notBefore": now, "expiresAt": now + duration.as_secs()});
            let env = sovra_oms::multisig::unsigned(EXCEPTION_TYPE, payload.to_string().as_bytes());
            write(&out, &env)?;
            println!("{}: exception for job {id} in zone {zone} (waives {waive}), unsigned", out.display());
            Ok(0)
        }
        ExceptionCommand::Sign { file, key } => {
            let mut env = read(&file)?;
            if env.payload_type != EXCEPTION_TYPE {
                return Err(fail(
                    2,
                    format!("{}: payloadType is {:?}, not a placement exception", file.display(), env.payload_type),
                ));
            }
            let k = sovra_oms::keys::SigningKey::from_pem_file(&key).map_err(|e| fail(2, format!("--key: {e}")))?;
            sovra_oms::multisig::add_signature(&mut env, &k).map_err(|e| fail(1, e.to_string()))?;
            write(&file, &env)?;
            println!(
                "{}: signed by key {} ({} signature(s))",
                file.display(),
                k.public_key().hint(),
                env.signatures.len()
            );
            Ok(0)
        }
        ExceptionCommand::Grant { file, remote, output } => {
            let env = read(&file)?;
            let envelope_json = serde_json::to_string(&env).unwrap_or_default();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| fail(3, format!("cannot start the client runtime: {e}")))?;
            let job = rt.block_on(async {
                let mut admin = AdminClient::new(connect(&remote).await?);
                let req = authed(&remote, GrantExceptionRequest { envelope_json })?;
                admin.grant_exception(req).await.map_err(status(&remote)).map(|r| r.into_inner())
            })?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&to_json(&job)).unwrap_or_default()),
                Output::Text => print_job(&job, false),
            }
            Ok(0)
        }
    }
}
