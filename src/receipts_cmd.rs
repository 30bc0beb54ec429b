//! `sovra job receipts ID` (a job's signed placement receipts with their chain proof, docs/receipts.md), the
//! scheduler's side of `sovra audit verify | export --scheduler`, and the receipts `sovra model push
//! --training-job` attaches to a model's provenance.

use crate::remote::{Remote, authed, connect, status};
use crate::table::{cells, table};
use crate::{Failure, Output};
use serde_json::{Value, json};
use sovra_api::v1::admin_client::AdminClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{ReceiptsRequest, SchedulerAuditRequest};
use sovra_audit::{AuditEntry, AuditHead};
use std::path::{Path, PathBuf};

/// `sovra job ...`.
#[derive(clap::Subcommand)]
pub(crate) enum JobCommand {
    /// The job's signed placement receipts (one per replica placed, one per replica ended) with the proof that
    /// they are in the scheduler's audit log (docs/receipts.md). `-o json` prints the document an auditor or
    /// `sovra model push --receipts` takes.
    Receipts {
        /// Job id.
        id: u64,
        /// Also write the document to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Verify signatures, chain and signed head with this scheduler public key (DATA/receipt-key.pub.pem);
        /// exit 1 when they do not verify.
        #[arg(long, value_name = "FILE")]
        verify_key: Option<PathBuf>,
        #[command(flatten)]
        remote: crate::remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Break-glass for placement: propose, sign (N of M approvers) and grant a time-boxed exception that lets
    /// the job run in one zone failing one named requirement of its class (docs/receipts.md).
    Exception {
        #[command(subcommand)]
        command: crate::placement_exception_cmd::ExceptionCommand,
    },
}

fn fail(code: u8, message: String) -> Failure {
    Failure { code, message }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(3, format!("cannot start the client runtime: {e}")))
}

/// The scheduler named by SOVRA_SERVER, SOVRA_TOKEN and SOVRA_CA (for commands whose `--server` is the promotion
/// service's).
pub(crate) fn scheduler_from_env() -> Remote {
    Remote {
        server: std::env::var("SOVRA_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7070".into()),
        token: std::env::var("SOVRA_TOKEN").unwrap_or_default(),
        ca: std::env::var_os("SOVRA_CA").map(PathBuf::from),
    }
}

/// Job `id`'s receipts document, from the scheduler.
pub(crate) fn fetch(remote: &Remote, id: u64) -> Result<Value, Failure> {
    runtime()?.block_on(async {
        let mut jobs = JobsClient::new(connect(remote).await?);
        let r = jobs.receipts(authed(remote, ReceiptsRequest { id })?).await.map_err(status(remote))?.into_inner();
        serde_json::from_str(&r.json).map_err(|e| fail(1, format!("the scheduler's receipts are not JSON: {e}")))
    })
}

/// Checks `doc` against the scheduler public key in `key_file`, as the promotion service's gate does.
fn check(doc: &Value, key_file: &Path) -> Result<sovra_promotion::receipts::Verified, Failure> {
    let key = sovra_oms::keys::PublicKey::from_pem_file(key_file).map_err(|e| fail(2, format!("--verify-key: {e}")))?;
    let id = sovra_promotion::config::Identity { name: key_file.display().to_string(), hint: key.hint(), key };
    let parsed = sovra_promotion::receipts::parse(doc).map_err(|e| fail(1, e))?;
    sovra_promotion::receipts::verify(&parsed, &[id]).map_err(|e| fail(1, format!("the receipts do not verify: {e}")))
}

/// `sovra job receipts ID`.
pub(crate) fn job_receipts(
    remote: &Remote,
    id: u64,
    output: Output,
    out: Option<&Path>,
    verify_key: Option<&Path>,
) -> Result<u8, Failure> {
    let doc = fetch(remote, id)?;
    let verified = verify_key.map(|k| check(&doc, k)).transpose()?;
    if let Some(path) = out {
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|e| fail(1, format!("{}: cannot write: {e}", path.display())))?;
    }
    match output {
        Output::Json if out.is_none() => println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default()),
        Output::Json => println!("{}", json!({"written": out, "verified": verified})),
        Output::Text => {
            let mut t = table(&["log#", "event", "replica", "attempt", "node", "zone", "class", "outcome"], &[0]);
            for r in doc["receipts"].as_array().into_iter().flatten() {
                let p = statement(&r["envelope"])["predicate"].clone();
                let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                let class = format!(
                    "{} {}",
                    s(&p["residencyClass"]["name"]),
                    if p["satisfiesClass"] == true { "✓" } else { "✗" }
                );
                t.add_row(cells([
                    s(&r["seq"]),
                    s(&p["event"]),
                    s(&p["replica"]),
                    s(&p["attempt"]),
                    s(&p["node"]),
                    s(&p["zone"]["id"]),
                    class,
                    p["outcome"].as_str().unwrap_or("").to_string(),
                ]));
            }
            println!("{}", t.trim_fmt());
            let head = &doc["chain"]["head"];
            println!(
                "chain: {} log entries from the first receipt to the head ({} entries, {}); head signed by key {}",
                doc["chain"]["entries"].as_array().map_or(0, Vec::len),
                head["count"],
                head["hash"].as_str().unwrap_or_default(),
                doc["key"]["hint"].as_str().unwrap_or_default()
            );
            match &verified {
                Some(v) => println!(
                    "verified with {}: signatures, chain and checkpoint; zones {}; {}",
                    verify_key.map(|k| k.display().to_string()).unwrap_or_default(),
                    v.zones.iter().cloned().collect::<Vec<_>>().join(", "),
                    if v.succeeded { "the last attempt succeeded" } else { "no attempt succeeded yet" }
                ),
                None => println!("not verified here: pass --verify-key FILE (the scheduler's receipt-key.pub.pem)"),
            }
        }
    }
    Ok(0)
}

