//! Regression tests of issue #11 at the library level: the audit head outside sled, temporary files, gc.

use super::*;
use sha2::{Digest, Sha256};
use sovra_domain::datazone::Stage;

fn event(i: u32) -> AuditEvent {
    AuditEvent {
        kind: "approval".into(),
        subject: format!("m@{i}"),
        actor: "alice".into(),
        details: serde_json::json!({"n": i}),
    }
}

fn zone(stage: Stage) -> DataZone {
    DataZone::new("fr-par-secnum", stage).unwrap()
}

#[test]
fn a_rolled_back_log_is_refused_at_open_and_reported_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    for i in 0..4 {
        reg.audit(event(i)).unwrap();
    }
    let head = head::read(&dir.path().join(head::HEAD_FILE)).unwrap().unwrap();
    assert_eq!(head.count, 4);
    // Saved head of entry 3; then the database loses entries 2 and 3, together with its own head record, as a
    // rollback to an older state does.
    let saved = std::fs::read(dir.path().join(head::HEAD_FILE)).unwrap();
    for i in 2..4 {
        reg.raw_audit_tree().remove((i as u64).to_be_bytes()).unwrap();
    }
    let entry1: AuditEntry =
        serde_json::from_slice(&reg.raw_audit_tree().get(1u64.to_be_bytes()).unwrap().unwrap()).unwrap();
    reg.meta
        .insert(audit::HEAD_KEY, serde_json::to_vec(&AuditHead { count: 2, hash: entry1.hash.clone() }).unwrap())
        .unwrap();
    reg.db.flush().unwrap();
    let report = reg.verify_audit().unwrap();
    assert!(!report.ok(), "{report:?}");
    assert_eq!(report.entries, 2);
    assert_eq!(report.last_good.as_ref().map(|e| e.seq), Some(1), "{report:?}");
    assert!(report.problems.iter().any(|p| p.position == 2 && p.message.contains("rolled back")), "{report:?}");
    drop(reg);
    assert_eq!(std::fs::read(dir.path().join(head::HEAD_FILE)).unwrap(), saved, "the head file is left alone");
    let e = Registry::open(dir.path()).unwrap_err();
    assert!(e.is_damage() && e.to_string().contains("records 4 entries"), "{e}");
    // Inspection still opens it, and does not touch the head.
    let reg = Registry::open_opts(dir.path(), &OpenOptions { witness: None, inspect: true }).unwrap();
    assert!(!reg.verify_audit().unwrap().ok());
}

#[test]
fn a_head_file_one_commit_behind_is_accepted_and_brought_up_to_date() {
    // A crash between the database commit and the head file write.
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    reg.audit(event(0)).unwrap();
    let behind = std::fs::read(dir.path().join(head::HEAD_FILE)).unwrap();
    reg.audit(event(1)).unwrap();
    drop(reg);
    std::fs::write(dir.path().join(head::HEAD_FILE), behind).unwrap();
    let reg = Registry::open_opts(dir.path(), &OpenOptions { witness: None, inspect: true }).unwrap();
    let report = reg.verify_audit().unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(report.notes.iter().any(|n| n.contains("1 entry behind")), "{report:?}");
    drop(reg);
    let reg = Registry::open(dir.path()).unwrap();
    assert_eq!(head::read(&dir.path().join(head::HEAD_FILE)).unwrap().unwrap().count, 2, "rewritten at open");
    assert!(reg.verify_audit().unwrap().notes.is_empty());
}

#[test]
fn an_expected_head_must_be_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let first = reg.audit(event(0)).unwrap();
    let last = reg.audit(event(1)).unwrap();
    assert!(reg.verify_audit_expecting(Some(&last.hash)).unwrap().ok());
    let r = reg.verify_audit_expecting(Some(&format!("sha256:{}", first.hash))).unwrap();
    assert!(r.ok() && r.notes.iter().any(|n| n.contains("1 entries were appended")), "{r:?}");
    let r = reg.verify_audit_expecting(Some(&"ab".repeat(32))).unwrap();
    assert!(r.problems.iter().any(|p| p.message.contains("expected head")), "{r:?}");
}

#[test]
fn stale_temp_files_are_removed_at_open_and_reported_by_gc() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let file = dir.path().join("w.bin");
    std::fs::write(&file, b"weights").unwrap();
    let digest = hex(&Sha256::digest(b"weights"));
    reg.blobs().put_file(&zone(Stage::Training), &file, &digest).unwrap();
    drop(reg);
    // What a killed writer leaves: our temp name, object_store's staged upload, a head write's temp file.
    let blob = dir.path().join("blobs").join(BlobStore::location(&zone(Stage::Training), &digest).as_ref());
    let bdir = blob.parent().unwrap();
    let planted = [
        bdir.join(".sovra-tmp-4242-abcdef"),
        bdir.join(format!("{digest}#1")),
        dir.path().join(".sovra-tmp-4242-head"),
    ];
    for p in &planted {
        std::fs::write(p, vec![1u8; 1000]).unwrap();
    }
    let reg = Registry::open(dir.path()).unwrap();
    for p in &planted {
        assert!(!p.exists(), "{} was not removed", p.display());
    }
    assert!(blob.exists(), "the blob itself stays");
    let gc = reg.gc(false).unwrap();
    assert_eq!(gc.temp_files.len(), 3, "{gc:?}");
    assert_eq!(gc.temp_files.iter().map(|t| t.bytes).sum::<u64>(), 3000);
    // No version references the blob: it is an orphan, listed, deleted only on request.
    assert_eq!(gc.orphans.len(), 1, "{gc:?}");
    assert!(blob.exists());
    let gc = reg.gc(true).unwrap();
    assert!(gc.removed_orphans && gc.orphans.len() == 1);
    assert!(!blob.exists());
    assert!(reg.gc(false).unwrap().orphans.is_empty());
}

#[test]
fn blobs_referenced_by_a_version_are_not_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let file = dir.path().join("w.bin");
    std::fs::write(&file, b"weights").unwrap();
    let digest = hex(&Sha256::digest(b"weights"));
    reg.blobs().put_file(&zone(Stage::Training), &file, &digest).unwrap();
    let bundle = reg.blobs().put_bytes(&zone(Stage::Training), b"bundle").unwrap();
    // The same content copied to the registry zone, which no version is located in: an orphan there only.
    reg.blobs().copy(&zone(Stage::Training), &zone(Stage::Registry), &digest).unwrap();
    let v = VersionRecord {
        model: "m".into(),
        digest: "ab".repeat(32),
        residency_class: "eu-any".into(),
        files: vec![FileEntry { name: "w.bin".into(), digest: digest.clone(), size: 7 }],
        bundle,
        signer_hint: "00".into(),
        signer_key_pem: String::new(),
        provenance: serde_json::json!({}),
        metrics: serde_json::json!({}),
        pushed_at: 1,
        locations: vec![Location { data_zone: zone(Stage::Training), since: 1, promotion: None }],
        withdrawn: Vec::new(),
    };
    reg.commit(&[Registry::version_write(&v)], event(0)).unwrap();
    let gc = reg.gc(false).unwrap();
    assert_eq!(gc.orphans.len(), 1, "{gc:?}");
    assert_eq!(gc.orphans[0].data_zone, "fr-par-secnum/registry");
}
