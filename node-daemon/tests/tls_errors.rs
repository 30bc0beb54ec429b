//! `sovra-node-daemon run` against a real TLS scheduler on loopback: bad local TLS files stop it at start (exit 2,
//! naming the file), and each connection failure is logged as what it is — not "transport error" (issue 11,
//! item 8).

use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::{Options, Scheduler, serve_with};
use sovra_scheduler::tls::{TlsDir, generate};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}
pools:
  - {id: train-fr, zone: fr, purpose: training}
residency_classes:
  - {name: fr-only, countries: [FR]}
nodes:
  - {name: gpu-1, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100-80GB-HBM3, count: 1, memory_mib: 81920}}
"#;

/// Starts a TLS scheduler with certificates in `dir` for `hosts` (and node certificates gpu-1, gpu-2); returns its
/// address.
fn start(dir: &Path, hosts: &[&str]) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    generate(dir, &hosts, &["gpu-1".into(), "gpu-2".into()]).unwrap();
    let tls = TlsDir(dir.into()).server_config().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let cluster = ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
            let opts = Options {
                heartbeat: Duration::from_millis(500),
                require_daemons: true,
                config_path: None,
                ..Options::default()
            };
            let s = Scheduler::with_options(cluster, PolicySpec::default(), 42, None, opts).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("https://{}", listener.local_addr().unwrap())).unwrap();
            serve_with(listener, s, "t".into(), Some(tls), std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-8gpu.yaml").display().to_string()
}

fn args(server: &str, ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
    let mut a: Vec<String> = ["run", "--backend", "fake", "--fixture"].iter().map(|s| s.to_string()).collect();
    a.push(fixture());
    for (flag, v) in [("--server", server.to_string()), ("--node", "gpu-1".into())] {
        a.extend([flag.to_string(), v]);
    }
    for (flag, p) in [("--ca", ca), ("--cert", cert), ("--key", key)] {
        a.extend([flag.to_string(), p.display().to_string()]);
    }
    a
}

fn node_files(dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    TlsDir(dir.into()).node(node)
}

/// Runs the daemon until it logs its first reason for not reporting (or 15 s pass); returns that log line.
fn first_failure(args: &[String]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sovra-node-daemon"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("not reporting") || line.contains("registered with the scheduler") {
                let _ = tx.send(line);
                return;
            }
            seen.push(line);
        }
        let _ = tx.send(format!("(the daemon ended without that line) {}", seen.join("\n")));
    });
    let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_else(|_| "(no line within 15 s)".into());
    let _ = child.kill();
    let _ = child.wait();
    line
}

fn run_once(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra-node-daemon")).args(args).output().unwrap()
}

#[test]
fn the_right_files_register() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["localhost", "127.0.0.1"]);
    let (cert, key) = node_files(dir.path(), "gpu-1");
    let line = first_failure(&args(&server, &dir.path().join("ca.pem"), &cert, &key));
    assert!(line.contains("registered with the scheduler"), "{line}");
}

#[test]
fn a_garbage_ca_file_stops_the_daemon_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["localhost", "127.0.0.1"]);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let (cert, key) = node_files(dir.path(), "gpu-1");
    let o = run_once(&args(&server, &garbage, &cert, &key));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{}: not a CA certificate", garbage.display())), "{err}");
}

#[test]
fn a_key_that_does_not_match_its_certificate_stops_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["localhost", "127.0.0.1"]);
    let (cert, _) = node_files(dir.path(), "gpu-1");
    let (_, other_key) = node_files(dir.path(), "gpu-2");
    let o = run_once(&args(&server, &dir.path().join("ca.pem"), &cert, &other_key));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{} does not match {}", other_key.display(), cert.display())), "{err}");
}

#[test]
fn a_scheduler_certificate_from_another_ca_is_logged_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["localhost", "127.0.0.1"]);
    generate(other.path(), &[], &["gpu-1".into()]).unwrap();
    let (cert, key) = node_files(other.path(), "gpu-1");
    let line = first_failure(&args(&server, &other.path().join("ca.pem"), &cert, &key));
    assert!(line.contains("its certificate is not signed by the CA in the daemon's CA file"), "{line}");
    assert!(!line.contains("transport error"), "{line}");
}

#[test]
fn a_scheduler_certificate_for_another_host_is_logged_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["scheduler.example.invalid"]);
    let (cert, key) = node_files(dir.path(), "gpu-1");
    let line = first_failure(&args(&server, &dir.path().join("ca.pem"), &cert, &key));
    assert!(line.contains("its certificate is for scheduler.example.invalid and not for 127.0.0.1"), "{line}");
}

#[test]
fn a_node_certificate_from_another_ca_is_logged_as_refused_by_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["localhost", "127.0.0.1"]);
    generate(other.path(), &[], &["gpu-1".into()]).unwrap();
    let (cert, key) = node_files(other.path(), "gpu-1");
    let line = first_failure(&args(&server, &dir.path().join("ca.pem"), &cert, &key));
    assert!(line.contains("refused our client certificate"), "{line}");
}

#[test]
fn a_scheduler_that_is_not_running_is_logged_as_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &[], &["gpu-1".into()]).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (cert, key) = node_files(dir.path(), "gpu-1");
    let line = first_failure(&args(&format!("https://127.0.0.1:{port}"), &dir.path().join("ca.pem"), &cert, &key));
    assert!(line.contains("nothing answers at https://127.0.0.1:"), "{line}");
}
