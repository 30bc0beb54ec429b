//! The chaos suite, scheduler side (docs/receipts.md, "Chaos suite"): attempts to move work across a border —
//! a node claiming a zone it is not enrolled in, a reload moving a node to another zone, a placement exception
//! dated ahead of the scheduler's clock, one with a forged signature — each must be refused, audited (an entry
//! of kind `refusal` in the hash-chained log) and alerted (`sovra_sovereignty_refusals_total{attempt}` and an
//! event line). Over real gRPC and mutual TLS. The promotion side is tests/chaos.rs.

use sovra_api::v1::admin_client::AdminClient;
use sovra_api::v1::nodes_client::NodesClient;
use sovra_api::v1::{
    EventsRequest, GpuReport, GrantExceptionRequest, NodeInventory, NodeReport, Register, ReloadRequest,
    SchedulerAuditRequest, node_report,
};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::exceptions::{BreakGlass, EXCEPTION_TYPE, EXCEPTION_V1};
use sovra_scheduler::service::{Options, Scheduler, serve_with};
use sovra_scheduler::tls::{TlsDir, generate};
use std::path::Path;
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR, certifications: [HDS]}
  - {id: us-de, country: DE, region: Frankfurt, jurisdiction: EU, operator: h, operator_hq: US}
pools:
  - {id: train-fr, zone: fr, purpose: training}
  - {id: train-de, zone: us-de, purpose: training}
residency_classes:
  - {name: fr-health, countries: [FR], certifications: [HDS]}
nodes:
  - {name: n1, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100-80GB-HBM3, count: 2, memory_mib: 81559}}
  - {name: n2, pool: train-de, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100-80GB-HBM3, count: 2, memory_mib: 81559}}
"#;

const TOKEN: &str = "chaos";

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

async fn channel(addr: &str, dir: &Path, node: Option<&str>) -> Channel {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(dir.join("ca.pem")).unwrap()));
    if let Some(n) = node {
        let (c, k) = TlsDir(dir.into()).node(n);
        tls = tls.identity(Identity::from_pem(std::fs::read(c).unwrap(), std::fs::read(k).unwrap()));
    }
    Endpoint::from_shared(addr.to_string()).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
}

/// What one attempt left behind: refused (by the caller), audited, alerted (metric and event).
struct Seen {
    audited: bool,
    metric: bool,
    event: bool,
}

async fn seen(s: &Scheduler, admin: &mut AdminClient<Channel>, attempt: &str, count: u64) -> Seen {
    let mut stream = admin.audit_export(authed(SchedulerAuditRequest { from: 0 })).await.unwrap().into_inner();
    let mut audited = 0;
    while let Some(line) = stream.message().await.unwrap() {
        let v: serde_json::Value = serde_json::from_str(&line.json).unwrap();
        if v["kind"] == "refusal" && v["details"]["attempt"] == attempt {
            audited += 1;
        }
    }
    let metrics = s.metrics_text().unwrap();
    let metric = metrics.contains(&format!("sovra_sovereignty_refusals_total{{attempt=\"{attempt}\"}} {count}"));
    let events = admin.events(authed(EventsRequest { limit: 1000 })).await.unwrap().into_inner().events;
    let event = events.iter().filter(|e| e.starts_with(&format!("REFUSED {attempt}: "))).count() as u64 == count;
    Seen { audited: audited == count, metric, event }
}

