//! The OMS test vectors produced by `model_signing` 1.1.1 (`tests/data/`, see its README), and
//! sign → verify round trips with every way a verification must fail.

use base64::Engine;
use sovra_oms::bundle::{Bundle, PAYLOAD_TYPE, pae};
use sovra_oms::hashing::{HashConfig, hash_model};
use sovra_oms::keys::KeyError;
use sovra_oms::manifest::{Manifest, Method, Resource, Serialization};
use sovra_oms::{Error, PublicKey, SignOptions, SigningKey, VerifyOptions, sign_manifest, sign_model, verify_model};
use std::fs;
use std::path::{Path, PathBuf};

const CONFIG_DIGEST: &str = "834e0ed2f5fc26755353750eb13716e04fd16e437a0c74133fa51e121280deb0";
const W0_DIGEST: &str = "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882";
const ROOT: &str = "ed70f4896c9b917a2ae58122ece9dd453112c4e926da3998ed9cd2bb1269017e";
const HINT: &str = "caa9837b7d5a7bf1fbaf517af1fa6ab41ea469fb3cb07e991cc2e4535d768a42";

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

fn read(p: &str) -> Vec<u8> {
    fs::read(data(p)).unwrap()
}

/// A writable copy of the example model in a fresh temporary directory: (tempdir, model path).
fn model_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    fs::create_dir_all(model.join("weights")).unwrap();
    fs::copy(data("model/config.json"), model.join("config.json")).unwrap();
    fs::copy(data("model/weights/w0.bin"), model.join("weights/w0.bin")).unwrap();
    (dir, model)
}

fn verify(model: &Path, sig: &Path, key: &Path) -> Result<sovra_oms::VerifyOutcome, Error> {
    verify_model(model, sig, key, &VerifyOptions::default())
}

fn sign(model: &Path, key: &Path, sig: &Path) -> sovra_oms::SignOutcome {
    sign_model(model, key, sig, &SignOptions::default()).unwrap()
}

#[test]
fn pae_and_payload_are_byte_exact() {
    let bundle = Bundle::from_json(&read("model.sig")).unwrap();
    let payload = bundle.payload().unwrap();
    assert_eq!(payload, read("payload.json"));
    assert_eq!(pae(PAYLOAD_TYPE, &payload), read("pae.bin"));
    assert!(read("pae.bin").starts_with(b"DSSEv1 28 application/vnd.in-toto+json 879 {"));
    assert_eq!(bundle.signature().unwrap(), read("sig.der"));
    // Re-serialising the parsed bundle gives Python's bytes back (key order, compact, no trailing LF).
    assert_eq!(bundle.to_json(), read("model.sig"));
    let p384 = Bundle::from_json(&read("p384/model.sig")).unwrap();
    assert_eq!(pae(PAYLOAD_TYPE, &p384.payload().unwrap()), read("p384/pae.bin"));
    assert_eq!(p384.signature().unwrap(), read("p384/sig.der"));
}

#[test]
fn the_signatures_verify_over_the_pae() {
    let p256 = PublicKey::from_pem_file(&data("key.pub.pem")).unwrap();
    assert!(p256.verify(&read("pae.bin"), &read("sig.der")));
    assert!(!p256.verify(&read("pae.bin")[1..], &read("sig.der")));
    let p384 = PublicKey::from_pem_file(&data("p384/key.pub.pem")).unwrap();
    assert!(p384.verify(&read("p384/pae.bin"), &read("p384/sig.der")));
    assert!(!p384.verify(&read("pae.bin"), &read("sig.der")));
}

#[test]
fn hint_is_sha256_of_the_reencoded_pem() {
    let key = PublicKey::from_pem_file(&data("key.pub.pem")).unwrap();
    assert_eq!(key.hint(), HINT);
    assert_eq!(key.to_pem().as_bytes(), read("key.pub.pem"));
    // The private key yields the same public key; text around the block and CRLF do not matter.
    let sk = SigningKey::from_pem_file(&data("key.pem")).unwrap();
    assert_eq!(sk.public_key().hint(), HINT);
    let noisy =
        format!("Public-Key: (256 bit)\r\n{}", String::from_utf8(read("key.pub.pem")).unwrap().replace('\n', "\r\n"));
    assert_eq!(PublicKey::from_pem(&noisy).unwrap().hint(), HINT);
    let bundle = Bundle::from_json(&read("p384/model.sig")).unwrap();
    let p384 = PublicKey::from_pem_file(&data("p384/key.pub.pem")).unwrap();
    assert_eq!(bundle.verification_material.public_key.hint.as_deref(), Some(p384.hint().as_str()));
    assert_eq!(p384.to_pem().as_bytes(), read("p384/key.pub.pem"));
}