/// The statement inside an envelope (unverified: for display).
fn statement(env: &Value) -> Value {
    use base64::Engine as _;
    let payload = env["payload"].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// The scheduler's whole audit log: the head it reported and the entries as stored.
fn export_log(remote: &Remote) -> Result<(AuditHead, Vec<String>), Failure> {
    runtime()?.block_on(async {
        let mut admin = AdminClient::new(connect(remote).await?);
        let mut stream = admin
            .audit_export(authed(remote, SchedulerAuditRequest { from: 0 })?)
            .await
            .map_err(status(remote))?
            .into_inner();
        let bad = |e: String| fail(1, format!("the scheduler's audit export: {e}"));
        let first = stream.message().await.map_err(status(remote))?.ok_or_else(|| bad("empty".into()))?;
        let first: Value = serde_json::from_str(&first.json).map_err(|e| bad(e.to_string()))?;
        let head: AuditHead = serde_json::from_value(first["head"].clone()).map_err(|e| bad(e.to_string()))?;
        let mut lines = Vec::new();
        while let Some(line) = stream.message().await.map_err(status(remote))? {
            lines.push(line.json);
        }
        Ok((head, lines))
    })
}

/// `sovra audit verify --scheduler`.
pub(crate) fn verify_log(expect_head: Option<&str>, output: Output) -> Result<u8, Failure> {
    let remote = scheduler_from_env();
    let (head, lines) = export_log(&remote)?;
    let raw = lines.iter().enumerate().map(|(i, l)| ((i as u64).to_be_bytes().to_vec(), l.as_bytes().to_vec()));
    let mut report = sovra_audit::verify(raw, head.clone());
    if let Some(h) = expect_head {
        let found = lines.iter().filter_map(|l| serde_json::from_str::<AuditEntry>(l).ok()).any(|e| e.hash == h);
        if !found {
            report.problems.push(sovra_audit::AuditProblem {
                position: head.count,
                message: format!("the expected head {h} is not an entry of the scheduler's log"),
            });
        } else if head.hash != h {
            report.notes.push(format!("entries were appended after the expected head {h}"));
        }
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
        Output::Text if report.ok() => {
            println!("Scheduler audit log OK: {} entries, head {} ({})", report.entries, head.hash, remote.server)
        }
        Output::Text => {
            println!("Scheduler audit log BROKEN ({}):", remote.server);
            for p in &report.problems {
                println!("  entry {}: {}", p.position, p.message);
            }
        }
    }
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    if report.ok() {
        Ok(0)
    } else {
        Err(fail(1, format!("the scheduler's audit log is broken ({} problem(s))", report.problems.len())))
    }
}

/// `sovra audit export --scheduler`: the entries as JSON lines (tests/audit_verify.py reads them).
pub(crate) fn export(out: Option<&Path>) -> Result<u8, Failure> {
    let (head, lines) = export_log(&scheduler_from_env())?;
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    match out {
        Some(p) => std::fs::write(p, text).map_err(|e| fail(1, format!("{}: cannot write: {e}", p.display())))?,
        None => print!("{text}"),
    }
    eprintln!("audit head: {} {}", head.count, head.hash);
    Ok(0)
}

/// The provenance file `sovra model push` sends: `provenance` (if any) with the receipts document under
/// `receipts` and the job under `training_job`; written to a temporary file the caller keeps until the push ends.
pub(crate) fn provenance_with_receipts(
    provenance: Option<&Path>,
    receipts: Value,
) -> Result<tempfile::NamedTempFile, Failure> {
    let mut doc = match provenance {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| fail(2, format!("{}: cannot read the provenance file: {e}", p.display())))?;
            serde_yaml_ng::from_str::<Value>(&text)
                .map_err(|e| fail(2, format!("{}: the provenance file is not valid YAML/JSON: {e}", p.display())))?
        }
        None => json!({}),
    };
    let Some(obj) = doc.as_object_mut() else {
        return Err(fail(2, "the provenance file must be a mapping of fields".into()));
    };
    sovra_promotion::receipts::parse(&receipts).map_err(|e| fail(2, e))?;
    obj.insert("training_job".into(), receipts["job"].clone());
    obj.remove("training_zone"); // the receipts say where it ran
    obj.insert("receipts".into(), receipts);
    let mut f = tempfile::NamedTempFile::new().map_err(|e| fail(1, format!("a temporary file: {e}")))?;
    std::io::Write::write_all(&mut f, doc.to_string().as_bytes()).map_err(|e| fail(1, e.to_string()))?;
    Ok(f)
}

/// `sovra model push --training-job ID | --receipts FILE`: the provenance file to send (see
/// [`provenance_with_receipts`]), or `None` when neither is given.
pub(crate) fn attach(
    training_job: Option<u64>,
    receipts: Option<&Path>,
    provenance: Option<&Path>,
) -> Result<Option<tempfile::NamedTempFile>, Failure> {
    let doc = match (training_job, receipts) {
        (Some(id), _) => fetch(&scheduler_from_env(), id)?,
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| fail(2, format!("--receipts {}: cannot read: {e}", f.display())))?;
            serde_json::from_str(&text).map_err(|e| fail(2, format!("--receipts {}: not JSON: {e}", f.display())))?
        }
        (None, None) => return Ok(None),
    };
    provenance_with_receipts(provenance, doc).map(Some)
}
