//! The promotion service under test: the real `sovra-promotion serve` binary on a loopback port with TLS, a tour
//! with certificates and token clients, and the `sovra` CLI run against it with `--server`.
#![allow(dead_code)]

use crate::support::Tour;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn hash(t: &str) -> String {
    Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub const TOKENS: [(&str, &str, &str); 5] = [
    ("pusher-ci", "tok-pusher-0123456789", "[pusher, viewer]"),
    ("promoter-ci", "tok-promoter-0123456789", "[promoter, viewer]"),
    ("secops-ci", "tok-admin-0123456789", "[exception-admin]"),
    ("audit-ci", "tok-audit-0123456789", "[auditor]"),
    ("withdraw-ci", "tok-withdraw-0123456789", "[withdrawer, viewer]"),
];

pub fn token(name: &str) -> &'static str {
    TOKENS.iter().find(|t| t.0 == name).unwrap().1
}

/// The running service; killed on drop.
pub struct Service {
    pub child: Child,
    pub url: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn server_binary() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_sovra")).with_file_name("sovra-promotion");
    assert!(
        p.exists(),
        "{} is not built: run `cargo build -p sovra-promotion-server` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// A tour with TLS certificates (CA, server, client certificates for alice-ci, bob-ci and nobody), a second CA,
/// and a promotion config with a `service:` section.
pub fn setup() -> Tour {
    let t = Tour::new();
    sovra_scheduler::tls::generate(&t.p("tls"), &[], &["alice-ci".into(), "bob-ci".into(), "nobody".into()]).unwrap();
    sovra_scheduler::tls::generate(&t.p("other-ca"), &[], &[]).unwrap();
    let mut cfg = std::fs::read_to_string(t.p("promotion.yaml")).unwrap();
    cfg.push_str("service:\n  tls: {cert: tls/server.pem, key: tls/server-key.pem, client_ca: tls/ca.pem}\n");
    cfg.push_str(&format!("  staging: {}\n  clients:\n", t.p("staging").display()));
    cfg.push_str("    - {name: alice-ci, cert: alice-ci, roles: [approver]}\n");
    cfg.push_str("    - {name: bob-ci, cert: bob-ci, roles: [approver]}\n");
    cfg.push_str("    - {name: nobody, cert: nobody, roles: [viewer]}\n");
    for (name, tok, roles) in TOKENS {
        cfg.push_str(&format!("    - {{name: {name}, token_sha256: {}, roles: {roles}}}\n", hash(tok)));
    }
    std::fs::write(t.p("service.yaml"), cfg).unwrap();
    t
}

pub fn start(t: &Tour) -> Service {
    start_with(t, &[]).0
}

/// [`start`] with `--metrics-listen` too: the service and its `/metrics` address (`host:port`).
pub fn start_with_metrics(t: &Tour) -> (Service, String) {
    let (s, mut lines) = start_with(t, &["--metrics-listen", "127.0.0.1:0"]);
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let addr = line.trim().trim_start_matches("metrics on http://").trim_end_matches("/metrics").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "no metrics line: {line:?}");
    // Keep reading what it prints, so that its stdout never closes under it.
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    (s, addr)
}

fn start_with(t: &Tour, extra: &[&str]) -> (Service, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(server_binary())
        .current_dir(t.p(""))
        .args(["serve", "--listen", "127.0.0.1:0", "--registry"])
        .arg(t.p("service-registry"))
        .arg("--promotion-config")
        .arg(t.p("service.yaml"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    lines.read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().replace("127.0.0.1", "localhost");
    assert!(url.starts_with("https://localhost:"), "no listening line: {line:?}");
    (Service { child, url }, lines)
}

/// `sovra ARGS` against the service as a token client.
pub fn as_token(t: &Tour, s: &Service, client: &str, args: &[&str]) -> (i32, String, String) {
    run(t, s, &["--token", token(client)], args)
}

/// `sovra ARGS` against the service as a certificate client.
pub fn as_cert(t: &Tour, s: &Service, client: &str, args: &[&str]) -> (i32, String, String) {
    let (c, k) = (t.p(&format!("tls/nodes/{client}.pem")), t.p(&format!("tls/nodes/{client}-key.pem")));
    run(t, s, &["--client-cert", c.to_str().unwrap(), "--client-key", k.to_str().unwrap()], args)
}

pub fn run(t: &Tour, s: &Service, auth: &[&str], args: &[&str]) -> (i32, String, String) {
    let ca = t.p("tls/ca.pem");
    let o = t
        .cmd(args)
        .args(["--server", &s.url, "--ca", ca.to_str().unwrap()])
        .args(auth)
        // The local registry must not be touched in server mode.
        .env("SOVRA_REGISTRY", t.p("no-local-registry"))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

pub fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "stdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

pub fn push_args() -> Vec<&'static str> {
    vec![
        "model",
        "push",
        "radiology",
        "model",
        "--signature",
        "model.sig",
        "--residency-class",
        "fr-health",
        "--provenance",
        "provenance.yaml",
        "--metrics",
        "metrics.json",
    ]
}