fn report(attempt: &str, refused: bool, s: &Seen) {
    println!("chaos: {attempt:<28} refused={refused} audited={} alerted={}", s.audited, s.metric && s.event);
    assert!(
        refused && s.audited && s.metric && s.event,
        "{attempt}: refused {refused}, audited {}, metric {}, event {}",
        s.audited,
        s.metric,
        s.event
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_to_move_work_across_a_border_is_refused_audited_and_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(&d.join("tls"), &[], &["n1".into()]).unwrap();
    let file = d.join("cluster.yaml");
    std::fs::write(&file, CLUSTER).unwrap();
    let mut keys = Vec::new();
    for name in ["alice", "bob"] {
        let (private, public) = sovra_oms::keys::generate_p256().unwrap();
        std::fs::write(d.join(format!("{name}.pub.pem")), public).unwrap();
        keys.push(sovra_oms::keys::SigningKey::from_pem(&private).unwrap());
    }
    std::fs::write(
        d.join("bg.yaml"),
        "approvers:\n  - {name: alice, public_key: alice.pub.pem}\n  - {name: bob, public_key: bob.pub.pem}\nrequired: 2\n",
    )
    .unwrap();
    let opts = Options {
        config_path: Some(file.clone()),
        break_glass: Some(std::sync::Arc::new(BreakGlass::load(&d.join("bg.yaml")).unwrap())),
        ..Default::default()
    };
    let cluster = ClusterConfig::load(&file).unwrap();
    let s = Scheduler::with_options(cluster, PolicySpec::default(), 42, None, opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("https://{}", listener.local_addr().unwrap());
    let tls = Some(TlsDir(d.join("tls")).server_config().unwrap());
    let server = s.clone();
    tokio::spawn(async move { serve_with(listener, server, TOKEN.into(), tls, std::future::pending()).await });
    let mut admin = AdminClient::new(channel(&addr, &d.join("tls"), None).await);

    // 1. A node claiming a zone: n1 (enrolled in fr) says it is in us-de.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let inv = NodeInventory {
        backend: "test".into(),
        backend_ready: true,
        gpus: (0..2)
            .map(|i| GpuReport {
                index: i,
                uuid: format!("GPU-{i}"),
                model: "H100-80GB-HBM3".into(),
                memory_total_mib: 81559,
                healthy: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let reg = Register { node: "n1".into(), claimed_zone: "us-de".into(), inventory: Some(inv), ..Default::default() };
    tx.send(NodeReport { body: Some(node_report::Body::Register(reg)) }).await.unwrap();
    let mut nodes = NodesClient::new(channel(&addr, &d.join("tls"), Some("n1")).await);
    let refused = match nodes.report(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner().message().await.is_err_and(|e| e.code() == tonic::Code::PermissionDenied),
        Err(e) => e.code() == tonic::Code::PermissionDenied,
    };
    report("node-zone-claim", refused, &seen(&s, &mut admin, "node-zone-claim", 1).await);

    // 2. A reload moving a node: n1 into the US-owned zone's pool.
    std::fs::write(&file, CLUSTER.replace("{name: n1, pool: train-fr,", "{name: n1, pool: train-de,")).unwrap();
    let r = admin.reload(authed(ReloadRequest {})).await;
    let refused = r.is_err_and(|e| e.message().contains("moves node n1 from zone fr to zone us-de"));
    report("reload-moves-node", refused, &seen(&s, &mut admin, "reload-moves-node", 1).await);
    std::fs::write(&file, CLUSTER).unwrap();

    // 3. Clock skew on an exception: dated an hour ahead of the scheduler's clock, signed by both approvers;
    // 4. a forged one: the payload changed after signing (the signatures no longer verify).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let payload = |nb: u64| {
        serde_json::json!({"_type": EXCEPTION_V1, "job": 1, "zone": "us-de", "requirement": "country",
                           "reason": "chaos", "notBefore": nb, "expiresAt": nb + 3600})
    };
    let mut skewed = sovra_oms::multisig::unsigned(EXCEPTION_TYPE, payload(now + 3600).to_string().as_bytes());
    let mut forged = sovra_oms::multisig::unsigned(EXCEPTION_TYPE, payload(now).to_string().as_bytes());
    for k in &keys {
        sovra_oms::multisig::add_signature(&mut skewed, k).unwrap();
        sovra_oms::multisig::add_signature(&mut forged, k).unwrap();
    }
    forged.payload =
        sovra_oms::multisig::unsigned(EXCEPTION_TYPE, payload(now).to_string().replace("chaos", "forged").as_bytes())
            .payload;
    let grant =
        |env: &sovra_oms::dsse::Envelope| GrantExceptionRequest { envelope_json: serde_json::to_string(env).unwrap() };
    let r = admin.grant_exception(authed(grant(&skewed))).await;
    let refused = r.is_err_and(|e| e.message().contains("ahead of the scheduler's clock"));
    let r2 = admin.grant_exception(authed(grant(&forged))).await;
    let refused2 = r2.is_err_and(|e| e.message().contains("does not verify over the payload"));
    let s2 = seen(&s, &mut admin, "placement-exception", 2).await;
    report("exception-clock-skew", refused, &s2);
    report("exception-forged-signature", refused2, &s2);

    // The log with its refusals is still one verified chain.
    let mut stream = admin.audit_export(authed(SchedulerAuditRequest { from: 0 })).await.unwrap().into_inner();
    let first: serde_json::Value = serde_json::from_str(&stream.message().await.unwrap().unwrap().json).unwrap();
    let head: sovra_audit::AuditHead = serde_json::from_value(first["head"].clone()).unwrap();
    let mut entries = Vec::new();
    while let Some(line) = stream.message().await.unwrap() {
        entries.push(serde_json::from_str::<sovra_audit::AuditEntry>(&line.json).unwrap());
    }
    assert_eq!(entries.len(), 4, "one entry per refusal");
    sovra_audit::verify_segment(&entries, &head).unwrap();
}
