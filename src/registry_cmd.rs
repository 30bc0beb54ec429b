//! `sovra audit verify | log | export | reset-head` and `sovra registry gc`: the registry's own health (docs/registry.md).
//!
//! Exit codes: 0 intact / done; 1 the audit chain is broken or the registry is damaged (the last good entry is
//! named); 2 bad input (no registry there, a malformed `--expect-head`).

use crate::promote_cmd::{fail, from_registry, open_existing, print_json, short, utc};
use crate::table::{cells, table};
use crate::{Failure, Output};
use serde_json::{Value, json};
use sovra_registry::{AuditReport, OpenOptions, Registry};
use std::path::PathBuf;

/// The registry directory and the witness, for the audit and registry subcommands.
#[derive(clap::Args, Clone)]
pub(crate) struct At {
    /// Registry directory.
    #[arg(long, env = "SOVRA_REGISTRY", hide_env_values = true, default_value = "sovra-registry")]
    registry: PathBuf,
    /// The witness file that also keeps the audit head (as given to the commands that write).
    #[arg(long, env = "SOVRA_AUDIT_WITNESS", hide_env_values = true, value_name = "FILE")]
    audit_witness: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    /// The promotion service to ask instead (`audit verify | log` with `--server`).
    #[command(flatten)]
    service: crate::promotion_client::ServerArgs,
}

impl At {
    fn options(&self, inspect: bool) -> OpenOptions {
        OpenOptions { witness: self.audit_witness.clone(), inspect }
    }
}

/// `sovra audit ...`.
#[derive(clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the audit log: its hash chain (edited, deleted, reordered entries) and the audit head kept outside
    /// the database (REGISTRY/audit.head and the witness), which catches a rolled-back or truncated meta.sled.
    /// Exit 1 when broken, naming the last good entry.
    Verify {
        /// Also require the log to contain this entry hash (a head a pipeline recorded earlier): it must be the
        /// head, or entries were appended after it.
        #[arg(long, value_name = "HASH", value_parser = parse_hash)]
        expect_head: Option<String>,
        /// Check the scheduler's log (placement receipts) instead, read over its API: SOVRA_SERVER, SOVRA_TOKEN,
        /// SOVRA_CA name the scheduler.
        #[arg(long)]
        scheduler: bool,
        #[command(flatten)]
        at: At,
    },
    /// Print the audit log (a warning first when the registry is damaged).
    Log {
        #[command(flatten)]
        at: At,
    },
    /// Write the audit log as JSON lines, each entry exactly as stored, for checking without sovra
    /// (tests/audit_verify.py; the format is in docs/audit-log.md). Prints `audit head: COUNT HASH` to stderr.
    Export {
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Export the scheduler's log (placement receipts) instead (SOVRA_SERVER, SOVRA_TOKEN, SOVRA_CA).
        #[arg(long)]
        scheduler: bool,
        #[command(flatten)]
        at: At,
    },
    /// Accept the current log as the audit head: for a registry that predates head files, or one restored from a
    /// backup on purpose. Refused unless the chain itself verifies; appends a `head_reset` entry recording the
    /// heads it replaced.
    ResetHead {
        /// Who does it (recorded in the entry).
        #[arg(long, env = "USER", hide_env_values = true, default_value = "operator")]
        actor: String,
        #[command(flatten)]
        at: At,
    },
}

/// `sovra registry ...`.
#[derive(clap::Subcommand)]
pub(crate) enum RegistryCommand {
    /// What killed or failed writers left: temporary files (removed at every open, listed here) and orphan blobs
    /// (referenced by no version in their data zone; listed, deleted only with --remove-orphans).
    Gc {
        /// Delete the orphan blobs listed.
        #[arg(long)]
        remove_orphans: bool,
        #[command(flatten)]
        at: At,
    },
    /// Re-wrap every data key of a zone (all its stages) under a new key-encryption key; the blobs are not
    /// rewritten. FILE holds 32 random bytes (raw or hex, mode 0600). Afterwards name FILE as the zone's key in
    /// `stores:` (a zone on its default key gets REGISTRY/keys/ZONE.kek replaced). Run again to finish an
    /// interrupted rotation.
    RotateKey {
        /// The zone (as in the promotion config).
        #[arg(long)]
        zone: String,
        /// The new key file.
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
        #[command(flatten)]
        at: At,
    },
}

