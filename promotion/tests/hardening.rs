//! Regression tests of issue #11 at the library level: bounded durations (item 4) and empty models (item 5).

use sovra_promotion::config::{MAX_DURATION_SECS, parse_duration};
use sovra_promotion::{Error, SignOptions, sign_model};
use std::path::Path;

#[test]
fn a_duration_of_100000000h_is_refused_not_granted_until_13434() {
    for s in ["100000000h", "3651d", "99999999999999999999999d", "18446744073709551615s"] {
        let e = parse_duration(s).unwrap_err();
        assert!(e.contains("limit of 3650d"), "{s}: {e}");
    }
    assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION_SECS));
    assert_eq!(parse_duration("24h"), Ok(86_400));
    assert!(parse_duration("h").unwrap_err().contains("not a duration"));
    assert!(parse_duration("0s").unwrap_err().contains("positive"));
}

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
