//! Two zones in two countries, each an S3 bucket on its own real Garage server: blobs are stored, copied across
//! and verified; what the buckets hold is ciphertext; a flipped byte, another zone's key object and a wrong key
//! are refused; rotation keeps blobs readable; gc finds orphans in both buckets. Needs the garage binary (see
//! `sovra_garage_testenv`); without it these tests fail, saying how to install it.

use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use sovra_domain::datazone::{DataZone, Stage};
use sovra_garage_testenv::Garage;
use sovra_registry::stores::{KeySpec, S3Spec, StoreSpec, Stores};
use sovra_registry::{BlobStore, Error, FileKey, hex};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-weights-that-must-not-leave-the-zone";

fn dz(zone: &str, stage: Stage) -> DataZone {
    DataZone::new(zone, stage).unwrap()
}

fn creds(dir: &Path, g: &Garage, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::json!({"access_key_id": g.key_id(), "secret_access_key": g.secret()}).to_string())
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn spec(g: &Garage, bucket: &str, creds: PathBuf, key: &Path) -> StoreSpec {
    StoreSpec {
        local: None,
        s3: Some(S3Spec {
            endpoint: g.endpoint().into(),
            bucket: bucket.into(),
            region: g.region().into(),
            prefix: Some("sovra".into()),
            access_key_id_env: None,
            secret_access_key_env: None,
            credentials_file: Some(creds),
        }),
        key: Some(KeySpec { file: Some(key.to_path_buf()), pkcs11: None }),
    }
}