#[test]
fn hashing_the_example_model_reproduces_the_manifest() {
    let (manifest, bytes) = hash_model(&data("model"), &HashConfig::default()).unwrap();
    assert_eq!(bytes, 24);
    let got: Vec<_> = manifest.resources.iter().map(|r| (r.name.as_str(), r.digest.as_str())).collect();
    assert_eq!(got, [("config.json", CONFIG_DIGEST), ("weights/w0.bin", W0_DIGEST)]);
    assert_eq!(manifest.root_digest().unwrap(), ROOT);
    let signed = Manifest::from_statement_json(&read("payload.json")).unwrap();
    assert_eq!(signed.model_name, "model");
    assert_eq!(signed.serialization.ignore_paths, [".git", ".github", ".gitignore", ".gitattributes"]);
    assert!(signed.diff(&manifest).is_empty());
}

#[test]
fn shipped_bundles_verify() {
    for (sig, key) in
        [("model.sig", "key.pub.pem"), ("alt-compact.sig", "key.pub.pem"), ("p384/model.sig", "p384/key.pub.pem")]
    {
        let out = verify(&data("model"), &data(sig), &data(key)).unwrap_or_else(|e| panic!("{sig}: {e}"));
        assert_eq!(out.root_digest, ROOT, "{sig}");
        assert_eq!(out.manifest.resources.len(), 2);
        assert!(out.warnings.is_empty());
    }
}

#[test]
fn round_trip_p256_and_p384() {
    for (key, pubkey, max_sig) in [("key.pem", "key.pub.pem", 72), ("p384/key.pem", "p384/key.pub.pem", 104)] {
        let (dir, model) = model_copy();
        let sig = dir.path().join("model.sig");
        let out = sign(&model, &data(key), &sig);
        assert_eq!(out.root_digest, ROOT);
        let bundle = Bundle::from_json(&fs::read(&sig).unwrap()).unwrap();
        assert!(bundle.signature().unwrap().len() <= max_sig);
        assert_eq!(bundle.dsse_envelope.signatures[0].keyid.as_deref(), Some(""));
        assert!(!fs::read(&sig).unwrap().ends_with(b"\n"));
        verify(&model, &sig, &data(pubkey)).unwrap();
    }
}

#[test]
fn our_statement_reads_like_pythons() {
    let (dir, model) = model_copy();
    let sig = dir.path().join("model.sig");
    sign(&model, &data("key.pem"), &sig);
    let payload = Bundle::from_json(&fs::read(&sig).unwrap()).unwrap().payload().unwrap();
    let text = String::from_utf8(payload.clone()).unwrap();
    assert!(text.starts_with("{\n  \"_type\": \"https://in-toto.io/Statement/v1\",\n  \"subject\": [\n"), "{text}");
    let ours = Manifest::from_statement_json(&payload).unwrap();
    let pythons = Manifest::from_statement_json(&read("payload.json")).unwrap();
    assert_eq!(ours, pythons);
}

#[test]
fn tampered_added_and_missing_files_are_listed() {
    let (dir, model) = model_copy();
    let sig = dir.path().join("model.sig");
    sign(&model, &data("key.pem"), &sig);
    fs::write(model.join("weights/w0.bin"), b"0123456780").unwrap();
    fs::write(model.join("extra.txt"), b"new").unwrap();
    fs::remove_file(model.join("config.json")).unwrap();
    let err = verify(&model, &sig, &data("key.pub.pem")).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let Error::ManifestMismatch { diff, .. } = &err else { panic!("{err}") };
    assert_eq!(diff.changed, ["weights/w0.bin"]);
    assert_eq!(diff.added, ["extra.txt"]);
    assert_eq!(diff.missing, ["config.json"]);
    let msg = err.to_string();
    assert!(msg.contains("1 changed (weights/w0.bin)") && msg.contains("1 added (extra.txt)"), "{msg}");
}

#[test]
fn the_python_bundle_rejects_a_tampered_model() {
    let (_dir, model) = model_copy();
    fs::write(model.join("config.json"), b"{\"layers\": 2}\n").unwrap();
    let err = verify(&model, &data("model.sig"), &data("key.pub.pem")).unwrap_err();
    assert!(matches!(&err, Error::ManifestMismatch { diff, .. } if diff.changed == ["config.json"]), "{err}");
}