fn parse_hash(s: &str) -> Result<String, String> {
    let h = s.trim().trim_start_matches("sha256:").to_ascii_lowercase();
    if sovra_registry::blob::is_sha256_hex(&h) {
        Ok(h)
    } else {
        Err(format!("`{s}` is not an audit entry hash (64 hex characters, as `sovra audit verify` prints the head)"))
    }
}

fn entry_line(e: &sovra_registry::AuditEntry) -> String {
    format!("#{} {} {} at {}, hash {}", e.seq, e.event.kind, e.event.subject, utc(e.time), e.hash)
}

/// `sovra audit ...`.
pub(crate) fn audit(c: AuditCommand) -> Result<u8, Failure> {
    match c {
        AuditCommand::Verify { expect_head, scheduler: true, at } => {
            crate::receipts_cmd::verify_log(expect_head.as_deref(), at.output)
        }
        AuditCommand::Export { out, scheduler: true, .. } => crate::receipts_cmd::export(out.as_deref()),
        AuditCommand::Verify { expect_head, at, .. } => {
            if let Some(remote) = at.service.connect()? {
                return remote_verify(&remote, expect_head.as_deref(), at.output);
            }
            let reg = match open_existing(&at.registry, &at.options(true)) {
                Ok(r) => r,
                Err(mut f) if f.code == 1 => {
                    let head = sovra_registry::head::read(&at.registry.join(sovra_registry::head::HEAD_FILE));
                    if let Ok(Some(h)) = head {
                        f.message.push_str(&format!(
                            "; the last entry recorded in {} is #{} ({})",
                            sovra_registry::head::HEAD_FILE,
                            h.count.saturating_sub(1),
                            h.hash
                        ));
                    }
                    println!("Audit log BROKEN: {}", f.message);
                    return Err(f);
                }
                Err(f) => return Err(f),
            };
            let report = reg.verify_audit_expecting(expect_head.as_deref()).map_err(from_registry)?;
            print_report(&report, &reg, at.output);
            if report.ok() {
                return Ok(0);
            }
            let last = match &report.last_good {
                Some(e) => format!("the last good entry is #{} ({})", e.seq, short(&e.hash)),
                None => "no entry is good".into(),
            };
            Err(fail(1, format!("the audit log is broken ({} problem(s)); {last}", report.problems.len())))
        }
        AuditCommand::Log { at } => {
            if let Some(remote) = at.service.connect()? {
                let entries = remote.audit_export()?;
                match at.output {
                    Output::Json => print_json(&Value::Array(entries)),
                    Output::Text => {
                        let mut t = table(&["seq", "time", "event", "subject", "by"], &[0]);
                        for e in &entries {
                            let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                            t.add_row(cells([
                                s(&e["seq"]),
                                e["time"].as_u64().map(utc).unwrap_or_default(),
                                s(&e["kind"]),
                                s(&e["subject"]),
                                s(&e["actor"]),
                            ]));
                        }
                        println!("{}", t.trim_fmt());
                    }
                }
                return Ok(0);
            }
            let reg = open_to_read(&at)?;
            let entries = reg.audit_entries().map_err(from_registry)?;
            match at.output {
                Output::Json => print_json(&serde_json::to_value(&entries).unwrap_or(Value::Null)),
                Output::Text => {
                    let mut t = table(&["seq", "time", "event", "subject", "by"], &[0]);
                    for e in &entries {
                        t.add_row(cells([
                            e.seq.to_string(),
                            utc(e.time),
                            e.event.kind.to_string(),
                            e.event.subject.to_string(),
                            e.event.actor.to_string(),
                        ]));
                    }
                    println!("{}", t.trim_fmt());
                }
            }
            Ok(0)
        }
        AuditCommand::Export { out, at, .. } => export(out.as_deref(), &at),
        AuditCommand::ResetHead { actor, at } => {
            let reg = open_existing(&at.registry, &at.options(true))?;
            let (old, entry) = reg.reset_head(&actor).map_err(from_registry)?;
            match at.output {
                Output::Json => print_json(&json!({"status": "reset", "entry": entry,
                    "replaced": old.iter().map(|(a, h)| json!({"anchor": a.label, "path": a.path, "head": h}))
                        .collect::<Vec<_>>()})),
                Output::Text => {
                    for (a, h) in &old {
                        let was = h.as_ref().map(|h| format!("{} entries, {}", h.count, h.hash));
                        println!("{} {}: was {}", a.label, a.path.display(), was.unwrap_or_else(|| "missing".into()));
                    }
                    println!(
                        "Audit head reset: {} entries, head {} (entry {})",
                        entry.seq + 1,
                        entry.hash,
                        entry_line(&entry)
                    );
                }
            }
            Ok(0)
        }
    }
}

