//! Checklist 12: HTTPS with rustls, and mutual TLS as kube-scheduler's `tlsConfig` (`caFile`, `certFile`,
//! `keyFile`) uses it: a client with a certificate from the configured CA is served, one without is refused.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sovra_extender::extender::Binder;
use sovra_extender::server;
use std::net::SocketAddr;
use std::sync::Arc;

fn tls_path(name: &str) -> std::path::PathBuf {
    fixture_path(&format!("tls/{name}"))
}

async fn start_tls(client_ca: bool) -> (SocketAddr, server::Running) {
    let ca = tls_path("ca.crt");
    let cfg = server::tls_config(&tls_path("server.crt"), &tls_path("server.key"), client_ca.then_some(ca.as_path()))
        .expect("TLS config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::serve(listener, server::router(extender(Binder::DryRun), "/", 1 << 20), Some(cfg)).unwrap();
    (running.local_addr, running)
}

/// POST /filter over TLS; `Err` when the handshake or the request fails.
async fn post_tls(addr: SocketAddr, client_cert: bool) -> Result<(u16, Vec<u8>), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(tls_path("ca.crt")).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = if client_cert {
        let certs = vec![CertificateDer::from_pem_file(tls_path("client.crt")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(tls_path("client.key")).unwrap();
        builder.with_client_auth_cert(certs, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::post("/filter")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(fixture("filter_cache_mode.json"))))
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes().to_vec();
    Ok((status, body))
}

#[tokio::test]
async fn https_serves_filter() {
    let (addr, _srv) = start_tls(false).await;
    let (status, body) = post_tls(addr, false).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["NodeNames"], serde_json::json!(["gpu-fr-1", "gpu-nl-1"]));
}

#[tokio::test]
async fn mtls_serves_a_client_with_a_certificate_and_refuses_one_without() {
    let (addr, _srv) = start_tls(true).await;
    let (status, body) = post_tls(addr, true).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["NodeNames"], serde_json::json!(["gpu-fr-1", "gpu-nl-1"]));
    let refused = post_tls(addr, false).await;
    assert!(refused.is_err(), "a client without a certificate must be refused: {refused:?}");
}

#[test]
fn tls_config_errors_name_the_flag() {
    let e = server::tls_config(&tls_path("missing.crt"), &tls_path("server.key"), None).unwrap_err();
    assert!(e.starts_with("--tls-cert"), "{e}");
    let e = server::tls_config(&tls_path("server.crt"), &tls_path("ca.crt"), None).unwrap_err();
    assert!(e.starts_with("--tls-key"), "{e}");
    let e =
        server::tls_config(&tls_path("server.crt"), &tls_path("server.key"), Some(&tls_path("nope.crt"))).unwrap_err();
    assert!(e.starts_with("--tls-client-ca"), "{e}");
}
