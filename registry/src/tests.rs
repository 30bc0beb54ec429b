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

fn registry_with_log(n: u32) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    for i in 0..n {
        reg.audit(event(i)).unwrap();
    }
    (dir, reg)
}

#[test]
fn intact_chain_verifies_and_survives_reopen() {
    let (dir, reg) = registry_with_log(5);
    let report = reg.verify_audit().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 5);
    drop(reg);
    let reg = Registry::open(dir.path()).unwrap();
    reg.audit(event(5)).unwrap();
    let report = reg.verify_audit().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 6);
}

#[test]
fn audit_verify_detects_an_edited_entry() {
    let (_dir, reg) = registry_with_log(5);
    let tree = reg.raw_audit_tree();
    let key = 2u64.to_be_bytes();
    let mut e: AuditEntry = serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
    e.event.actor = "mallory".into();
    tree.insert(key, serde_json::to_vec(&e).unwrap()).unwrap();
    let report = reg.verify_audit().unwrap();
    assert!(!report.ok());
    assert!(report.problems.iter().any(|p| p.position == 2 && p.message.contains("edited")), "{report:?}");
}

#[test]
fn audit_verify_detects_an_edited_entry_with_its_hash_recomputed() {
    let (_dir, reg) = registry_with_log(5);
    let tree = reg.raw_audit_tree();
    let key = 1u64.to_be_bytes();
    let mut e: AuditEntry = serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
    e.event.details = serde_json::json!({"n": 99});
    e.hash = e.compute_hash();
    tree.insert(key, serde_json::to_vec(&e).unwrap()).unwrap();
    let report = reg.verify_audit().unwrap();
    assert!(report.problems.iter().any(|p| p.position == 2 && p.message.contains("link broken")), "{report:?}");
}

#[test]
fn audit_verify_detects_a_deleted_entry() {
    let (_dir, reg) = registry_with_log(5);
    reg.raw_audit_tree().remove(3u64.to_be_bytes()).unwrap();
    let report = reg.verify_audit().unwrap();
    assert!(!report.ok());
    assert!(report.problems.iter().any(|p| p.position == 4 && p.message.contains("deleted")), "{report:?}");
}

#[test]
fn audit_verify_detects_a_deleted_last_entry() {
    let (_dir, reg) = registry_with_log(5);
    reg.raw_audit_tree().remove(4u64.to_be_bytes()).unwrap();
    let report = reg.verify_audit().unwrap();
    assert!(report.problems.iter().any(|p| p.message.contains("head records 5")), "{report:?}");
}

#[test]
fn audit_verify_detects_reordered_entries() {
    let (_dir, reg) = registry_with_log(5);
    let tree = reg.raw_audit_tree();
    let (a, b) = (tree.get(1u64.to_be_bytes()).unwrap().unwrap(), tree.get(2u64.to_be_bytes()).unwrap().unwrap());
    tree.insert(1u64.to_be_bytes(), b).unwrap();
    tree.insert(2u64.to_be_bytes(), a).unwrap();
    let report = reg.verify_audit().unwrap();
    assert!(!report.ok());
    assert!(report.problems.iter().any(|p| p.message.contains("reordered")), "{report:?}");
}

fn zone(stage: Stage) -> DataZone {
    DataZone::new("fr-par-secnum", stage).unwrap()
}

#[test]
fn blobs_are_content_addressed_copied_and_reverified() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let file = dir.path().join("w.bin");
    std::fs::write(&file, b"weights").unwrap();
    let digest = hex(&Sha256::digest(b"weights"));
    assert_eq!(reg.blobs().put_file(&zone(Stage::Training), &file, &digest).unwrap(), 7);
    assert!(reg.blobs().exists(&zone(Stage::Training), &digest).unwrap());
    assert!(!reg.blobs().exists(&zone(Stage::Registry), &digest).unwrap());
    reg.blobs().copy(&zone(Stage::Training), &zone(Stage::Registry), &digest).unwrap();
    reg.blobs().verify(&zone(Stage::Registry), &digest).unwrap();
    let out = dir.path().join("out/w.bin");
    reg.blobs().get_to_file(&zone(Stage::Registry), &digest, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"weights");
    // A corrupted copy is caught by re-verification.
    let stored = dir.path().join("blobs").join(BlobStore::location(&zone(Stage::Registry), &digest).as_ref());
    std::fs::write(&stored, b"evil").unwrap();
    // (Stored encrypted: the changed ciphertext fails authentication.)
    assert!(matches!(reg.blobs().verify(&zone(Stage::Registry), &digest), Err(Error::Tampered { .. })));
    // The copies are independent: the training copy is untouched.
    reg.blobs().verify(&zone(Stage::Training), &digest).unwrap();
    // A corrupt source is not copied.
    let other = DataZone::new("de-fra-c5", Stage::Registry).unwrap();
    let e = reg.blobs().copy(&zone(Stage::Registry), &other, &digest).unwrap_err();
    assert!(matches!(e, Error::Tampered { .. }), "{e}");
    assert!(!reg.blobs().exists(&other, &digest).unwrap());
}

#[test]
fn a_file_that_does_not_match_its_digest_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let file = dir.path().join("w.bin");
    std::fs::write(&file, b"weights").unwrap();
    let wrong = hex(&Sha256::digest(b"other"));
    assert!(matches!(reg.blobs().put_file(&zone(Stage::Training), &file, &wrong), Err(Error::DigestMismatch { .. })));
    assert!(!reg.blobs().exists(&zone(Stage::Training), &wrong).unwrap());
}

