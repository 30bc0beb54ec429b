//! The promotion service over real sockets: the real `sovra-promotion serve` binary (built beside `sovra` by
//! `cargo test --workspace`, or `cargo build -p sovra-promotion-server`) and the real `sovra` CLI with `--server`.
//!
//! CI's flow with separate processes per role (two approvers with their own keys and client certificates, a
//! promoter, a client without the role); push and pull round-trip byte-exact; corrupt uploads refused with nothing
//! visible; a service that is down, or a CA that did not sign it, fails closed; concurrent promotions of one
//! version; and local mode without the service's private key.

#[path = "support/service.rs"]
mod service;
#[path = "support/registry_tour.rs"]
mod support;

use serde_json::Value;
use service::*;
use std::process::{Child, Command, Stdio};
use support::Tour;

#[test]
fn ci_flow_with_separate_clients_and_roles() {
    let t = setup();
    // Bigger than one stream chunk, so files cross chunk boundaries.
    std::fs::write(t.p("model/weights/w1.bin"), (0..3_000_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>())
        .unwrap();
    t.ok(&["model", "sign", "model", "--private-key", "keys/trainer.pem", "--signature", "model.sig"]);
    let s = start(&t);
    let pushed = ok(as_token(&t, &s, "pusher-ci", &push_args()));
    assert!(pushed.contains("Pushed radiology@"), "{pushed}");
    // A pusher may not promote: PERMISSION_DENIED names the role.
    let (code, _, err) = as_token(&t, &s, "pusher-ci", &["model", "promote", "radiology", "--to", "registry"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`promoter`") && err.contains("pusher-ci"), "{err}");
    ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "registry"]));
    // Two approvers, each in its own process with its own key and client certificate.
    let a =
        as_cert(&t, &s, "alice-ci", &["model", "approve", "radiology", "--to", "inference", "--key", "keys/alice.pem"]);
    assert!(ok(a).contains("by alice"));
    ok(as_cert(&t, &s, "bob-ci", &["model", "approve", "radiology", "--to", "inference", "--key", "keys/bob.pem"]));
    // A client without the role is refused, naming it.
    let (code, _, err) =
        as_cert(&t, &s, "nobody", &["model", "approve", "radiology", "--to", "inference", "--key", "keys/carol.pem"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`approver`") && err.contains("nobody"), "{err}");
    let (code, _, err) = as_cert(&t, &s, "nobody", &["model", "promote", "radiology", "--to", "inference"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`promoter`"), "{err}");
    // An approver signing with someone else's key gets nothing recorded.
    let (code, _, err) = as_cert(
        &t,
        &s,
        "alice-ci",
        &["model", "approve", "radiology", "--to", "inference", "--key", "keys/secops.pem"],
    );
    assert_eq!(code, 1, "{err}");
    // The dry run explains; then the promotion.
    let dry = as_token(
        &t,
        &s,
        "promoter-ci",
        &["model", "promote", "radiology", "--to", "inference", "--dry-run", "--explain", "-o", "json"],
    );
    let d: Value = serde_json::from_str(&ok(dry)).unwrap();
    assert_eq!(d["status"], "would-promote");
    assert_eq!(d["input"]["approvals"]["valid"].as_array().unwrap().len(), 2, "{d}");
    let out =
        ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "inference", "-o", "json"]));
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["status"], "promoted");
    assert_eq!(p["to"], "fr-par-secnum/inference");
    // Status through the service: every statement verifies.
    let st: Value =
        serde_json::from_str(&ok(as_token(&t, &s, "pusher-ci", &["model", "status", "radiology", "-o", "json"])))
            .unwrap();
    let proms = st["promotions"].as_array().unwrap();
    assert_eq!(proms.len(), 2);
    assert!(proms.iter().all(|p| p["statement_verified"] == true), "{st}");
    // Pull round-trips byte-exact, bundle included.
    ok(as_token(&t, &s, "pusher-ci", &["model", "pull", "radiology", "pulled", "--stage", "inference"]));
    for f in ["config.json", "weights/w0.bin", "weights/w1.bin"] {
        assert_eq!(
            std::fs::read(t.p(&format!("pulled/{f}"))).unwrap(),
            std::fs::read(t.p(&format!("model/{f}"))).unwrap()
        );
    }
    assert_eq!(std::fs::read(t.p("pulled.sig")).unwrap(), std::fs::read(t.p("model.sig")).unwrap());
    t.ok(&["model", "verify", "pulled", "--signature", "pulled.sig", "--public-key", "keys/trainer.pub.pem"]);
    // The audit log names every caller.
    let (code, out, err) = as_token(&t, &s, "audit-ci", &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Audit log intact"), "{out}");
    let log: Value = serde_json::from_str(&ok(as_token(&t, &s, "audit-ci", &["audit", "log", "-o", "json"]))).unwrap();
    let actors: Vec<&str> = log.as_array().unwrap().iter().filter_map(|e| e["actor"].as_str()).collect();
    assert!(actors.contains(&"alice-ci") && actors.contains(&"bob-ci"), "{actors:?}");
    let pull = log.as_array().unwrap().iter().rev().find(|e| e["kind"] == "pull").expect("the pull is audited");
    assert_eq!(
        (&pull["actor"], &pull["details"]["data_zone"]),
        (&"pusher-ci".into(), &"fr-par-secnum/inference".into())
    );
    let (code, _, err) = as_token(&t, &s, "promoter-ci", &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(err.contains("`auditor`"), "{err}");
    // The local registry was never created.
    assert!(!t.p("no-local-registry").exists());
}

#[test]
fn exceptions_are_signed_by_the_admin_and_recorded_by_the_service() {
    let t = setup();
    let s = start(&t);
    ok(as_token(&t, &s, "pusher-ci", &push_args()));
    let grant = [
        "exception",
        "grant",
        "--model",
        "radiology",
        "--gate",
        "approvals",
        "--ttl",
        "1h",
        "--reason",
        "incident 9",
        "--key",
    ];
    // Not an admin key: refused on the client (bad input), nothing sent.
    let mut a = grant.to_vec();
    a.push("keys/alice.pem");
    assert_eq!(as_token(&t, &s, "secops-ci", &a).0, 2);
    // The admin's key, but a client without the role.
    let mut a = grant.to_vec();
    a.push("keys/secops.pem");
    let (code, _, err) = as_token(&t, &s, "pusher-ci", &a);
    assert_eq!(code, 1);
    assert!(err.contains("`exception-admin`"), "{err}");
    let out = ok(as_token(&t, &s, "secops-ci", &a));
    assert!(out.contains("granted by secops"), "{out}");
    let st: Value =
        serde_json::from_str(&ok(as_token(&t, &s, "pusher-ci", &["model", "status", "radiology", "-o", "json"])))
            .unwrap();
    assert_eq!(st["exceptions"][0]["live"], true, "{st}");
}

#[test]
fn corrupt_uploads_are_refused_and_nothing_is_visible() {
    let t = setup();
    let s = start(&t);
    // The bundle and the files disagree: a file changed after signing.
    std::fs::write(t.p("model/weights/w0.bin"), b"tampered").unwrap();
    let (code, _, err) = as_token(&t, &s, "pusher-ci", &push_args());
    assert_eq!(code, 1, "{err}");
    // A stream that escapes the model, one that sends a file twice, and one without a header.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sovra_api::v1::{FileChunk, PushChunk, PushHeader, push_chunk::Part};
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(t.p("tls/ca.pem")).unwrap()));
        let ch = tonic::transport::Channel::from_shared(s.url.clone()).unwrap().tls_config(tls).unwrap();
        let mut c = sovra_api::v1::promotion_client::PromotionClient::new(ch.connect().await.unwrap());
        let header = || PushChunk {
            part: Some(Part::Header(PushHeader {
                name: "evil".into(),
                residency_class: "fr-health".into(),
                bundle: std::fs::read(t.p("model.sig")).unwrap(),
                ..Default::default()
            })),
        };
        let file = |n: &str| PushChunk { part: Some(Part::File(FileChunk { name: n.into(), data: b"x".to_vec() })) };
        for (chunks, want) in [
            (vec![header(), file("../../etc/passwd")], "leaves the model"),
            (vec![header(), file("a"), file("b"), file("a")], "sent twice"),
            (vec![file("a")], "first message must be the header"),
            (vec![header(), file("config.json")], ""),
        ] {
            let mut req = tonic::Request::new(tokio_stream::iter(chunks));
            let auth = format!("Bearer {}", token("pusher-ci")).parse().unwrap();
            req.metadata_mut().insert("authorization", auth);
            let e = c.push(req).await.unwrap_err();
            assert!(e.message().contains(want), "{e:?}");
        }
    });
    let listed = ok(as_token(&t, &s, "pusher-ci", &["model", "list"]));
    assert!(listed.contains("no models"), "{listed}");
    let staged: Vec<_> = std::fs::read_dir(t.p("staging")).unwrap().collect();
    assert!(staged.is_empty(), "staging left behind: {staged:?}");
}