/// `sovra audit export`: the stored entries, one per line; the head of what was written on stderr.
/// Opens the registry to read its log: a damaged one (exit 1 when opened normally) is opened for inspection with
/// a warning, so that what it holds can still be read.
fn open_to_read(at: &At) -> Result<sovra_registry::Registry, Failure> {
    match open_existing(&at.registry, &at.options(false)) {
        Ok(r) => Ok(r),
        Err(f) if f.code == 1 => {
            eprintln!("warning: {}", f.message);
            open_existing(&at.registry, &at.options(true))
        }
        Err(f) => Err(f),
    }
}

fn export(out: Option<&std::path::Path>, at: &At) -> Result<u8, Failure> {
    if at.service.server.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(fail(
            2,
            "--server: `sovra audit export` reads the registry directory itself (the entries exactly as stored); run \
             it where the registry is, with --registry",
        ));
    }
    let reg = open_to_read(at)?;
    let lines = reg.audit_raw().map_err(from_registry)?;
    let mut text = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in &lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    match out {
        Some(path) => std::fs::write(path, &text)
            .map_err(|e| fail(2, format!("--out {}: cannot write the export: {e}", path.display())))?,
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&text).map_err(|e| fail(2, format!("stdout: cannot write the export: {e}")))?
        }
    }
    let last = lines.last().and_then(|l| serde_json::from_slice::<sovra_registry::AuditEntry>(l).ok());
    let hash = last.map(|e| e.hash).unwrap_or_else(|| sovra_registry::audit::GENESIS.to_string());
    eprintln!("audit head: {} {hash}", lines.len());
    Ok(0)
}

/// `sovra audit verify --server`: the service's report, printed as the local one is.
fn remote_verify(
    remote: &crate::promotion_client::Remote,
    expect_head: Option<&str>,
    output: Output,
) -> Result<u8, Failure> {
    let d = remote.audit_verify(expect_head)?;
    let ok = d["status"] == "intact";
    match output {
        Output::Json => print_json(&d),
        Output::Text => {
            if ok {
                println!(
                    "Audit log intact: {} entries, head {}",
                    d["entries"],
                    d["head"]["hash"].as_str().unwrap_or("")
                );
                let anchors: Vec<&str> =
                    d["anchors"].as_array().into_iter().flatten().filter_map(|a| a["path"].as_str()).collect();
                println!("  matches the audit head in {} (on the promotion service)", anchors.join(" and "));
            } else {
                println!("Audit log BROKEN ({} entries read):", d["entries"]);
                for p in d["problems"].as_array().into_iter().flatten() {
                    println!("  at {}: {}", p["position"], p["message"].as_str().unwrap_or(""));
                }
            }
            for n in d["notes"].as_array().into_iter().flatten() {
                println!("  note: {}", n.as_str().unwrap_or(""));
            }
        }
    }
    if ok {
        return Ok(0);
    }
    let last = match d["last_good"].as_object() {
        Some(e) => format!("the last good entry is #{} ({})", e["seq"], short(e["hash"].as_str().unwrap_or(""))),
        None => "no entry is good".into(),
    };
    let n = d["problems"].as_array().map_or(0, Vec::len);
    Err(fail(1, format!("the audit log is broken ({n} problem(s)); {last}")))
}