#[test]
fn names_that_could_escape_are_refused() {
    assert!(DataZone::new("../etc", Stage::Training).is_err());
    assert!(DataZone::new("", Stage::Training).is_err());
    assert!(check_name("model", "a/b").is_err());
    assert!(check_name("model", "resnet-50_v1.2").is_ok());
}

#[test]
fn versions_resolve_by_prefix_and_alias_and_commit_audits() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let v = VersionRecord {
        model: "m".into(),
        digest: "ab".repeat(32),
        residency_class: "eu-any".into(),
        files: vec![],
        bundle: "cd".repeat(32),
        signer_hint: "00".into(),
        signer_key_pem: String::new(),
        provenance: serde_json::json!({}),
        metrics: serde_json::json!({}),
        pushed_at: 1,
        locations: vec![Location { data_zone: zone(Stage::Training), since: 1, promotion: None }],
        withdrawn: Vec::new(),
    };
    let writes =
        [Registry::version_write(&v), Registry::alias_write(&zone(Stage::Training), "m", "latest", &v.digest).unwrap()];
    let entry = reg.commit(&writes, event(0)).unwrap();
    assert_eq!(entry.seq, 0);
    assert_eq!(reg.resolve("m", Some("abababab")).unwrap().digest, v.digest);
    assert_eq!(reg.resolve("m", None).unwrap().digest, v.digest);
    assert!(reg.resolve("m", Some("nope")).is_err());
    assert!(reg.resolve("other", None).is_err());
    assert!(reg.verify_audit().unwrap().ok());
}

#[test]
fn any_object_store_backend_fits_the_same_interface() {
    // The in-memory backend stands in for S3 here: nothing in BlobStore depends on the local filesystem.
    let store = std::sync::Arc::new(object_store::memory::InMemory::new());
    let blobs = BlobStore::with_store(store, "in-memory".into()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.bin");
    let data: Vec<u8> = (0..(9 << 20)).map(|i| (i % 251) as u8).collect(); // more than one 8 MiB part
    std::fs::write(&file, &data).unwrap();
    let digest = hex(&Sha256::digest(&data));
    assert_eq!(blobs.put_file(&zone(Stage::Training), &file, &digest).unwrap(), data.len() as u64);
    blobs.copy(&zone(Stage::Training), &zone(Stage::Inference), &digest).unwrap();
    blobs.verify(&zone(Stage::Inference), &digest).unwrap();
    let out = dir.path().join("back.bin");
    blobs.get_to_file(&zone(Stage::Inference), &digest, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let registry = Registry::open_with_blobs(&dir.path().join("reg"), blobs).unwrap();
    assert!(registry.blobs().exists(&zone(Stage::Inference), &digest).unwrap());
}

#[test]
fn a_second_opener_waits_for_the_first_to_close() {
    let dir = tempfile::tempdir().unwrap();
    let first = Registry::open(dir.path()).unwrap();
    first.audit(event(0)).unwrap();
    let path = dir.path().to_path_buf();
    let second = std::thread::spawn(move || Registry::open(&path).map(|r| r.verify_audit().unwrap().entries));
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(first);
    assert_eq!(second.join().unwrap().unwrap(), 1);
}

mod tamper_property {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Tamper {
        Edit(usize),
        Delete(usize),
        Swap(usize, usize),
        EditAndRehash(usize),
    }

    fn tamper() -> impl Strategy<Value = (usize, Tamper)> {
        (2usize..10).prop_flat_map(|n| {
            let t = prop_oneof![
                (0..n).prop_map(Tamper::Edit),
                (0..n).prop_map(Tamper::Delete),
                (0..n, 1..n).prop_map(move |(i, d)| Tamper::Swap(i, (i + d) % n)),
                (0..n).prop_map(Tamper::EditAndRehash),
            ];
            (Just(n), t)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// docs/design.md invariant 8: any edit, deletion or reordering of the audit log is detected.
        #[test]
        fn every_edit_deletion_or_reordering_is_detected((n, t) in tamper()) {
            let (_dir, reg) = registry_with_log(n as u32);
            let tree = reg.raw_audit_tree();
            let key = |i: usize| (i as u64).to_be_bytes();
            let get = |i: usize| -> AuditEntry { serde_json::from_slice(&tree.get(key(i)).unwrap().unwrap()).unwrap() };
            match t {
                Tamper::Edit(i) => {
                    let mut e = get(i);
                    e.event.subject.push('!');
                    tree.insert(key(i), serde_json::to_vec(&e).unwrap()).unwrap();
                }
                Tamper::EditAndRehash(i) => {
                    let mut e = get(i);
                    e.event.actor = "mallory".into();
                    e.hash = e.compute_hash();
                    tree.insert(key(i), serde_json::to_vec(&e).unwrap()).unwrap();
                }
                Tamper::Delete(i) => {
                    tree.remove(key(i)).unwrap();
                }
                Tamper::Swap(i, j) => {
                    let (a, b) = (tree.get(key(i)).unwrap().unwrap(), tree.get(key(j)).unwrap().unwrap());
                    tree.insert(key(i), b).unwrap();
                    tree.insert(key(j), a).unwrap();
                }
            }
            prop_assert!(!reg.verify_audit().unwrap().ok());
        }
    }
}
