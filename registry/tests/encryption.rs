//! A store per data zone on local disks, encryption at rest, zone keys, rotation, and the errors that name the
//! zone and store. (The same over real S3: tests/garage.rs; PKCS#11: tests/pkcs11.rs.)

use sha2::{Digest, Sha256};
use sovra_domain::datazone::{DataZone, Stage};
use sovra_registry::stores::{KeySpec, S3Spec, StoreSpec, Stores};
use sovra_registry::{BlobStore, Error, FileKey, Registry, hex};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-the-model-weights-of-zone-fr";

fn plaintext(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = MARKER.iter().copied().cycle().take(len).collect();
    v.extend_from_slice(MARKER);
    v
}

fn dz(zone: &str, stage: Stage) -> DataZone {
    DataZone::new(zone, stage).unwrap()
}

fn key_file(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    FileKey::generate(&p).unwrap();
    p
}

fn local(dir: &Path, key: Option<&Path>) -> StoreSpec {
    StoreSpec {
        local: Some(dir.to_path_buf()),
        s3: None,
        key: key.map(|k| KeySpec { file: Some(k.into()), pkcs11: None }),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if e.file_type().is_file() {
            out.extend(std::fs::read(e.path()).unwrap());
        }
    }
    out
}

struct Setup {
    t: tempfile::TempDir,
    stores: Stores,
}

impl Setup {
    fn new() -> Setup {
        let t = tempfile::tempdir().unwrap();
        let keys = t.path().join("kek-volume");
        let (kf, kd) = (key_file(&keys, "fr.kek"), key_file(&keys, "de.kek"));
        let mut stores = Stores::new();
        stores.insert("fr".into(), local(&t.path().join("disk-fr"), Some(&kf)));
        stores.insert("de".into(), local(&t.path().join("disk-de"), Some(&kd)));
        Setup { t, stores }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.t.path().join(rel)
    }

    fn blobs(&self) -> BlobStore {
        BlobStore::configured(&self.p("reg/blobs"), &self.p("reg/keys"), &self.stores).unwrap()
    }

    fn model(&self, len: usize) -> (PathBuf, String, Vec<u8>) {
        let data = plaintext(len);
        let file = self.p("model.bin");
        std::fs::write(&file, &data).unwrap();
        (file, hex(&Sha256::digest(&data)), data)
    }
}

