//! Interoperability with the reference implementation, PyPI `model-signing==1.1.1` (its `model_signing` CLI):
//! models signed by `model_signing sign key` verify with `sovra model verify` and the library, models signed by
//! `sovra model sign` verify with `model_signing verify key`, for P-256 and P-384 keys, and a tampered file is
//! rejected by both.
//!
//! Needs `python3 -m pip install model-signing==1.1.1 pyopenssl` (1.1.1 forgets to declare pyOpenSSL). Without the
//! CLI on PATH the tests print a skip line and pass, except under CI (`CI` set), where they fail.

use sovra_oms::{Error, VerifyOptions, verify_model};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALL: &str = "python3 -m pip install model-signing==1.1.1 pyopenssl";

/// The `model_signing` executable, or `None` (after printing why) when the test should be skipped.
fn model_signing() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("model_signing")).find(|f| f.is_file()))
        .unwrap_or_default();
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let Some(exe) = found else {
        assert!(!ci, "model_signing is not on PATH; CI must install the reference implementation: {INSTALL}");
        println!("skipped: model_signing not installed (install it with `{INSTALL}`)");
        return None;
    };
    let help = Command::new(&exe).arg("--help").output().expect("model_signing runs");
    if !help.status.success() {
        let why = String::from_utf8_lossy(&help.stderr);
        assert!(!ci, "model_signing is installed but does not run (pyopenssl missing? {INSTALL}): {why}");
        println!("skipped: model_signing does not run ({INSTALL}): {why}");
        return None;
    }
    Some(exe)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the command runs")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oms/tests/data").join(p)
}

/// A scratch directory with a model of several files (nested, empty, multi-chunk, non-ASCII name); removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("sovra-interop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        let model = p.join("model");
        std::fs::create_dir_all(model.join("weights/shards")).unwrap();
        std::fs::copy(data("model/config.json"), model.join("config.json")).unwrap();
        std::fs::copy(data("model/weights/w0.bin"), model.join("weights/w0.bin")).unwrap();
        std::fs::write(model.join("weights/empty.bin"), b"").unwrap();
        let big: Vec<u8> = (0..(3 << 20) + 12345).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        std::fs::write(model.join("weights/shards/big.bin"), big).unwrap();
        std::fs::write(model.join("weights.txt"), b"sorted after weights/ by component").unwrap();
        std::fs::write(model.join("tokenizer-\u{00fc}.json"), "{\"vocab\": [\"\u{00dc}ber\"]}").unwrap();
        Scratch(p)
    }

    fn model(&self) -> PathBuf {
        self.0.join("model")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn py_sign(exe: &Path, dir: &Path, key: &Path, sig: &str) {
    let o = run(Command::new(exe)
        .current_dir(dir)
        .args(["sign", "key", "model", "--signature", sig])
        .arg("--private_key")
        .arg(key));
    assert!(o.status.success(), "model_signing sign key failed: {}", show(&o));
}

fn py_verify(exe: &Path, dir: &Path, key: &Path, sig: &str) -> Output {
    run(Command::new(exe)
        .current_dir(dir)
        .args(["verify", "key", "model", "--signature", sig])
        .arg("--public_key")
        .arg(key))
}

fn sovra(dir: &Path, args: &[&str], key: &Path) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_sovra")).current_dir(dir).args(args).arg(key))
}

const KEYS: [(&str, &str); 2] = [("key.pem", "key.pub.pem"), ("p384/key.pem", "p384/key.pub.pem")];

#[test]
fn model_signing_signs_sovra_verifies() {
    let Some(exe) = model_signing() else { return };
    for (private, public) in KEYS {
        let s = Scratch::new(&format!("py-signs-{}", private.len()));
        py_sign(&exe, &s.0, &data(private), "py.sig");
        let out = verify_model(&s.model(), &s.0.join("py.sig"), &data(public), &VerifyOptions::default())
            .unwrap_or_else(|e| panic!("{private}: the library rejects model_signing's bundle: {e}"));
        assert_eq!(out.manifest.resources.len(), 6, "{private}");
        let o = sovra(&s.0, &["model", "verify", "model", "--signature", "py.sig", "--public-key"], &data(public));
        assert!(o.status.success(), "{private}: sovra model verify: {}", show(&o));
    }
}

