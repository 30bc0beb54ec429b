//! Issue #18 part 3: signing keys outside plain files, through the real `sovra` and `sovra-promotion` binaries.
//!
//! - Keys in a real SoftHSM token (Debian's `softhsm2`): a model signed with `--key pkcs11:…` verifies with
//!   `sovra model verify` and with `model_signing verify key` 1.1.1; an approver key in the token signs an approval
//!   that the promotion service counts, and the service's own key in the token signs the promotion statement.
//! - Encrypted PKCS#8 PEM keys (`file:PATH?passphrase-env=VAR` / `passphrase-file=`): the same, and a wrong
//!   passphrase is a clear error that prints neither the key nor the passphrase.
//! - Bad input: a missing object, a wrong PIN, a PIN in the URI.
//!
//! Each test makes its own token directory and SoftHSM configuration and hands it to the child processes through
//! `SOFTHSM2_CONF` (the module reads it when it loads).

#[path = "support/service.rs"]
mod service;
#[path = "support/registry_tour.rs"]
mod support;

use serde_json::Value;
use service::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::Tour;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-pin";

/// A SoftHSM token labelled `sovra` in `dir/tokens`, with the configuration file it needs.
fn token(dir: &Path) -> PathBuf {
    assert!(Path::new(MODULE).exists(), "{MODULE} is missing: `apt-get install -y softhsm2` (what .ci/run does)");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    let o = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "sovra", "--pin", PIN, "--so-pin", "so-4711"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util runs (apt-get install -y softhsm2)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    conf
}

/// Imports an unencrypted PEM key into the token as a key pair labelled `label`, then deletes the file: from here
/// on only the token holds the private key.
fn import(conf: &Path, pem: &Path, label: &str, id: &str) {
    // softhsm2-util reads PKCS#8 only; `sovra model keygen` writes PKCS#8.
    let o = Command::new("softhsm2-util")
        .args(["--import"])
        .arg(pem)
        .args(["--token", "sovra", "--label", label, "--id", id, "--pin", PIN])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(pem).unwrap();
}

fn uri(label: &str) -> String {
    format!("pkcs11:token=sovra;object={label}?module-path={MODULE}&pin-env=TEST_PIN")
}

/// Encrypts a PEM key as PKCS#8 (PBES2, AES-256-CBC) with `openssl pkcs8`; the plain file is deleted.
fn encrypt(pem: &Path, out: &Path, pass: &str) {
    let o = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in"])
        .arg(pem)
        .arg("-out")
        .arg(out)
        .args(["-passout", &format!("pass:{pass}")])
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(pem).unwrap();
}