#[test]
fn each_zone_has_its_own_store_and_holds_only_ciphertext() {
    let s = Setup::new();
    let blobs = s.blobs();
    let (file, digest, data) = s.model(3 << 20);
    let (fr, de) = (dz("fr", Stage::Training), dz("de", Stage::Registry));
    assert_eq!(blobs.put_file(&fr, &file, &digest).unwrap(), data.len() as u64);
    blobs.copy(&fr, &de, &digest).unwrap();
    blobs.verify(&de, &digest).unwrap();
    assert_eq!(blobs.digest(&fr, &digest).unwrap(), digest, "addresses stay those of the plaintext");
    // Each zone's blob sits on its own disk, as ciphertext, with its key object beside it.
    let fr_obj = s.p("disk-fr").join(BlobStore::location(&fr, &digest).as_ref());
    let de_obj = s.p("disk-de").join(BlobStore::location(&de, &digest).as_ref());
    assert!(fr_obj.is_file() && de_obj.is_file());
    assert!(!s.p("reg/blobs/zones").exists(), "nothing in the default store");
    for disk in ["disk-fr", "disk-de"] {
        assert!(!contains(&all_bytes_under(&s.p(disk)), MARKER), "{disk} holds plaintext");
    }
    let (a, b) = (std::fs::read(&fr_obj).unwrap(), std::fs::read(&de_obj).unwrap());
    assert_ne!(a, b, "a copy is re-encrypted under a fresh data key");
    let key: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.p("disk-de").join(BlobStore::key_location(&de, &digest).as_ref())).unwrap(),
    )
    .unwrap();
    assert_eq!(key["data_zone"], "de/registry");
    assert_eq!(key["kek"]["zone"], "de");
    assert_eq!(key["kek"]["version"], 1);
    // Reading back gives the plaintext.
    let out = s.p("out.bin");
    assert_eq!(blobs.get_to_file(&de, &digest, &out).unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // Small blobs too.
    let bundle = blobs.put_bytes(&de, b"{\"bundle\": 1}").unwrap();
    assert_eq!(blobs.get_bytes(&de, &bundle).unwrap(), b"{\"bundle\": 1}");
    // list_all sees every zone's store; a key object is not listed as a blob.
    let (listed, other) = blobs.list_all().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn a_flipped_ciphertext_byte_or_a_cut_fails_verification_and_nothing_is_copied() {
    let s = Setup::new();
    let blobs = s.blobs();
    let (file, digest, _) = s.model(2 << 20);
    let fr = dz("fr", Stage::Training);
    blobs.put_file(&fr, &file, &digest).unwrap();
    let obj = s.p("disk-fr").join(BlobStore::location(&fr, &digest).as_ref());
    let good = std::fs::read(&obj).unwrap();
    let mut bad = good.clone();
    bad[1_500_000] ^= 0x01;
    std::fs::write(&obj, &bad).unwrap();
    let e = blobs.verify(&fr, &digest).unwrap_err();
    assert!(matches!(e, Error::Tampered { .. }), "{e}");
    assert!(e.to_string().contains("chunk 1"), "{e}");
    let de = dz("de", Stage::Registry);
    assert!(blobs.copy(&fr, &de, &digest).is_err());
    assert!(!blobs.exists(&de, &digest).unwrap(), "a failed copy leaves nothing");
    assert!(!s.p("disk-de").join(BlobStore::key_location(&de, &digest).as_ref()).exists(), "nor a key object");
    let e = blobs.get_to_file(&fr, &digest, &s.p("out")).unwrap_err();
    assert!(matches!(e, Error::Tampered { .. }) && !s.p("out").exists(), "{e}");
    // Cut short (the final chunk dropped): refused.
    std::fs::write(&obj, &good[..(1 << 20) + 16]).unwrap();
    assert!(matches!(blobs.verify(&fr, &digest), Err(Error::Tampered { .. })));
    std::fs::write(&obj, &good).unwrap();
    blobs.verify(&fr, &digest).unwrap();
}

#[test]
fn a_blob_of_one_zone_cannot_be_read_with_another_zones_key() {
    let s = Setup::new();
    let blobs = s.blobs();
    let (file, digest, _) = s.model(10_000);
    let (fr, de) = (dz("fr", Stage::Registry), dz("de", Stage::Registry));
    blobs.put_file(&fr, &file, &digest).unwrap();
    // Someone copies fr's raw objects (ciphertext and key object) into de's store.
    for loc in [BlobStore::location(&fr, &digest), BlobStore::key_location(&fr, &digest)] {
        let to = loc.as_ref().replace("zones/fr/", "zones/de/");
        let dest = s.p("disk-de").join(to);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(s.p("disk-fr").join(loc.as_ref()), dest).unwrap();
    }
    let e = blobs.verify(&de, &digest).unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::WrongZoneKey { .. }), "{m}");
    assert!(m.contains("de/registry") && m.contains("fr/registry"), "names both zones: {m}");
    // And with the key object edited to claim zone de, de's key still does not unwrap it.
    let kpath = s.p("disk-de").join(BlobStore::key_location(&de, &digest).as_ref());
    let mut k: serde_json::Value = serde_json::from_slice(&std::fs::read(&kpath).unwrap()).unwrap();
    k["data_zone"] = "de/registry".into();
    std::fs::write(&kpath, serde_json::to_vec(&k).unwrap()).unwrap();
    let m = blobs.verify(&de, &digest).unwrap_err().to_string();
    assert!(m.contains("wrapped by key") && m.contains("configured key"), "{m}");
}