fn print_report(report: &AuditReport, reg: &Registry, output: Output) {
    let anchors: Vec<Value> = reg.anchors().iter().map(|a| json!({"anchor": a.label, "path": a.path})).collect();
    match output {
        Output::Json => print_json(&json!({"status": if report.ok() { "intact" } else { "broken" },
            "entries": report.entries, "head": report.head, "problems": report.problems, "notes": report.notes,
            "last_good": report.last_good, "anchors": anchors})),
        Output::Text => {
            if report.ok() {
                println!("Audit log intact: {} entries, head {}", report.entries, report.head.hash);
                let where_: Vec<String> = reg.anchors().iter().map(|a| a.path.display().to_string()).collect();
                println!("  matches the audit head in {}", where_.join(" and "));
            } else {
                println!("Audit log BROKEN ({} entries read):", report.entries);
                for p in &report.problems {
                    println!("  at {}: {}", p.position, p.message);
                }
                match &report.last_good {
                    Some(e) => println!("  last good entry: {}", entry_line(e)),
                    None => println!("  last good entry: none (the first entry is already wrong or missing)"),
                }
            }
            for n in &report.notes {
                println!("  note: {n}");
            }
        }
    }
}

/// `sovra registry ...`.
pub(crate) fn run(c: RegistryCommand) -> Result<u8, Failure> {
    let (remove_orphans, at) = match c {
        RegistryCommand::Gc { remove_orphans, at } => (remove_orphans, at),
        RegistryCommand::RotateKey { zone, new_key, at } => return rotate_key(&zone, &new_key, &at),
    };
    let reg = open_existing(&at.registry, &at.options(false))?;
    let report = reg.gc(remove_orphans).map_err(from_registry)?;
    match at.output {
        Output::Json => print_json(&serde_json::to_value(&report).unwrap_or(Value::Null)),
        Output::Text => {
            let temp_bytes: u64 = report.temp_files.iter().map(|t| t.bytes).sum();
            if report.temp_files.is_empty() {
                println!("No temporary files left by killed writers.");
            } else {
                println!(
                    "Removed {} temporary file(s) left by a killed writer ({temp_bytes} bytes):",
                    report.temp_files.len()
                );
                for t in &report.temp_files {
                    println!("  {} ({} bytes)", t.path.display(), t.bytes);
                }
            }
            let orphan_bytes: u64 = report.orphans.iter().map(|o| o.bytes).sum();
            if report.orphans.is_empty() {
                println!("No orphan blobs.");
            } else {
                println!(
                    "{} {} orphan blob(s) ({orphan_bytes} bytes), referenced by no version in their data zone:",
                    if report.removed_orphans { "Removed" } else { "Found" },
                    report.orphans.len()
                );
                for o in &report.orphans {
                    println!("  {} sha256:{} ({} bytes)", o.data_zone, o.digest, o.bytes);
                }
                if !report.removed_orphans {
                    println!("Run `sovra registry gc --remove-orphans` to delete them.");
                }
            }
            for u in &report.unknown {
                println!("  not a blob (left alone): {u}");
            }
        }
    }
    Ok(0)
}

/// `sovra registry rotate-key`.
fn rotate_key(zone: &str, new_key: &std::path::Path, at: &At) -> Result<u8, Failure> {
    let reg = open_existing(&at.registry, &at.options(false))?;
    let key = sovra_registry::FileKey::load(new_key).map_err(from_registry)?;
    let r = reg.blobs().rotate_key(zone, std::sync::Arc::new(key), Some(new_key)).map_err(from_registry)?;
    match at.output {
        Output::Json => print_json(&serde_json::to_value(&r).unwrap_or(Value::Null)),
        Output::Text => {
            println!(
                "Zone {zone}: {} data key(s) re-wrapped under key {} ({} already were); no blob was rewritten.",
                r.rewrapped, r.new_key, r.already
            );
            println!(
                "Name {} as the key of zone {zone} in `stores:` if the zone's entry names a key.",
                new_key.display()
            );
        }
    }
    Ok(0)
}