#[test]
fn wrong_key_is_rejected() {
    let err = verify(&data("model"), &data("model.sig"), &data("p384/key.pub.pem")).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("key mismatch"));
    assert_eq!(err.exit_code(), 1);
    // Without a hint to catch it, the signature check does.
    let dir = tempfile::tempdir().unwrap();
    let mut bundle = Bundle::from_json(&read("model.sig")).unwrap();
    bundle.verification_material.public_key.hint = None;
    let sig = dir.path().join("nohint.sig");
    fs::write(&sig, bundle.to_json()).unwrap();
    let err = verify(&data("model"), &sig, &data("p384/key.pub.pem")).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
    // With the right key it verifies, with a warning.
    let out = verify(&data("model"), &sig, &data("key.pub.pem")).unwrap();
    assert_eq!(out.warnings.len(), 1);
}

#[test]
fn altered_payload_fails_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let mut bundle = Bundle::from_json(&read("model.sig")).unwrap();
    let payload = String::from_utf8(bundle.payload().unwrap()).unwrap().replace("\"model\"", "\"modem\"");
    bundle.dsse_envelope.payload = base64::engine::general_purpose::STANDARD.encode(payload);
    let sig = dir.path().join("altered.sig");
    fs::write(&sig, bundle.to_json()).unwrap();
    let err = verify(&data("model"), &sig, &data("key.pub.pem")).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
}

#[test]
fn corrupt_json_and_unknown_keys_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.sig");
    fs::write(&corrupt, &read("model.sig")[..200]).unwrap();
    let err = verify(&data("model"), &corrupt, &data("key.pub.pem")).unwrap_err();
    assert!(matches!(err, Error::BundleInvalid { .. }), "{err}");
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("corrupt.sig"));

    let text = String::from_utf8(read("model.sig")).unwrap();
    let unknown = dir.path().join("unknown.sig");
    fs::write(&unknown, text.replace("\"tlogEntries\":[]", "\"tlogEntries\":[],\"extra\":1")).unwrap();
    let err = verify(&data("model"), &unknown, &data("key.pub.pem")).unwrap_err();
    assert!(matches!(err, Error::BundleInvalid { .. }) && err.to_string().contains("unknown field `extra`"), "{err}");

    let media = dir.path().join("media.sig");
    fs::write(&media, text.replace("bundle.v0.3+json", "bundle+json;version=0.2")).unwrap();
    let err = verify(&data("model"), &media, &data("key.pub.pem")).unwrap_err();
    assert!(err.to_string().contains("mediaType"), "{err}");

    // Whitespace, key order, a missing tlogEntries and keyid are accepted, as Python does.
    let v: serde_json::Value =
        serde_json::from_str(&text.replace(",\"keyid\":\"\"", "").replace(",\"tlogEntries\":[]", "")).unwrap();
    let pretty = dir.path().join("pretty.sig");
    fs::write(&pretty, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    verify(&data("model"), &pretty, &data("key.pub.pem")).unwrap();
}

#[test]
fn missing_model_signature_and_bad_keys_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify(&dir.path().join("nope"), &data("model.sig"), &data("key.pub.pem")).unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }) && err.exit_code() == 2, "{err}");
    let err = verify(&data("model"), &dir.path().join("none.sig"), &data("key.pub.pem")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("none.sig"), "{err}");
    let err = verify(&data("model"), &data("model.sig"), &data("key.pem")).unwrap_err();
    assert!(matches!(err, Error::Key { .. }) && err.to_string().contains("PUBLIC KEY"), "{err}");
    let sig = dir.path().join("m.sig");
    let err = sign_model(&data("model"), &data("key.pub.pem"), &sig, &SignOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Key { .. }), "{err}");
    assert!(!sig.exists());
}

#[cfg(unix)]
#[test]
fn symlinks_are_refused_and_may_not_escape() {
    let (dir, model) = model_copy();
    let outside = dir.path().join("secret.txt");
    fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, model.join("link")).unwrap();
    let sig = dir.path().join("model.sig");
    let err = sign_model(&model, &data("key.pem"), &sig, &SignOptions::default()).unwrap_err();
    assert!(matches!(err, Error::SymlinkRefused { .. }) && err.to_string().contains("--allow-symlinks"), "{err}");
    let allow = SignOptions { allow_symlinks: true, ..SignOptions::default() };
    let err = sign_model(&model, &data("key.pem"), &sig, &allow).unwrap_err();
    assert!(matches!(err, Error::OutsideModel { .. }), "{err}");
    assert!(!sig.exists(), "nothing written");
    // A `..` link climbing out of the model is the same.
    fs::remove_file(model.join("link")).unwrap();
    std::os::unix::fs::symlink("../../secret.txt", model.join("weights/up")).unwrap();
    let err = sign_model(&model, &data("key.pem"), &sig, &allow).unwrap_err();
    assert!(matches!(err, Error::OutsideModel { .. }), "{err}");
    // A link that stays inside is hashed under its own name when allowed.
    fs::remove_file(model.join("weights/up")).unwrap();
    std::os::unix::fs::symlink("w0.bin", model.join("weights/alias")).unwrap();
    let out = sign_model(&model, &data("key.pem"), &sig, &allow).unwrap();
    assert!(out.manifest.resources.iter().any(|r| r.name == "weights/alias" && r.digest == W0_DIGEST));
    let vopts = VerifyOptions { allow_symlinks: true, ..VerifyOptions::default() };
    verify_model(&model, &sig, &data("key.pub.pem"), &vopts).unwrap();
    let err = verify(&model, &sig, &data("key.pub.pem")).unwrap_err();
    assert!(matches!(err, Error::SymlinkRefused { .. }), "{err}");
}