#[test]
fn service_down_or_wrong_ca_fails_closed() {
    let t = setup();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = Service { child: Command::new("true").spawn().unwrap(), url: format!("https://localhost:{port}") };
    let (code, _, err) = as_token(&t, &down, "pusher-ci", &push_args());
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the promotion service") && err.contains("nothing was done"), "{err}");
    let s = start(&t);
    let other = t.p("other-ca/ca.pem");
    let o = t
        .cmd(&["model", "list", "--server", &s.url, "--ca", other.to_str().unwrap(), "--token", token("pusher-ci")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Plain http is refused before connecting; an unknown token is not a client.
    let (code, _, err) = run(
        &t,
        &Service { child: Command::new("true").spawn().unwrap(), url: "http://localhost:1".into() },
        &["--token", "x"],
        &["model", "list"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&t, &s, &["--token", "not-a-client"], &["model", "list"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("matches no client"), "{err}");
}

#[test]
fn concurrent_promotions_of_one_version_promote_once() {
    let t = setup();
    let s = start(&t);
    ok(as_token(&t, &s, "pusher-ci", &push_args()));
    let ca = t.p("tls/ca.pem");
    let children: Vec<Child> = (0..6)
        .map(|_| {
            t.cmd(&["model", "promote", "radiology", "--to", "registry", "--server", &s.url])
                .args(["--ca", ca.to_str().unwrap(), "--token", token("promoter-ci")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> =
        children.into_iter().map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1)).collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 0 || *c == 1), "{codes:?}");
    let st: Value =
        serde_json::from_str(&ok(as_token(&t, &s, "pusher-ci", &["model", "status", "radiology", "-o", "json"])))
            .unwrap();
    let locs = st["locations"].as_array().unwrap();
    assert_eq!(locs.len(), 2, "{st}");
    assert_eq!(st["promotions"].as_array().unwrap().len(), 1, "{st}");
}

#[test]
fn local_mode_needs_the_private_service_key_only_to_promote() {
    let t = Tour::new();
    std::fs::remove_file(t.p("keys/service.pem")).unwrap();
    t.push();
    t.ok(&["model", "list"]);
    t.ok(&["model", "status", "radiology"]);
    t.ok(&["model", "approve", "radiology", "--to", "inference", "--key", "keys/alice.pem"]);
    t.ok(&["model", "pull", "radiology", "out"]);
    let (out, err) = t.expect(&["model", "promote", "radiology", "--to", "registry"], 2);
    assert!(err.contains("field `service_key`"), "{out}{err}");
    t.ok(&["model", "promote", "radiology", "--to", "registry", "--dry-run"]);
    // Nothing was promoted or half-written.
    let st = t.json(&["model", "status", "radiology"], 0);
    assert_eq!(st["locations"].as_array().unwrap().len(), 1, "{st}");
}
