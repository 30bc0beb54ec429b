//! `sovra` against a real TLS scheduler on loopback: each way TLS can go wrong gets its own message, and none of
//! them is "cannot reach the scheduler" while the scheduler runs (issue 11, item 8).

use std::path::Path;
use std::process::{Command, Output};

const TOKEN: &str = "tls-test-token";

/// Starts a TLS scheduler whose certificates are in `dir` (generated for `hosts`); returns its `https://` address.
fn start_tls_server(dir: &Path, hosts: &[&str]) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let tls = sovra_scheduler::tls::generate(dir, &hosts, &[]).unwrap();
    let server_tls = tls.server_config().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster.yaml");
            let cluster = sovra_domain::ClusterConfig::load(&cluster).unwrap();
            let s = sovra_scheduler::service::Scheduler::new(cluster, Default::default(), 42, None).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("https://{}", listener.local_addr().unwrap())).unwrap();
            let serve = sovra_scheduler::service::serve_with(
                listener,
                s,
                TOKEN.into(),
                Some(server_tls),
                std::future::pending(),
            );
            serve.await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn sovra(server: &str, ca: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["queues"])
        .env("SOVRA_SERVER", server)
        .env("SOVRA_TOKEN", TOKEN)
        .env("SOVRA_CA", ca)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn the_right_ca_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_tls_server(dir.path(), &["localhost", "127.0.0.1"]);
    let o = sovra(&server, &dir.path().join("ca.pem"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_garbage_ca_file_is_named_not_reported_as_an_unreachable_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_tls_server(dir.path(), &["localhost", "127.0.0.1"]);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let o = sovra(&server, &garbage);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains(&format!("--ca {}: not a CA certificate", garbage.display())), "{t}");
    assert!(!t.contains("cannot reach"), "{t}");
}

#[test]
fn a_certificate_for_another_host_name_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_tls_server(dir.path(), &["scheduler.example.invalid"]);
    let o = sovra(&server, &dir.path().join("ca.pem"));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("its certificate is for scheduler.example.invalid and not for 127.0.0.1"), "{t}");
    assert!(!t.contains("cannot reach"), "{t}");
}

#[test]
fn a_server_certificate_from_another_ca_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let server = start_tls_server(dir.path(), &["localhost", "127.0.0.1"]);
    sovra_scheduler::tls::generate(other.path(), &[], &[]).unwrap();
    let o = sovra(&server, &other.path().join("ca.pem"));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("its certificate is not signed by the CA in --ca"), "{t}");
    assert!(!t.contains("cannot reach"), "{t}");
}

#[test]
fn a_server_that_is_not_running_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    sovra_scheduler::tls::generate(dir.path(), &[], &[]).unwrap();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = sovra(&format!("https://127.0.0.1:{port}"), &dir.path().join("ca.pem"));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("cannot reach the scheduler: nothing answers at"), "{t}");
    assert!(t.contains("sovra-scheduler serve"), "{t}");
}

#[test]
fn a_plain_http_client_against_a_tls_server_is_told_to_use_https() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_tls_server(dir.path(), &["localhost", "127.0.0.1"]);
    let o = sovra(&server.replace("https://", "http://"), &dir.path().join("ca.pem"));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("use an https:// address with --ca"), "{t}");
}
