//! The PKCS#11 key provider against a real SoftHSM token (Debian's `softhsm2`): a token is created in a
//! temporary directory, an AES-256 key generated inside it, and blobs are wrapped, read, refused with the wrong
//! PIN or label, and rotated from a key file onto the token.
//!
//! SoftHSM reads its configuration from `SOFTHSM2_CONF` when the module loads, so the test runs itself again as a
//! child process with that variable set (the test binary forbids `unsafe`, which `std::env::set_var` now is).

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};
use sovra_domain::datazone::{DataZone, Stage};
use sovra_registry::keys::{KeyProvider, random_data_key};
use sovra_registry::pkcs11::{Pkcs11Key, Pkcs11Spec};
use sovra_registry::stores::{KeySpec, StoreSpec, Stores};
use sovra_registry::{BlobStore, FileKey, hex};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234-user";

fn spec(label: &str, pin_env: &str) -> Pkcs11Spec {
    Pkcs11Spec {
        module: MODULE.into(),
        token: "sovra-test".into(),
        key_label: label.into(),
        pin_env: Some(pin_env.into()),
    }
}

#[test]
fn pkcs11_provider_with_softhsm() {
    assert!(
        Path::new(MODULE).exists(),
        "{MODULE} is missing: install SoftHSM with `apt-get install -y softhsm2` (what .ci/run does)"
    );
    let t = tempfile::tempdir().unwrap();
    let tokens = t.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = t.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "sovra-test", "--so-pin", "5678-so", "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util (apt-get install -y softhsm2)");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "inside_softhsm", "--include-ignored", "--nocapture", "--test-threads", "1"])
        .env("SOFTHSM2_CONF", &conf)
        .env("SOVRA_TEST_PKCS11_PIN", PIN)
        .env("SOVRA_TEST_DIR", t.path())
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&child.stdout), String::from_utf8_lossy(&child.stderr));
    assert!(child.status.success() && out.contains("1 passed"), "{out}");
}

/// Run by [`pkcs11_provider_with_softhsm`] with the token's configuration in the environment.
#[test]
#[ignore = "run by pkcs11_provider_with_softhsm"]
fn inside_softhsm() {
    let dir = PathBuf::from(std::env::var("SOVRA_TEST_DIR").expect("run through pkcs11_provider_with_softhsm"));
    // Generate the zone's AES-256 key inside the token (sensitive, not extractable).
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::OsThreads).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim() == "sovra-test")
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&AuthPin::new(PIN.into()))).unwrap();
    for label in ["fr-kek", "fr-kek-2"] {
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
            )
            .unwrap();
    }
    drop(session);

    // Wrap and unwrap through the provider.
    let key = Pkcs11Key::open(&spec("fr-kek", "SOVRA_TEST_PKCS11_PIN")).unwrap();
    assert_eq!(key.key_id(), "pkcs11:sovra-test/fr-kek");
    let dk = random_data_key().unwrap();
    let w = key.wrap(&dk, b"aad-1").unwrap();
    assert_eq!(*key.unwrap(&w, b"aad-1").unwrap(), *dk);
    assert!(key.unwrap(&w, b"aad-2").is_err(), "bound to its blob");
    let other = Pkcs11Key::open(&spec("fr-kek-2", "SOVRA_TEST_PKCS11_PIN")).unwrap();
    assert!(other.unwrap(&w, b"aad-1").is_err(), "another token key does not unwrap it");
    // Errors name the token, the label and the fix.
    let m = Pkcs11Key::open(&spec("nope", "SOVRA_TEST_PKCS11_PIN")).unwrap_err().to_string();
    assert!(m.contains("nope") && m.contains("no secret key"), "{m}");
    let m = Pkcs11Key::open(&spec("fr-kek", "SOVRA_TEST_SURELY_UNSET_PIN")).unwrap_err().to_string();
    assert!(m.contains("SOVRA_TEST_SURELY_UNSET_PIN"), "{m}");

    // A zone on a file key, rotated onto the token; then read through a `stores:` entry naming the token.
    let kf = dir.join("fr.kek");
    FileKey::generate(&kf).unwrap();
    let disk = dir.join("disk-fr");
    let entry = |key: KeySpec| {
        let mut s = Stores::new();
        s.insert("fr".into(), StoreSpec { local: Some(disk.clone()), s3: None, key: Some(key) });
        s
    };
    let file_stores = entry(KeySpec { file: Some(kf), pkcs11: None });
    let blobs = BlobStore::configured(&dir.join("reg/blobs"), &dir.join("reg/keys"), &file_stores).unwrap();
    let data = b"weights held under an HSM key".repeat(50_000);
    let file = dir.join("m");
    std::fs::write(&file, &data).unwrap();
    let digest = hex(&Sha256::digest(&data));
    let z = DataZone::new("fr", Stage::Registry).unwrap();
    blobs.put_file(&z, &file, &digest).unwrap();
    let r = blobs.rotate_key("fr", Arc::new(key), None).unwrap();
    assert_eq!(r.rewrapped, 1);
    let hsm_stores = entry(KeySpec { file: None, pkcs11: Some(spec("fr-kek", "SOVRA_TEST_PKCS11_PIN")) });
    let blobs = BlobStore::configured(&dir.join("reg/blobs"), &dir.join("reg/keys"), &hsm_stores).unwrap();
    assert_eq!(blobs.get_bytes(&z, &digest).unwrap(), data);
    // New blobs are wrapped by the token directly.
    let d2 = blobs.put_bytes(&z, b"bundle").unwrap();
    let k: serde_json::Value =
        serde_json::from_slice(&std::fs::read(disk.join(BlobStore::key_location(&z, &d2).as_ref())).unwrap()).unwrap();
    assert_eq!(k["kek"]["id"], "pkcs11:sovra-test/fr-kek");
}
