//! `/metrics` of the scheduler over a loopback socket: prometheus-client writes OpenMetrics, and the endpoint says
//! so. Labelled `text/plain; version=0.0.4` (as it was), Prometheus would read `sovra_placements_total` apart from
//! its `# TYPE sovra_placements counter` line.

use sovra_scheduler::service::{Scheduler, serve_metrics};

#[tokio::test]
async fn metrics_are_labelled_openmetrics_and_keep_their_names() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml");
    let cluster = sovra_domain::ClusterConfig::load(&file).unwrap();
    let s = Scheduler::new(cluster, Default::default(), 42, None).unwrap();
    let m = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = m.local_addr().unwrap();
    tokio::spawn(serve_metrics(m, s, std::future::pending()));

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    let ct = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
        .unwrap_or_default();
    assert!(ct.starts_with("application/openmetrics-text; version=1.0.0"), "{head}");
    for want in [
        "# TYPE sovra_placements counter\n",
        "sovra_placements_total 0\n",
        "sovra_submits_total 0\n",
        "sovra_node_reports_total 0\n",
        "sovra_nodes{state=\"ready\"} ",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
    assert!(body.ends_with("# EOF\n"), "{body}");
}
