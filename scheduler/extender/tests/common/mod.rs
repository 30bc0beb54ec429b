//! Shared helpers of the extender's integration tests: the fixture cluster, a server on a loopback port, a tiny
//! HTTP client, and a model of how kube-scheduler reads extender answers (the protocol document's rules).
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The path of a fixture file.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The bytes of a fixture file.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The fixture cluster.
pub fn cluster() -> ClusterConfig {
    ClusterConfig::load(&fixture_path("cluster.yaml")).expect("fixture cluster loads")
}

/// An extender over the fixture cluster.
pub fn extender(binder: Binder) -> Arc<Extender> {
    let cache = Arc::new(Cache::new(cluster()).expect("cache"));
    Arc::new(Extender::new(cache, PolicySpec::default(), 0, binder))
}

/// Serves `ext` on a loopback port over plain HTTP.
pub async fn start(ext: Arc<Extender>) -> (SocketAddr, server::Running) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::serve(listener, server::router(ext, "/sovra", 1 << 20), None).unwrap();
    (running.local_addr, running)
}

/// One POST on a fresh connection: (status, body).
pub async fn post(addr: SocketAddr, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

/// One GET: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path).header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, String::from_utf8(body).unwrap())
}

/// How kube-scheduler applies one extender's filter answer (`findNodesThatPassExtenders`), per the protocol
/// document §3.1: `Ok(feasible names)`, `Err(reason)` when the attempt fails, or the input unchanged when an
/// ignorable extender errs.
pub fn scheduler_applies_filter(
    input: &[&str],
    status: u16,
    body: &[u8],
    ignorable: bool,
) -> Result<Vec<String>, String> {
    let keep = || Ok(input.iter().map(|s| s.to_string()).collect());
    if status != 200 {
        return if ignorable { keep() } else { Err(format!("code {status}")) };
    }
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return if ignorable { keep() } else { Err(e.to_string()) },
    };
    // Go matches keys case-insensitively.
    let field = |k: &str| {
        v.as_object().and_then(|o| o.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone()))
    };
    if let Some(e) = field("Error").and_then(|e| e.as_str().map(String::from))
        && !e.is_empty()
    {
        return if ignorable { keep() } else { Err(e) };
    }
    if let Some(names) = field("NodeNames").filter(|n| !n.is_null()) {
        let names: Vec<String> = names.as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
        for n in &names {
            if !input.contains(&n.as_str()) {
                return Err(format!("extender returned node {n} that was not in the input"));
            }
        }
        return Ok(names);
    }
    if let Some(nodes) = field("Nodes").filter(|n| !n.is_null()) {
        return Ok(nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
            .collect());
    }
    Ok(vec![]) // both null: zero nodes pass
}

/// A JSON value from bytes.
pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}
