//! The binary refuses to start, with a message naming the flag, when its serving certificate is missing or expired.

use sovra_kube_testenv::pki::Pki;
use std::process::Command;

fn serve(dir: &std::path::Path, cert: &std::path::Path) -> (i32, String) {
    std::fs::write(dir.join("cluster.yaml"), "zones: []\npools: []\nresidency_classes: []\nnodes: []\n")
        .expect("cluster");
    let out = Command::new(env!("CARGO_BIN_EXE_sovra-admission"))
        .args(["serve", "--config"])
        .arg(dir.join("cluster.yaml"))
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .arg("--listen=127.0.0.1:0")
        .env("KUBECONFIG", dir.join("none"))
        .output()
        .expect("run");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_missing_certificate_stops_the_start_with_the_flag_named() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, err) = serve(dir.path(), &dir.path().join("absent.crt"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-cert") && err.contains("absent.crt") && err.contains("HTTPS"), "{err}");
}

#[test]
fn an_expired_certificate_stops_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    let ck = Pki::new().expect("pki").expired_server().expect("cert");
    std::fs::write(dir.path().join("tls.crt"), ck.cert_pem).expect("cert");
    std::fs::write(dir.path().join("tls.key"), ck.key_pem).expect("key");
    let (code, err) = serve(dir.path(), &dir.path().join("tls.crt"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expired on") && err.contains("--tls-cert"), "{err}");
}

#[test]
fn a_file_that_is_not_a_certificate_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("tls.crt"), "hello").expect("file");
    let (code, err) = serve(dir.path(), &dir.path().join("tls.crt"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a PEM certificate"), "{err}");
}
