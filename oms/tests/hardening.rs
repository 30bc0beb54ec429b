//! Regression test of issue #11 at the library level: empty models (item 5) are not signed unless allowed.

use sovra_oms::{Error, SignOptions, sign_model};
use std::path::Path;

#[test]
fn an_empty_model_is_not_signed_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(model.join(".git")).unwrap();
    std::fs::write(model.join(".git/config"), "x").unwrap();
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/key.pem");
    let sig = dir.path().join("model.sig");
    let e = sign_model(&model, &key, &sig, &SignOptions::default()).unwrap_err();
    assert!(matches!(e, Error::EmptyModel { .. }), "{e}");
    assert_eq!(e.exit_code(), 2);
    assert!(!sig.exists(), "nothing is written");
    let allow = SignOptions { allow_empty: true, ..SignOptions::default() };
    let out = sign_model(&model, &key, &sig, &allow).unwrap();
    assert!(out.manifest.resources.is_empty() && sig.exists());
}
