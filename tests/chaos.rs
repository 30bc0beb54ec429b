//! The chaos suite, promotion side (docs/receipts.md, "Chaos suite"), over the real promotion service and a real
//! scheduler: forged placement receipts as a model's provenance, a promotion into a zone its class fails, a pull
//! from a zone the model was never promoted to, and a break-glass exception dated ahead of the service's clock.
//! Each must be refused, audited (the registry's log: `denial` or `refusal`) and alerted
//! (`sovra_promotion_refusals_total{attempt}` on the service's `/metrics`). The scheduler side is
//! scheduler/tests/chaos.rs.

#[path = "support/scheduler.rs"]
mod scheduler;
#[path = "support/service.rs"]
mod service;
#[path = "support/registry_tour.rs"]
mod support;

use serde_json::Value;
use service::*;
use std::io::{Read, Write};
use support::Tour;

fn sched(t: &Tour, server: &str, args: &[&str]) -> String {
    let (code, out, err) = scheduler::run(t.cmd(args), server);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

fn metrics(addr: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    body
}

/// The registry's audit entries of `kind` whose details mention `needle` (read over the service's AuditExport,
/// as an auditor).
fn audited(t: &Tour, s: &Service, kind: &str, needle: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let entries: Vec<Value> = rt.block_on(async {
        let req = authed("audit-ci", sovra_api::v1::AuditExportRequest {});
        let mut stream = client(t, s).await.audit_export(req).await.unwrap().into_inner();
        let mut out = Vec::new();
        while let Some(e) = stream.message().await.unwrap() {
            out.push(serde_json::from_str(&e.json).unwrap());
        }
        out
    });
    entries.iter().filter(|e| e["kind"] == kind && e["details"].to_string().contains(needle)).count()
}

type Client = sovra_api::v1::promotion_client::PromotionClient<tonic::transport::Channel>;

/// `msg` with the bearer token of the service's token client `who`.
fn authed<T>(who: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {}", token(who)).parse().unwrap());
    r
}

async fn client(t: &Tour, s: &Service) -> Client {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let ca = Certificate::from_pem(std::fs::read(t.p("tls/ca.pem")).unwrap());
    let tls = ClientTlsConfig::new().ca_certificate(ca);
    let ch = Endpoint::from_shared(s.url.clone()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    Client::new(ch)
}

fn report(attempt: &str, refused: bool, audited: bool, alerted: bool) {
    println!("chaos: {attempt:<28} refused={refused} audited={audited} alerted={alerted}");
    assert!(refused && audited && alerted, "{attempt}: refused {refused}, audited {audited}, alerted {alerted}");
}

/// Pushes a new version of radiology (content `n`, class fr-health) with `extra` flags; the push's JSON.
fn push(t: &Tour, s: &Service, n: u8, extra: &[&str]) -> Value {
    std::fs::write(t.p("model/weights/w0.bin"), vec![n; 1000]).unwrap();
    t.ok(&["model", "sign", "model", "--private-key", "keys/trainer.pem", "--signature", "model.sig"]);
    let mut args = vec!["model", "push", "radiology", "model", "--signature", "model.sig", "--residency-class"];
    args.extend(["fr-health", "--metrics", "metrics.json", "-o", "json"]);
    args.extend(extra);
    serde_json::from_str(&ok(as_token(t, s, "pusher-ci", &args))).unwrap()
}

#[test]
fn every_attempt_to_move_a_model_across_a_border_is_refused_audited_and_alerted() {
    let t = setup();
    // Provenance must be proven by receipts signed by keys/scheduler.pem (examples/promotion.yaml as shipped).
    let cfg = std::fs::read_to_string(t.p("service.yaml")).unwrap();
    std::fs::write(t.p("service.yaml"), cfg.replace("require_receipts: false", "require_receipts: true")).unwrap();
    let (s, maddr) = start_with_metrics(&t);
    let key = std::sync::Arc::new(sovra_oms::keys::SigningKey::from_pem_file(&t.p("keys/scheduler.pem")).unwrap());
    let server = scheduler::start(sovra_scheduler::service::Options { receipt_key: Some(key), ..Default::default() });

    // A training job runs in fr-par-secnum; its receipts.
    std::fs::write(
        t.p("train.yaml"),
        "name: train\nkind: training\nresidency: fr-health\nreplicas: 2\nresources: {gpus: 8, cpu_milli: 1000, \
         memory_mib: 4096}\n",
    )
    .unwrap();
    let job: Value = serde_json::from_str(&sched(&t, &server, &["submit", "train.yaml", "-o", "json"])).unwrap();
    let id = job["id"].as_u64().unwrap().to_string();
    sched(&t, &server, &["set-state", &id, "running"]);
    sched(&t, &server, &["set-state", &id, "succeeded"]);
    sched(&t, &server, &["job", "receipts", &id, "-o", "json", "--out", "receipts.json"]);

    // 1. Forged receipts: one replica's zone rewritten after signing.
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(t.p("receipts.json")).unwrap()).unwrap();
    let mut forged = doc.clone();
    {
        use base64::Engine as _;
        let b64 = &base64::engine::general_purpose::STANDARD;
        let env = &mut forged["receipts"][0]["envelope"];
        let mut st: Value = serde_json::from_slice(&b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
        st["predicate"]["zone"]["id"] = "de-fra-c5".into();
        env["payload"] = b64.encode(st.to_string()).into();
    }
    std::fs::write(t.p("forged.json"), forged.to_string()).unwrap();
    push(&t, &s, 1, &["--receipts", "forged.json"]);
    let (code, out, err) = as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "registry"]);
    let refused = code == 1 && format!("{out}{err}").contains("training_zone");
    let m = metrics(&maddr);
    report(
        "forged-receipts",
        refused,
        audited(&t, &s, "denial", "training_zone") == 1,
        m.contains("sovra_promotion_refusals_total{attempt=\"promotion-denied:training_zone\"} 1"),
    );

    // 2. A promotion into a zone the class fails: the genuine receipts, then inference in the US-owned zone.
    let pushed = push(&t, &s, 2, &["--receipts", "receipts.json"]);
    let digest = pushed["digest"].as_str().unwrap().to_string();
    ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "registry"]));
    for (who, k) in [("alice-ci", "keys/alice.pem"), ("bob-ci", "keys/bob.pem")] {
        ok(as_cert(&t, &s, who, &["model", "approve", "radiology", "--to", "inference", "--key", k]));
    }
    let (code, out, err) = as_token(
        &t,
        &s,
        "promoter-ci",
        &["model", "promote", "radiology", "--to", "inference", "--zone", "de-fra-hyperscaler"],
    );
    let refused = code == 1 && format!("{out}{err}").contains("residency");
    report(
        "promotion-into-failing-zone",
        refused,
        audited(&t, &s, "denial", "de-fra-hyperscaler") == 1,
        metrics(&maddr).contains("sovra_promotion_refusals_total{attempt=\"promotion-denied:residency\"} 1"),
    );

    // 3. A pull from a zone it was never promoted to.
    let (code, out, err) =
        as_token(&t, &s, "pusher-ci", &["model", "pull", "radiology", "pulled", "--zone", "de-fra-hyperscaler"]);
    report(
        "pull-into-foreign-zone",
        code != 0 && format!("{out}{err}").contains("de-fra-hyperscaler"),
        audited(&t, &s, "refusal", "pull-refused") == 1,
        metrics(&maddr).contains("sovra_promotion_refusals_total{attempt=\"pull-refused\"} 1"),
    );

    // 4. Clock skew on an exception: an admin's exception granted an hour in the future.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let admin = sovra_oms::keys::SigningKey::from_pem_file(&t.p("keys/secops.pem")).unwrap();
    let (env, _) = sovra_promotion::grants::sign_exception(
        "radiology",
        &digest,
        "residency",
        "skewed",
        "secops",
        &admin,
        now + 3600,
        600,
    )
    .unwrap();
    std::fs::write(t.p("skewed.json"), serde_json::to_string(&env).unwrap()).unwrap();
    let refused = grant_raw(&t, &s, &serde_json::to_string(&env).unwrap());
    report(
        "exception-clock-skew",
        refused.contains("in the future"),
        audited(&t, &s, "refusal", "exception-refused") == 1,
        metrics(&maddr).contains("sovra_promotion_refusals_total{attempt=\"exception-refused\"} 1"),
    );
}

/// Sends a pre-signed exception envelope to the service's GrantException as the exception admin; the refusal.
fn grant_raw(t: &Tour, s: &Service, envelope_json: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let req = authed("secops-ci", sovra_api::v1::SignedGrant { envelope_json: envelope_json.into() });
        match client(t, s).await.grant_exception(req).await {
            Ok(r) => format!("granted: {:?}", r.into_inner()),
            Err(e) => e.message().to_string(),
        }
    })
}
