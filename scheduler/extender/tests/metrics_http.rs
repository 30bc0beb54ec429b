//! `GET /metrics` over loopback HTTP: the counters prometheus-client writes, served with the OpenMetrics content
//! type that matches the text (an OpenMetrics body labelled `text/plain; version=0.0.4` makes Prometheus parse the
//! `_total` samples apart from their `# TYPE` line).

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use sovra_extender::extender::Binder;

#[tokio::test]
async fn metrics_are_served_as_openmetrics_with_every_verb_counted() {
    let (addr, _srv) = start(extender(Binder::DryRun)).await;
    let (s, _) = post(addr, "/sovra/filter", fixture("filter_pod_missing.json")).await;
    assert_eq!(s, 200);
    let (s, _) = post(addr, "/sovra/bind", b"{\"Pod\":[".to_vec()).await;
    assert_eq!(s, 400);

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/metrics").header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text; version=1.0.0"), "{ct}");
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for want in [
        "# TYPE sovra_extender_requests counter\n",
        "sovra_extender_requests_total{verb=\"filter\"} 1\n",
        "sovra_extender_requests_total{verb=\"bind\"} 0\n",
        "sovra_extender_bad_requests_total 1\n",
        "sovra_extender_bind_errors_total 0\n",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
    assert!(body.ends_with("# EOF\n"), "{body}");
}
