//! `scripts/auditor-flow.sh` end to end with this build's `sovra`: a training job runs under `sovra dev`, its
//! receipts become the model's provenance, the model is promoted twice and served only where it was promoted, and
//! the exported evidence is verified offline by tests/evidence_verify.py and tests/audit_verify.py.

use std::process::Command;

#[test]
fn the_auditors_flow_verifies_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("bash")
        .arg(repo.join("scripts/auditor-flow.sh"))
        .arg(dir.path().join("work"))
        .env("SOVRA", env!("CARGO_BIN_EXE_sovra"))
        .env_remove("SOVRA_SERVER")
        .env_remove("SOVRA_TOKEN")
        .env_remove("SOVRA_CA")
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("== all evidence verified"), "{out}");
    assert!(out.contains("trained by job 1: replica 0 on fr-par-h100"), "{out}");
    let check = std::fs::read_to_string(dir.path().join("work/evidence/model-check.json")).unwrap();
    assert!(check.contains("\"promotion_statements\": 2"), "{check}");
}