fn sovra(t: &Tour, conf: &Path, args: &[&str]) -> (i32, String, String) {
    let o =
        t.cmd(args).env("SOFTHSM2_CONF", conf).env("TEST_PIN", PIN).env("TEST_PASS", "correct horse").output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn a_model_signed_in_softhsm_verifies_with_sovra_and_model_signing() {
    let t = Tour::new();
    let conf = token(&t.p("hsm"));
    import(&conf, &t.p("keys/trainer.pem"), "trainer", "01");
    let (code, out, err) =
        sovra(&t, &conf, &["model", "sign", "model", "--key", &uri("trainer"), "--signature", "hsm.sig"]);
    assert_eq!(code, 0, "{out}{err}");
    t.ok(&["model", "verify", "model", "--signature", "hsm.sig", "--public-key", "keys/trainer.pub.pem"]);
    // Two signatures by the token differ (ECDSA is randomised there) and both verify: nothing is cached.
    sovra(&t, &conf, &["model", "sign", "model", "--key", &uri("trainer"), "--signature", "hsm2.sig"]);
    assert_ne!(std::fs::read(t.p("hsm.sig")).unwrap(), std::fs::read(t.p("hsm2.sig")).unwrap());
    t.ok(&["model", "verify", "model", "--signature", "hsm2.sig", "--public-key", "keys/trainer.pub.pem"]);
    if let Some(exe) = model_signing() {
        let o = Command::new(exe)
            .current_dir(t.p(""))
            .args(["verify", "key", "model", "--signature", "hsm.sig", "--public_key", "keys/trainer.pub.pem"])
            .output()
            .unwrap();
        assert!(o.status.success(), "model_signing verify key: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// `model_signing` on PATH, or `None` outside CI (as tests/model_signing_interop.rs decides).
fn model_signing() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("model_signing")).find(|f| f.is_file()));
    assert!(found.is_some() || std::env::var_os("CI").is_none(), "model_signing is not on PATH under CI");
    found
}

#[test]
fn bad_token_names_are_clear_errors() {
    let t = Tour::new();
    let conf = token(&t.p("hsm"));
    import(&conf, &t.p("keys/trainer.pem"), "trainer", "01");
    let sign = |key: &str, pin: &str| {
        let o = t
            .cmd(&["model", "sign", "model", "--key", key, "--signature", "x.sig"])
            .env("SOFTHSM2_CONF", &conf)
            .env("TEST_PIN", pin)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, err) = sign(&uri("nobody"), PIN);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no private key object labelled `nobody` in token `sovra`"), "{err}");
    let (code, err) = sign(&uri("trainer"), "wrong-pin");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot log in to token `sovra` with the PIN"), "{err}");
    assert!(!err.contains("wrong-pin"), "the PIN is printed: {err}");
    let (code, err) = sign(&format!("pkcs11:token=sovra;object=trainer?module-path={MODULE}&pin-value={PIN}"), PIN);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`pin-value` is refused") && !err.contains(PIN), "{err}");
    let (code, err) = sign(&uri("trainer").replace("token=sovra", "token=other"), PIN);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no token labelled `other`"), "{err}");
    assert!(!t.p("x.sig").exists(), "nothing is written on a failure");
}

#[test]
fn encrypted_pem_keys_sign_and_a_wrong_passphrase_prints_no_secret() {
    let t = Tour::new();
    let plain = std::fs::read_to_string(t.p("keys/trainer.pem")).unwrap();
    encrypt(&t.p("keys/trainer.pem"), &t.p("keys/trainer.enc.pem"), "correct horse");
    let encrypted = std::fs::read_to_string(t.p("keys/trainer.enc.pem")).unwrap();
    std::fs::write(t.p("pass.txt"), "correct horse\n").unwrap();
    let none = Path::new("/nonexistent");
    for key in
        ["file:keys/trainer.enc.pem?passphrase-env=TEST_PASS", "file:keys/trainer.enc.pem?passphrase-file=pass.txt"]
    {
        let (code, out, err) = sovra(&t, none, &["model", "sign", "model", "--key", key, "--signature", "enc.sig"]);
        assert_eq!(code, 0, "{key}: {out}{err}");
        t.ok(&["model", "verify", "model", "--signature", "enc.sig", "--public-key", "keys/trainer.pub.pem"]);
    }
    // A wrong passphrase: exit 2, the key file named, no line of either PEM and not the passphrase.
    std::fs::write(t.p("wrong.txt"), "battery staple").unwrap();
    let (code, _, err) = sovra(
        &t,
        none,
        &[
            "model",
            "sign",
            "model",
            "--key",
            "file:keys/trainer.enc.pem?passphrase-file=wrong.txt",
            "--signature",
            "w.sig",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("keys/trainer.enc.pem") && err.contains("passphrase does not decrypt"), "{err}");
    for line in plain.lines().chain(encrypted.lines()).filter(|l| !l.starts_with("-----")) {
        assert!(!err.contains(line), "key material in the error: {err}");
    }
    assert!(!err.contains("battery staple") && !err.contains("correct horse"), "{err}");
    // Without a passphrase source the encrypted key is refused with what to write.
    let (code, _, err) = sovra(&t, none, &["model", "sign", "model", "--key", "keys/trainer.enc.pem"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("passphrase-env=VAR"), "{err}");
    // A passphrase variable that is not set names the variable.
    let (code, _, err) = sovra(
        &t,
        none,
        &["model", "sign", "model", "--key", "file:keys/trainer.enc.pem?passphrase-env=UNSET_PASS_VAR"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("UNSET_PASS_VAR"), "{err}");
}

/// The service with `SOFTHSM2_CONF` and the PIN in its environment.
fn start_with_token(t: &Tour, conf: &Path) -> Service {
    let mut child = Command::new(server_binary())
        .current_dir(t.p(""))
        .args(["serve", "--listen", "127.0.0.1:0", "--registry"])
        .arg(t.p("service-registry"))
        .arg("--promotion-config")
        .arg(t.p("service.yaml"))
        .env("SOFTHSM2_CONF", conf)
        .env("TEST_PIN", PIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().replace("127.0.0.1", "localhost");
    assert!(url.starts_with("https://localhost:"), "no listening line: {line:?}");
    Service { child, url }
}

/// `sovra ARGS` against the service as certificate client `client`, with the token's environment.
fn as_cert_with_token(t: &Tour, s: &Service, conf: &Path, client: &str, args: &[&str]) -> (i32, String, String) {
    let (c, k) = (t.p(&format!("tls/nodes/{client}.pem")), t.p(&format!("tls/nodes/{client}-key.pem")));
    let o = t
        .cmd(args)
        .args(["--server", &s.url, "--ca", t.p("tls/ca.pem").to_str().unwrap()])
        .args(["--client-cert", c.to_str().unwrap(), "--client-key", k.to_str().unwrap()])
        .env("SOVRA_REGISTRY", t.p("no-local-registry"))
        .env("SOFTHSM2_CONF", conf)
        .env("TEST_PIN", PIN)
        .env("TEST_PASS", "correct horse")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn the_service_counts_a_softhsm_approval_and_signs_statements_in_the_token() {
    let t = setup();
    let conf = token(&t.p("hsm"));
    // Alice's approver key and the service's own key live only in the token; Bob's is an encrypted PEM.
    import(&conf, &t.p("keys/alice.pem"), "alice", "0a");
    import(&conf, &t.p("keys/service.pem"), "service", "0b");
    encrypt(&t.p("keys/bob.pem"), &t.p("keys/bob.enc.pem"), "correct horse");
    let cfg = std::fs::read_to_string(t.p("service.yaml")).unwrap();
    assert!(cfg.contains("service_key: keys/service.pem"), "the example config names the service key");
    let cfg = cfg.replace("service_key: keys/service.pem", &format!("service_key: \"{}\"", uri("service")));
    std::fs::write(t.p("service.yaml"), cfg).unwrap();
    let s = start_with_token(&t, &conf);
    ok(as_token(&t, &s, "pusher-ci", &push_args()));
    ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "registry"]));
    let a = as_cert_with_token(
        &t,
        &s,
        &conf,
        "alice-ci",
        &["model", "approve", "radiology", "--to", "inference", "--key", &uri("alice")],
    );
    assert!(ok(a).contains("by alice"));
    let b = as_cert_with_token(
        &t,
        &s,
        &conf,
        "bob-ci",
        &[
            "model",
            "approve",
            "radiology",
            "--to",
            "inference",
            "--key",
            "file:keys/bob.enc.pem?passphrase-env=TEST_PASS",
        ],
    );
    assert!(ok(b).contains("by bob"));
    // Both approvals count: the dry run lists two valid ones, and the promotion goes through.
    let dry = as_token(
        &t,
        &s,
        "promoter-ci",
        &["model", "promote", "radiology", "--to", "inference", "--dry-run", "--explain", "-o", "json"],
    );
    let d: Value = serde_json::from_str(&ok(dry)).unwrap();
    assert_eq!(d["input"]["approvals"]["valid"].as_array().unwrap().len(), 2, "{d}");
    let p: Value = serde_json::from_str(&ok(as_token(
        &t,
        &s,
        "promoter-ci",
        &["model", "promote", "radiology", "--to", "inference", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(p["status"], "promoted", "{p}");
    // The statements the token signed verify against `service_public_key`.
    let st: Value =
        serde_json::from_str(&ok(as_token(&t, &s, "pusher-ci", &["model", "status", "radiology", "-o", "json"])))
            .unwrap();
    let proms = st["promotions"].as_array().unwrap();
    assert_eq!(proms.len(), 2, "{st}");
    assert!(proms.iter().all(|p| p["statement_verified"] == true), "{st}");
}

#[test]
fn local_promotion_signs_with_an_encrypted_service_key() {
    let t = Tour::new();
    encrypt(&t.p("keys/service.pem"), &t.p("keys/service.enc.pem"), "correct horse");
    std::fs::write(t.p("service.pass"), "correct horse\n").unwrap();
    let cfg = std::fs::read_to_string(t.p("promotion.yaml")).unwrap().replace(
        "service_key: keys/service.pem",
        "service_key: \"file:keys/service.enc.pem?passphrase-file=service.pass\"",
    );
    std::fs::write(t.p("promotion.yaml"), cfg).unwrap();
    t.push();
    // A wrong passphrase fails closed, naming the field; nothing is promoted.
    std::fs::write(t.p("service.pass"), "wrong\n").unwrap();
    let (out, err) = t.expect(&["model", "promote", "radiology", "--to", "registry"], 2);
    assert!(err.contains("field `service_key`") && err.contains("passphrase does not decrypt"), "{out}{err}");
    std::fs::write(t.p("service.pass"), "correct horse\n").unwrap();
    // The config is read from another directory: relative key and passphrase paths follow the config.
    let (code, out, err) = {
        let o = t.cmd(&["model", "promote", "radiology", "--to", "registry"]).current_dir("/").output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{out}{err}");
    let st = t.json(&["model", "status", "radiology"], 0);
    let proms = st["promotions"].as_array().unwrap();
    assert_eq!(proms.len(), 1, "{st}");
    assert_eq!(proms[0]["statement_verified"], true, "{st}");
}