#[test]
fn sovra_signs_model_signing_verifies() {
    let Some(exe) = model_signing() else { return };
    for (private, public) in KEYS {
        let s = Scratch::new(&format!("rs-signs-{}", private.len()));
        let o = sovra(&s.0, &["model", "sign", "model", "--signature", "rs.sig", "--private-key"], &data(private));
        assert!(o.status.success(), "{private}: sovra model sign: {}", show(&o));
        let o = py_verify(&exe, &s.0, &data(public), "rs.sig");
        assert!(o.status.success(), "{private}: model_signing verify key rejects sovra's bundle: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Verification succeeded"), "{}", show(&o));
        // A signature written inside the model is recorded in ignore_paths and honoured by both.
        let o =
            sovra(&s.0, &["model", "sign", "model", "--signature", "model/in.sig", "--private-key"], &data(private));
        assert!(o.status.success(), "{}", show(&o));
        let o = py_verify(&exe, &s.0, &data(public), "model/in.sig");
        assert!(o.status.success(), "{private}: signature inside the model: {}", show(&o));
    }
}

#[test]
fn a_tampered_file_is_rejected_by_both() {
    let Some(exe) = model_signing() else { return };
    let s = Scratch::new("tamper");
    let (private, public) = (data("key.pem"), data("key.pub.pem"));
    py_sign(&exe, &s.0, &private, "py.sig");
    let o = sovra(&s.0, &["model", "sign", "model", "--signature", "rs.sig", "--private-key"], &private);
    assert!(o.status.success(), "{}", show(&o));
    let big = s.model().join("weights/shards/big.bin");
    let mut bytes = std::fs::read(&big).unwrap();
    bytes[2 << 20] ^= 1;
    std::fs::write(&big, bytes).unwrap();
    for sig in ["py.sig", "rs.sig"] {
        let o = py_verify(&exe, &s.0, &public, sig);
        assert_eq!(o.status.code(), Some(1), "model_signing accepted a tampered model ({sig}): {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Hash mismatch for")
                && String::from_utf8_lossy(&o.stderr).contains("weights/shards/big.bin"),
            "{}",
            show(&o)
        );
        let o = sovra(&s.0, &["model", "verify", "model", "--signature", sig, "--public-key"], &public);
        assert_eq!(o.status.code(), Some(1), "sovra accepted a tampered model ({sig}): {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("changed  weights/shards/big.bin"), "{}", show(&o));
        let err = verify_model(&s.model(), &s.0.join(sig), &public, &VerifyOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::ManifestMismatch { diff, .. } if diff.changed == ["weights/shards/big.bin"]),
            "{err}"
        );
    }
}

/// `sovra model verify` exit codes and JSON output on the shipped bundle (no `model_signing` needed).
#[test]
fn sovra_model_verify_exit_codes() {
    let dir = std::env::temp_dir();
    let model = data("model");
    let verify = |sig: &Path, key: &str, json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sovra"));
        c.current_dir(&dir).args(["model", "verify"]).arg(&model).arg("--signature").arg(sig).arg("--public-key");
        c.arg(data(key));
        if json {
            c.args(["-o", "json"]);
        }
        run(&mut c)
    };
    let o = verify(&data("model.sig"), "key.pub.pem", true);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "verified");
    assert_eq!(v["root_digest"], "ed70f4896c9b917a2ae58122ece9dd453112c4e926da3998ed9cd2bb1269017e");
    let o = verify(&data("p384/model.sig"), "key.pub.pem", false);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("key mismatch"), "{}", show(&o));
    let o = verify(&data("payload.json"), "key.pub.pem", false);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("payload.json: not a valid OMS signature bundle"),
        "{}",
        show(&o)
    );
    let o = verify(&data("model.sig"), "key.pem", false);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

/// `sovra model sign` JSON output, and exit 2 with nothing written for a symbolic link leaving the model.
#[cfg(unix)]
#[test]
fn sovra_model_sign_json_and_bad_input() {
    let s = Scratch::new("sign-json");
    let o = sovra(
        &s.0,
        &["model", "sign", "model", "-o", "json", "--signature", "out.sig", "--private-key"],
        &data("key.pem"),
    );
    assert!(o.status.success(), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["curve"].as_str(), v["files"].as_u64()),
        (Some("signed"), Some("P-256"), Some(6))
    );
    std::fs::write(s.0.join("outside.txt"), b"x").unwrap();
    std::os::unix::fs::symlink("../outside.txt", s.model().join("link")).unwrap();
    let args = ["model", "sign", "model", "--allow-symlinks", "--signature", "bad.sig", "--private-key"];
    let o = sovra(&s.0, &args, &data("key.pem"));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("leads outside the model directory"), "{}", show(&o));
    assert!(!s.0.join("bad.sig").exists());
}