#[test]
fn rotation_rewraps_data_keys_without_rewriting_blobs() {
    let s = Setup::new();
    let (file, digest, _) = s.model(1 << 20);
    let (fr_t, fr_r) = (dz("fr", Stage::Training), dz("fr", Stage::Registry));
    {
        let blobs = s.blobs();
        blobs.put_file(&fr_t, &file, &digest).unwrap();
        blobs.copy(&fr_t, &fr_r, &digest).unwrap();
    }
    let obj = s.p("disk-fr").join(BlobStore::location(&fr_r, &digest).as_ref());
    let before = (std::fs::read(&obj).unwrap(), std::fs::metadata(&obj).unwrap().modified().unwrap());
    let new = key_file(&s.p("kek-volume"), "fr-2.kek");
    let report = s.blobs().rotate_key("fr", Arc::new(FileKey::load(&new).unwrap()), Some(&new)).unwrap();
    assert_eq!((report.rewrapped, report.already), (2, 0), "{report:?}");
    assert_eq!(std::fs::read(&obj).unwrap(), before.0, "the blob is not rewritten");
    assert_eq!(std::fs::metadata(&obj).unwrap().modified().unwrap(), before.1);
    // Still configured with the old key: refused, saying what happened.
    let m = s.blobs().verify(&fr_r, &digest).unwrap_err().to_string();
    assert!(m.contains("rotated") && m.contains("fr"), "{m}");
    // With the new key named: readable, version 2.
    let mut stores = s.stores.clone();
    stores.get_mut("fr").unwrap().key = Some(KeySpec { file: Some(new.clone()), pkcs11: None });
    let blobs = BlobStore::configured(&s.p("reg/blobs"), &s.p("reg/keys"), &stores).unwrap();
    blobs.verify(&fr_r, &digest).unwrap();
    blobs.verify(&fr_t, &digest).unwrap();
    let k: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.p("disk-fr").join(BlobStore::key_location(&fr_r, &digest).as_ref())).unwrap(),
    )
    .unwrap();
    assert_eq!(k["kek"]["version"], 2);
    // Running it again is a no-op.
    let again = blobs.rotate_key("fr", Arc::new(FileKey::load(&new).unwrap()), Some(&new)).unwrap();
    assert_eq!((again.rewrapped, again.already), (0, 2));
    // A zone that is in no entry and has no key: refused, naming it.
    let e = blobs.rotate_key("nl", Arc::new(FileKey::load(&new).unwrap()), None).unwrap_err().to_string();
    assert!(e.contains("`nl`") && e.contains("stores"), "{e}");
}

#[test]
fn a_zone_without_an_entry_gets_the_default_store_and_a_generated_key() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::open(&t.path().join("reg")).unwrap();
    let file = t.path().join("m");
    std::fs::write(&file, MARKER).unwrap();
    let digest = hex(&Sha256::digest(MARKER));
    let z = dz("nl", Stage::Training);
    reg.blobs().put_file(&z, &file, &digest).unwrap();
    let kek = t.path().join("reg/keys/nl.kek");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(t.path().join("reg/blobs").join(BlobStore::location(&z, &digest).as_ref()).is_file());
    assert!(!contains(&all_bytes_under(&t.path().join("reg/blobs")), MARKER));
    drop(reg);
    // The same key is used after a reopen.
    let reg = Registry::open(&t.path().join("reg")).unwrap();
    reg.blobs().verify(&z, &digest).unwrap();
}