/// A bundle, correctly signed, whose manifest names a file outside the model.
#[test]
fn manifest_path_outside_the_model_is_refused() {
    let key = SigningKey::from_pem_file(&data("key.pem")).unwrap();
    for name in ["../secret", "/etc/passwd", "weights/../../x"] {
        let manifest = Manifest {
            model_name: "model".into(),
            resources: vec![Resource { name: name.into(), algorithm: "sha256".into(), digest: W0_DIGEST.into() }],
            serialization: Serialization {
                method: Method::Files,
                hash_type: "sha256".into(),
                allow_symlinks: false,
                ignore_paths: vec![],
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let sig = dir.path().join("evil.sig");
        fs::write(&sig, sign_manifest(&manifest, &key).unwrap()).unwrap();
        let err = verify(&data("model"), &sig, &data("key.pub.pem")).unwrap_err();
        assert!(matches!(&err, Error::ManifestPathOutside { name: n, .. } if n == name), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}

#[test]
fn sharded_round_trip() {
    let (dir, model) = model_copy();
    let sig = dir.path().join("model.sig");
    let opts = SignOptions { shard_size: Some(4), ..SignOptions::default() };
    let out = sign_model(&model, &data("key.pem"), &sig, &opts).unwrap();
    let names: Vec<_> = out.manifest.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "config.json:0:4",
            "config.json:4:8",
            "config.json:8:12",
            "config.json:12:14",
            "weights/w0.bin:0:4",
            "weights/w0.bin:4:8",
            "weights/w0.bin:8:10"
        ]
    );
    let payload = String::from_utf8(Bundle::from_json(&fs::read(&sig).unwrap()).unwrap().payload().unwrap()).unwrap();
    assert!(payload.contains("\"shard_size\": 4.0") && payload.contains("\"method\": \"shards\""), "{payload}");
    assert!(payload.contains("sha256-sharded-4"));
    verify(&model, &sig, &data("key.pub.pem")).unwrap();
    let p384 = dir.path().join("p384.sig");
    sign_model(&model, &data("p384/key.pem"), &p384, &opts).unwrap();
    verify(&model, &p384, &data("p384/key.pub.pem")).unwrap();
    fs::write(model.join("weights/w0.bin"), b"0123X56789").unwrap();
    let err = verify(&model, &sig, &data("key.pub.pem")).unwrap_err();
    assert!(matches!(&err, Error::ManifestMismatch { diff, .. } if diff.changed == ["weights/w0.bin:4:8"]), "{err}");
}

#[test]
fn single_file_model_and_signature_inside_the_model() {
    let (dir, model) = model_copy();
    let file = model.join("weights/w0.bin");
    let sig = dir.path().join("w0.sig");
    let out = sign(&file, &data("key.pem"), &sig);
    assert_eq!(out.manifest.model_name, "w0.bin");
    assert_eq!(
        out.manifest.resources,
        [Resource { name: ".".into(), algorithm: "sha256".into(), digest: W0_DIGEST.into() }]
    );
    verify(&file, &sig, &data("key.pub.pem")).unwrap();

    let inside = model.join("model.sig");
    let out = sign(&model, &data("key.pem"), &inside);
    assert!(out.manifest.serialization.ignore_paths.contains(&"model.sig".to_string()));
    assert_eq!(out.root_digest, ROOT);
    verify(&model, &inside, &data("key.pub.pem")).unwrap();
}

#[test]
fn ignore_paths_and_git_paths() {
    let (dir, model) = model_copy();
    fs::create_dir_all(model.join(".git")).unwrap();
    fs::write(model.join(".git/HEAD"), b"ref").unwrap();
    fs::create_dir_all(model.join("cache")).unwrap();
    fs::write(model.join("cache/tmp"), b"t").unwrap();
    let sig = dir.path().join("model.sig");
    let opts = SignOptions { ignore_paths: vec![model.join("cache")], ..SignOptions::default() };
    let out = sign_model(&model, &data("key.pem"), &sig, &opts).unwrap();
    assert_eq!(out.root_digest, ROOT);
    assert!(out.manifest.serialization.ignore_paths.contains(&"cache".to_string()));
    // The bundle's ignore_paths are honoured at verify time without repeating them.
    fs::write(model.join("cache/tmp"), b"changed").unwrap();
    verify(&model, &sig, &data("key.pub.pem")).unwrap();
}

#[test]
fn empty_files_and_many_files_hash_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    fs::create_dir(&model).unwrap();
    for i in 0..40 {
        fs::write(model.join(format!("f{i:02}")), vec![i as u8; i * 1000]).unwrap();
    }
    let one = hash_model(&model, &HashConfig { threads: Some(1), ..HashConfig::default() }).unwrap();
    let many = hash_model(&model, &HashConfig { threads: Some(8), ..HashConfig::default() }).unwrap();
    assert_eq!(one, many);
    assert_eq!(one.0.resources[0].digest, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/// Key files in the other forms `openssl` writes: a compressed public point, PKCS#8, an `EC PARAMETERS` block and
/// a `-text` dump around the key. All give the same key and hint as the vectors.
#[test]
fn other_key_encodings() {
    const COMPRESSED: &str = "-----BEGIN PUBLIC KEY-----\nMDkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDIgAD3GgKw/+NPhgzRPe6BhMdWOko+fNI\nvGFg9fTtR17jRmc=\n-----END PUBLIC KEY-----\n";
    assert_eq!(PublicKey::from_pem(COMPRESSED).unwrap().hint(), HINT);
    const PKCS8_P384: &str = "-----BEGIN PRIVATE KEY-----\nMIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCt/1sxFr9lw56+BZ5Z\nV2cxn6cAdxZw99IQ5RMG1qkTwid+TkqYUKBIN6Yhv/nNGnahZANiAAR+CdjqL8gV\nMh3Tcug7WPlt4zTI3qi6IouKG8SjkCAxw4CZwv4LwgIO1oSPUkpxwxV46tlHjD8J\nIqlGVp314yEMuiPikn/w41gbiH/K/vFjMfm1EsTsH70s4R7iPHZIfiw=\n-----END PRIVATE KEY-----\n";
    let p384 = SigningKey::from_pem(PKCS8_P384).unwrap();
    assert_eq!(p384.public_key().to_pem().as_bytes(), read("p384/key.pub.pem"));
    const WITH_TEXT: &str = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\nPrivate-Key: (256 bit)\npriv:\n    1b:76:51:c9:d5:0d:c4:24:1a:e5:ac:d3:73:d0:2f:\n    47:77:a0:49:fd:49:93:1f:8c:9d:14:6e:5d:b3:4e:\n    7c:29\npub:\n    04:dc:68:0a:c3:ff:8d:3e:18:33:44:f7:ba:06:13:\n    1d:58:e9:28:f9:f3:48:bc:61:60:f5:f4:ed:47:5e:\n    e3:46:67:80:06:70:c9:87:38:11:fa:30:ee:f6:a0:\n    bf:c6:47:5e:00:7e:50:ee:1c:80:a4:44:59:83:c0:\n    38:e9:2d:b0:15\nASN1 OID: prime256v1\nNIST CURVE: P-256\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBt2UcnVDcQkGuWs03PQL0d3oEn9SZMfjJ0Ubl2zTnwpoAoGCCqGSM49\nAwEHoUQDQgAE3GgKw/+NPhgzRPe6BhMdWOko+fNIvGFg9fTtR17jRmeABnDJhzgR\n+jDu9qC/xkdeAH5Q7hyApERZg8A46S2wFQ==\n-----END EC PRIVATE KEY-----\n";
    let p256 = SigningKey::from_pem(WITH_TEXT).unwrap();
    assert_eq!(p256.public_key().hint(), HINT);
    // A signature made with the re-encoded key verifies with the vector's public key.
    let key = PublicKey::from_pem_file(&data("key.pub.pem")).unwrap();
    assert!(key.verify(b"message", &p256.sign(b"message").unwrap()));
    let e = SigningKey::from_pem("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")
        .unwrap_err();
    assert_eq!(e, KeyError::EncryptedPrivateKey);
    assert!(e.to_string().contains("encrypted"), "{e}");
    let e = PublicKey::from_pem("not a key").unwrap_err();
    assert_eq!(e, KeyError::NoPublicKey);
    assert!(e.to_string().contains("PUBLIC KEY"), "{e}");
}
