//! Compare-and-swap writes ([`Write::expecting`]) and the audit entry formats (JCS format 2, legacy format 1).

use super::*;
use sovra_domain::datazone::Stage;

fn event(i: u32) -> AuditEvent {
    AuditEvent { kind: "push".into(), subject: format!("m@{i}"), actor: "alice".into(), details: serde_json::json!({}) }
}

fn version(locations: usize) -> VersionRecord {
    let zone = DataZone::new("fr-par-secnum", Stage::Training).unwrap();
    VersionRecord {
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
        locations: (0..locations)
            .map(|i| Location { data_zone: zone.clone(), since: i as u64, promotion: None })
            .collect(),
        withdrawn: Vec::new(),
    }
}

#[test]
fn two_writers_with_the_same_stale_expectation_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    reg.commit(&[Registry::version_write(&version(1)).expecting(None)], event(0)).unwrap();
    let read = reg.version_raw("m", &"ab".repeat(32)).unwrap();
    assert!(read.is_some());
    let first = Registry::version_write(&version(2)).expecting(read.clone());
    let second = Registry::version_write(&version(3)).expecting(read);
    reg.commit(&[first], event(1)).unwrap();
    let e = reg.commit(&[second], event(2)).unwrap_err();
    assert!(matches!(&e, Error::Conflict { key } if key == &format!("m/{}", "ab".repeat(32))), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("m/{}", "ab".repeat(32))) && msg.contains("changed concurrently; retry"), "{msg}");
    // Nothing of the losing commit was written: neither the record nor its audit entry.
    assert_eq!(reg.version("m", &"ab".repeat(32)).unwrap().unwrap().locations.len(), 2);
    assert_eq!(reg.audit_entries().unwrap().len(), 2);
    assert!(reg.verify_audit().unwrap().ok());
}

#[test]
fn expecting_absence_refuses_an_existing_key_and_blind_writes_still_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    reg.commit(&[Registry::version_write(&version(1)).expecting(None)], event(0)).unwrap();
    let e = reg.commit(&[Registry::version_write(&version(2)).expecting(None)], event(1)).unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    reg.commit(&[Registry::version_write(&version(3))], event(2)).unwrap();
    assert_eq!(reg.version("m", &"ab".repeat(32)).unwrap().unwrap().locations.len(), 3);
}

#[test]
fn concurrent_writers_of_one_read_exactly_one_commits() {
    let dir = tempfile::tempdir().unwrap();
    let reg = std::sync::Arc::new(Registry::open(dir.path()).unwrap());
    reg.commit(&[Registry::version_write(&version(1))], event(0)).unwrap();
    let read = reg.version_raw("m", &"ab".repeat(32)).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (reg, read) = (reg.clone(), read.clone());
            std::thread::spawn(move || {
                reg.commit(&[Registry::version_write(&version(2 + i)).expecting(read)], event(1))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(Error::Conflict { .. }))));
    assert_eq!(reg.audit_entries().unwrap().len(), 2);
}

#[test]
fn new_entries_are_format_2_and_hash_their_jcs_form() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let details = serde_json::json!({"zeta": "Zürich \"q\"\n\t☃ 𝄞 \u{1}", "alpha": [1, true, null], "é": 2, "b": 3});
    let e = reg.audit(AuditEvent { details, ..event(0) }).unwrap();
    assert_eq!(e.v, Some(audit::FORMAT));
    let jcs = String::from_utf8(e.canonical().unwrap()).unwrap();
    let expected = format!(
        r#"{{"actor":"alice","details":{{"alpha":[1,true,null],"b":3,"zeta":"Zürich \"q\"\n\t☃ 𝄞 \u0001","é":2}},"kind":"push","prev":"{}","seq":0,"subject":"m@0","time":{},"v":2}}"#,
        audit::GENESIS,
        e.time
    );
    assert_eq!(jcs, expected);
    assert_eq!(e.hash, hex(&sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(jcs.as_bytes()))));
    // Stored as written: the raw value decodes to the same entry.
    let raw = reg.raw_audit_tree().get(0u64.to_be_bytes()).unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<AuditEntry>(&raw).unwrap(), e);
}

#[test]
fn a_legacy_log_written_before_format_2_still_verifies_and_can_be_extended() {
    let text = include_str!("testdata/legacy-audit.jsonl");
    let entries: Vec<(Vec<u8>, Vec<u8>)> =
        text.lines().enumerate().map(|(i, l)| ((i as u64).to_be_bytes().to_vec(), l.as_bytes().to_vec())).collect();
    let last: AuditEntry = serde_json::from_slice(&entries.last().unwrap().1).unwrap();
    assert_eq!(last.v, None);
    let head = AuditHead { count: entries.len() as u64, hash: last.hash.clone() };
    let report = audit::verify(entries.clone().into_iter(), head.clone());
    assert!(report.ok(), "{report:?}");
    // A format 2 entry appended after the legacy ones verifies as part of the same chain.
    let next = audit::next_entry(&head, event(9)).unwrap();
    let mut all = entries.clone();
    all.push((head.count.to_be_bytes().to_vec(), serde_json::to_vec(&next).unwrap()));
    let report = audit::verify(all.into_iter(), AuditHead { count: head.count + 1, hash: next.hash.clone() });
    assert!(report.ok(), "{report:?}");
    // An edit to a legacy entry is still caught.
    let mut edited = entries;
    edited[1].1 = String::from_utf8(edited[1].1.clone()).unwrap().replace("bob", "eve").into_bytes();
    let report = audit::verify(edited.into_iter(), head);
    assert!(report.problems.iter().any(|p| p.position == 1 && p.message.contains("edited")), "{report:?}");
}

#[test]
fn an_unknown_format_version_is_reported() {
    let head = AuditHead { count: 0, hash: audit::GENESIS.into() };
    let mut e = audit::next_entry(&head, event(0)).unwrap();
    e.v = Some(3);
    e.hash = e.compute_hash();
    let report = audit::verify(
        std::iter::once((0u64.to_be_bytes().to_vec(), serde_json::to_vec(&e).unwrap())),
        AuditHead { count: 1, hash: e.hash.clone() },
    );
    assert!(report.problems.iter().any(|p| p.message.contains("format version 3")), "{report:?}");
}