#[test]
fn the_registry_records_its_stores_and_gc_finds_orphans_in_every_zone() {
    let s = Setup::new();
    let (file, digest, _) = s.model(1000);
    {
        let mut reg = Registry::open(&s.p("reg")).unwrap();
        reg.use_stores(&s.stores).unwrap();
        reg.blobs().put_file(&dz("fr", Stage::Training), &file, &digest).unwrap();
        reg.blobs().copy(&dz("fr", Stage::Training), &dz("de", Stage::Registry), &digest).unwrap();
    }
    // A plain open (as `sovra registry gc` does) finds the stores again.
    let reg = Registry::open(&s.p("reg")).unwrap();
    let report = reg.gc(false).unwrap();
    let zones: Vec<&str> = report.orphans.iter().map(|o| o.data_zone.as_str()).collect();
    assert_eq!(zones, ["de/registry", "fr/training"], "{report:?}");
    assert!(report.orphans[0].location.contains("disk-de"), "{:?}", report.orphans[0]);
    let report = reg.gc(true).unwrap();
    assert_eq!(report.orphans.len(), 2);
    assert!(reg.gc(false).unwrap().orphans.is_empty());
    assert!(all_bytes_under(&s.p("disk-de")).is_empty(), "blob and key object removed");
}

#[test]
fn key_files_and_store_errors_name_the_zone_the_store_and_the_fix() {
    let s = Setup::new();
    // A world-readable key file.
    let loose = s.p("kek-volume/loose.kek");
    std::fs::write(&loose, [1u8; 32]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut stores = s.stores.clone();
    stores.get_mut("fr").unwrap().key = Some(KeySpec { file: Some(loose.clone()), pkcs11: None });
    let blobs = BlobStore::configured(&s.p("reg/blobs"), &s.p("reg/keys"), &stores).unwrap();
    let (file, digest, _) = s.model(10);
    let m = blobs.put_file(&dz("fr", Stage::Training), &file, &digest).unwrap_err().to_string();
    assert!(m.contains("`fr`") && m.contains("chmod 600"), "{m}");
    // Missing credentials.
    let s3 = |creds: Option<PathBuf>| StoreSpec {
        local: None,
        s3: Some(S3Spec {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "b".into(),
            region: "garage".into(),
            prefix: None,
            access_key_id_env: Some("SOVRA_TEST_SURELY_UNSET_ID".into()),
            secret_access_key_env: Some("SOVRA_TEST_SURELY_UNSET_SECRET".into()),
            credentials_file: creds,
        }),
        key: None,
    };
    let mut stores = Stores::new();
    stores.insert("de/inference".into(), s3(None));
    let blobs = BlobStore::configured(&s.p("reg/blobs"), &s.p("reg/keys"), &stores).unwrap();
    blobs.put_file(&dz("fr", Stage::Training), &file, &digest).expect("other zones still work");
    let m = blobs.exists(&dz("de", Stage::Inference), &digest).unwrap_err().to_string();
    assert!(m.contains("de/inference") && m.contains("SOVRA_TEST_SURELY_UNSET_ID"), "{m}");
    // An unreachable endpoint: the first operation fails, naming the zone's store.
    let creds = s.p("creds.json");
    std::fs::write(&creds, r#"{"access_key_id": "GK1", "secret_access_key": "s"}"#).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    stores.insert("de/inference".into(), s3(Some(creds)));
    let blobs = BlobStore::configured(&s.p("reg/blobs"), &s.p("reg/keys"), &stores).unwrap();
    let m = blobs.exists(&dz("de", Stage::Inference), &digest).unwrap_err().to_string();
    assert!(m.contains("de/inference") && m.contains("http://127.0.0.1:9") && m.contains("bucket b"), "{m}");
    // Bad entries.
    let mut bad = Stores::new();
    bad.insert("fr/nowhere".into(), local(&s.p("x"), None));
    let m = BlobStore::configured(&s.p("reg/blobs"), &s.p("reg/keys"), &bad).unwrap_err().to_string();
    assert!(m.contains("fr/nowhere") && m.contains("stage"), "{m}");
    let mut both = Stores::new();
    both.insert("fr".into(), StoreSpec { s3: s3(None).s3, ..local(&s.p("x"), None) });
    let m = BlobStore::configured(&s.p("reg/blobs"), &s.p("reg/keys"), &both).unwrap_err().to_string();
    assert!(m.contains("exactly one of `local` and `s3`"), "{m}");
}