/// A raw S3 client on a bucket (no sovra layer), to see and change what is really stored.
fn raw(g: &Garage, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(g.endpoint())
        .with_bucket_name(bucket)
        .with_region(g.region())
        .with_access_key_id(g.key_id())
        .with_secret_access_key(g.secret())
        .with_allow_http(true)
        .build()
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

struct Two {
    t: tempfile::TempDir,
    fr: Garage,
    de: Garage,
    stores: Stores,
}

fn two() -> Two {
    let fr = Garage::start().unwrap_or_else(|e| panic!("{e}"));
    let de = Garage::start().unwrap_or_else(|e| panic!("{e}"));
    fr.create_bucket("fr-models").unwrap();
    de.create_bucket("de-models").unwrap();
    let t = tempfile::tempdir().unwrap();
    let (kf, kd) = (t.path().join("fr.kek"), t.path().join("de.kek"));
    FileKey::generate(&kf).unwrap();
    FileKey::generate(&kd).unwrap();
    let mut stores = Stores::new();
    stores.insert("fr-par".into(), spec(&fr, "fr-models", creds(t.path(), &fr, "fr.json"), &kf));
    stores.insert("de-fra".into(), spec(&de, "de-models", creds(t.path(), &de, "de.json"), &kd));
    Two { t, fr, de, stores }
}

impl Two {
    fn blobs(&self) -> BlobStore {
        BlobStore::configured(&self.t.path().join("reg/blobs"), &self.t.path().join("reg/keys"), &self.stores).unwrap()
    }
}

#[test]
fn blobs_cross_two_garage_zones_encrypted_and_verified() {
    let w = two();
    let blobs = w.blobs();
    let data: Vec<u8> = MARKER.iter().copied().cycle().take(20 << 20).collect();
    let file = w.t.path().join("model.bin");
    std::fs::write(&file, &data).unwrap();
    let digest = hex(&Sha256::digest(&data));
    let (fr, de) = (dz("fr-par", Stage::Training), dz("de-fra", Stage::Registry));
    blobs.put_file(&fr, &file, &digest).unwrap();
    blobs.copy(&fr, &de, &digest).unwrap();
    blobs.verify(&de, &digest).unwrap();
    let out = w.t.path().join("pulled.bin");
    blobs.get_to_file(&de, &digest, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert!(blobs.describe(&de).contains("de-models"), "{}", blobs.describe(&de));

    // What the bucket holds: ciphertext (and the key object), under the prefix.
    let rt = rt();
    let de_raw = raw(&w.de, "de-models");
    let loc = object_store::path::Path::from(format!("sovra/{}", BlobStore::location(&de, &digest)));
    let stored = rt.block_on(async { de_raw.get(&loc).await.unwrap().bytes().await.unwrap() });
    assert_eq!(stored.len(), data.len() + 16 * 20, "20 MiB in 20 chunks of 1 MiB, each with its tag");
    assert!(!stored.windows(MARKER.len()).any(|x| x == MARKER), "the bucket holds plaintext");
    let kloc = object_store::path::Path::from(format!("sovra/{}", BlobStore::key_location(&de, &digest)));
    let key: serde_json::Value =
        serde_json::from_slice(&rt.block_on(async { de_raw.get(&kloc).await.unwrap().bytes().await.unwrap() }))
            .unwrap();
    assert_eq!(key["data_zone"], "de-fra/registry");
    // Nothing of the plaintext on the Garage server's disk either (it stores data uncompressed here).
    for g in [&w.fr, &w.de] {
        for e in walkdir::WalkDir::new(g.data_dir()).into_iter().flatten().filter(|e| e.file_type().is_file()) {
            let b = std::fs::read(e.path()).unwrap();
            assert!(!b.windows(MARKER.len()).any(|x| x == MARKER), "{} holds plaintext", e.path().display());
        }
    }

    // A flipped ciphertext byte in the bucket: verification fails.
    let mut bad = stored.to_vec();
    bad[5 << 20] ^= 0x80;
    rt.block_on(de_raw.put(&loc, PutPayload::from(bad))).unwrap();
    let e = blobs.verify(&de, &digest).unwrap_err();
    assert!(matches!(e, Error::Tampered { .. }), "{e}");
    rt.block_on(de_raw.put(&loc, PutPayload::from(stored.clone()))).unwrap();
    blobs.verify(&de, &digest).unwrap();

    // fr's raw objects copied into de's bucket as de's blob: refused, naming both zones.
    let fr_raw = raw(&w.fr, "fr-models");
    let sneaky = dz("de-fra", Stage::Inference);
    for (from, to) in [
        (BlobStore::location(&fr, &digest), BlobStore::location(&sneaky, &digest)),
        (BlobStore::key_location(&fr, &digest), BlobStore::key_location(&sneaky, &digest)),
    ] {
        let bytes =
            rt.block_on(async { fr_raw.get(&format!("sovra/{from}").into()).await.unwrap().bytes().await.unwrap() });
        rt.block_on(de_raw.put(&format!("sovra/{to}").into(), PutPayload::from(bytes))).unwrap();
    }
    let m = blobs.verify(&sneaky, &digest).unwrap_err().to_string();
    assert!(m.contains("fr-par/training") && m.contains("de-fra/inference"), "{m}");

    // gc's listing covers both buckets; the sneaked-in blob is a blob of de-fra/inference.
    let (listed, _) = blobs.list_all().unwrap();
    let zones: Vec<String> = listed.iter().map(|(z, _, _)| z.to_string()).collect();
    assert_eq!(zones, ["de-fra/registry", "de-fra/inference", "fr-par/training"], "sorted by zone, then stage order");
}

#[test]
fn rotation_on_s3_keeps_blobs_readable_and_a_wrong_key_fails() {
    let w = two();
    let (file, data) = (w.t.path().join("m"), MARKER.repeat(1000));
    std::fs::write(&file, &data).unwrap();
    let digest = hex(&Sha256::digest(&data));
    let fr = dz("fr-par", Stage::Registry);
    w.blobs().put_file(&fr, &file, &digest).unwrap();
    let rt = rt();
    let fr_raw = raw(&w.fr, "fr-models");
    let loc = object_store::path::Path::from(format!("sovra/{}", BlobStore::location(&fr, &digest)));
    let etag = |rt: &tokio::runtime::Runtime| rt.block_on(fr_raw.head(&loc)).unwrap().e_tag;
    let before = etag(&rt);
    let new = w.t.path().join("fr-2.kek");
    FileKey::generate(&new).unwrap();
    let r = w.blobs().rotate_key("fr-par", Arc::new(FileKey::load(&new).unwrap()), None).unwrap();
    assert_eq!(r.rewrapped, 1);
    assert_eq!(etag(&rt), before, "the blob object is not rewritten");
    let mut stores = w.stores.clone();
    stores.get_mut("fr-par").unwrap().key = Some(KeySpec { file: Some(new), pkcs11: None });
    let blobs = BlobStore::configured(&w.t.path().join("reg/blobs"), &w.t.path().join("reg/keys"), &stores).unwrap();
    assert_eq!(blobs.get_bytes(&fr, &digest).unwrap(), data);
    // de's key configured for fr: refused.
    let mut wrong = w.stores.clone();
    wrong.get_mut("fr-par").unwrap().key = w.stores["de-fra"].key.clone();
    let blobs = BlobStore::configured(&w.t.path().join("reg/blobs"), &w.t.path().join("reg/keys"), &wrong).unwrap();
    assert!(blobs.verify(&fr, &digest).is_err());
}

#[test]
fn an_unreachable_garage_is_named_in_the_error() {
    let mut w = two();
    w.de.stop();
    let e = w.blobs().exists(&dz("de-fra", Stage::Registry), &"ab".repeat(32)).unwrap_err().to_string();
    assert!(e.contains("de-fra") && e.contains("de-models") && e.contains(w.de.endpoint()), "{e}");
}
