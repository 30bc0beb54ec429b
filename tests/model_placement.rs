//! Model-aware placement against the real promotion service (`sovra-promotion serve` over TLS) and a scheduler
//! over gRPC: an inference job naming a model promoted only to `de-fra-c5` lands only there; a job of a class that
//! zone fails waits with the model filter's explanation; a version that does not exist is refused at submit; a
//! withdrawal stops the replicas (requeued, receipts ended); and with the promotion service gone a model-bound job
//! is not placed (fail closed).

#[path = "support/scheduler.rs"]
mod scheduler;
#[path = "support/service.rs"]
mod service;
#[path = "support/registry_tour.rs"]
mod support;

use serde_json::Value;
use service::*;
use std::time::{Duration, Instant};
use support::Tour;

fn start_scheduler(t: &Tour, promotion: &str) -> String {
    let src = sovra_scheduler::service::models::ModelSource {
        endpoint: promotion.to_string(),
        ca: Some(t.p("tls/ca.pem")),
        token: token("pusher-ci").to_string(),
        poll: Duration::from_millis(200),
        domain: None,
    };
    scheduler::start(sovra_scheduler::service::Options { models: Some(src), ..Default::default() })
}

fn sched(t: &Tour, server: &str, args: &[&str]) -> (i32, String, String) {
    scheduler::run(t.cmd(args), server)
}

fn job(t: &Tour, server: &str, id: &str) -> Value {
    let (code, out, err) = sched(t, server, &["job", id, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

/// Waits until job `id` satisfies `ok`.
fn wait_for(t: &Tour, server: &str, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let j = job(t, server, id);
        if ok(&j) {
            return j;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "job {id} never {what}: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn submit(t: &Tour, server: &str, name: &str, class: &str, model: &str) -> (i32, String, String) {
    let file = t.p(&format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "name: {name}\nkind: inference\nresidency: {class}\nreplicas: 3\nmodel: {model}\nresources: {{gpus: 1, \
             cpu_milli: 1000, memory_mib: 1024}}\n"
        ),
    )
    .unwrap();
    sched(t, server, &["submit", file.to_str().unwrap(), "-o", "json"])
}

fn id_of(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "{}{}", r.1, r.2);
    serde_json::from_str::<Value>(&r.1).unwrap()["id"].as_u64().unwrap().to_string()
}

#[test]
fn inference_jobs_land_only_where_their_model_was_promoted() {
    let t = setup();
    let s = start(&t);
    // A model of class eu-any, promoted training → registry → inference in de-fra-c5 only.
    let mut push = push_args();
    let class = push.iter().position(|a| *a == "fr-health").unwrap();
    push[class] = "eu-any";
    push.extend(["-o", "json"]);
    let pushed: Value = serde_json::from_str(&ok(as_token(&t, &s, "pusher-ci", &push))).unwrap();
    let digest = pushed["digest"].as_str().unwrap().to_string();
    let promote = |to: &str| {
        ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", to, "--zone", "de-fra-c5"]))
    };
    promote("registry");
    ok(as_cert(&t, &s, "alice-ci", &["model", "approve", "radiology", "--to", "inference", "--key", "keys/alice.pem"]));
    ok(as_cert(&t, &s, "bob-ci", &["model", "approve", "radiology", "--to", "inference", "--key", "keys/bob.pem"]));
    promote("inference");
    let model = format!("radiology@{}", &digest[..12]);

    let server = start_scheduler(&t, &s.url);
    // eu-any permits four zones; the model is in one.
    let served = id_of(submit(&t, &server, "serve-eu", "eu-any", &model));
    let j = wait_for(&t, &server, &served, "placed", |j| j["state"] == "placed");
    let zones: Vec<&str> = j["replicas"].as_array().unwrap().iter().map(|r| r["zone"].as_str().unwrap()).collect();
    assert_eq!(zones, ["de-fra-c5"; 3], "{j}");
    assert_eq!(j["model"], model.as_str());
    let (_, text, _) = sched(&t, &server, &["job", &served]);
    assert!(text.contains(&format!("serves model {model}")), "{text}");

    // A class de-fra-c5 fails: it waits, and the explanation names the model filter.
    let fr = id_of(submit(&t, &server, "serve-fr", "fr-health", &model));
    let (_, out, _) = sched(&t, &server, &["job", &fr, "--explain"]);
    let expected =
        format!("model {model} is promoted to de-fra-c5 only, which fails fr-health: country DE is not in [FR]");
    assert!(out.contains(&expected), "{out}");
    assert!(out.contains("model"), "{out}");

    // A version that does not exist is refused at submit, naming the model.
    let (code, out, err) = submit(&t, &server, "ghost", "eu-any", "radiology@ffffffffffff");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("radiology@ffffffffffff"), "{err}");

    // Withdrawn from de-fra-c5's inference data zone: the replicas there are stopped, the job requeued.
    let mut w = vec!["model", "withdraw", "radiology", "--zone", "de-fra-c5", "--stage", "inference", "--reason"];
    w.extend(["CVE-2026-1: poisoned", "--key", "keys/secops.pem"]);
    ok(as_token(&t, &s, "withdraw-ci", &w));
    let j = wait_for(&t, &server, &served, "requeued", |j| j["state"] == "pending");
    assert!(j["explanation_summary"].as_str().unwrap().contains("promoted to no inference zone"), "{j}");
    let (code, receipts, err) = sched(&t, &server, &["job", "receipts", &served]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(receipts.matches("requeued").count(), 3, "every replica's end is receipted: {receipts}");

    // The promotion service gone: nothing model-bound is placed (fail closed).
    drop(s);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, out, err) = submit(&t, &server, "blind", "eu-any", &model);
    assert_eq!(code, 0, "{out}{err}");
    let blind: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(blind["state"], "pending", "{blind}");
    assert!(blind["explanation_summary"].as_str().unwrap().contains("cannot be known now"), "{blind}");
}
