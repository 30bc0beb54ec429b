//! Residency you can prove, as users drive it: a training job's signed placement receipts from `sovra job
//! receipts` (checked by the CLI and by the independent verifier tests/evidence_verify.py), the scheduler's audit
//! log (`sovra audit verify | export --scheduler`, tests/audit_verify.py), and the receipts as a model's
//! provenance: `sovra model push --training-job` then the `training_zone` gate, which refuses a modified receipt,
//! one from an untrusted scheduler key, one whose replica ran outside the model's class, an incomplete document,
//! a job that did not succeed, and self-declared provenance where receipts are required (the default).
//! A scheduler on loopback (real gRPC), the `sovra` binary, a local registry.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

#[path = "support/registry_tour.rs"]
mod registry_tour;
#[path = "support/scheduler.rs"]
mod scheduler;

use registry_tour::Tour;

/// A scheduler on the example cluster signing receipts with `key`; its address.
fn start_scheduler(key: &Path) -> String {
    let key = std::sync::Arc::new(sovra_oms::keys::SigningKey::from_pem_file(key).unwrap());
    scheduler::start(sovra_scheduler::service::Options { receipt_key: Some(key), ..Default::default() })
}

/// `sovra ARGS` in the tour's directory against `server`: (exit code, stdout, stderr).
fn sovra(t: &Tour, server: &str, args: &[&str]) -> (i32, String, String) {
    scheduler::run(t.cmd(args), server)
}

fn ok(t: &Tour, server: &str, args: &[&str]) -> String {
    let (code, out, err) = sovra(t, server, args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

/// Submits a training job of `replicas` × 8 H100 in `class`, runs it to `end`; its id.
fn train(t: &Tour, server: &str, name: &str, class: &str, end: &str) -> String {
    let file = t.p(&format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!("name: {name}\nkind: training\nresidency: {class}\nreplicas: 2\nresources: {{gpus: 8, cpu_milli: 1000, memory_mib: 4096}}\n"),
    )
    .unwrap();
    let job: Value = serde_json::from_str(&ok(t, server, &["submit", file.to_str().unwrap(), "-o", "json"])).unwrap();
    assert_eq!(job["state"], "placed", "{job}");
    let id = job["id"].as_u64().unwrap().to_string();
    ok(t, server, &["set-state", &id, "running"]);
    ok(t, server, &["set-state", &id, end]);
    id
}

fn python(script: &str, args: &[&str]) -> (i32, String) {
    let o = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

/// The tour's config, requiring receipts signed by keys/scheduler.pub.pem (examples/promotion.yaml as shipped).
fn require_receipts(t: &Tour) {
    let c = std::fs::read_to_string(t.p("promotion.yaml")).unwrap();
    std::fs::write(t.p("promotion.yaml"), c.replace("require_receipts: false", "require_receipts: true")).unwrap();
}

/// Pushes a new version of `model` (class fr-health) with `extra` provenance flags; its digest.
fn push(t: &Tour, server: &str, n: u8, extra: &[&str]) -> (i32, String, String) {
    std::fs::write(t.p("model/weights/w0.bin"), vec![n; 1000]).unwrap();
    t.ok(&["model", "sign", "model", "--private-key", "keys/trainer.pem", "--signature", "model.sig"]);
    let mut args = vec!["model", "push", "radiology", "model", "--signature", "model.sig", "--residency-class"];
    args.extend(["fr-health", "--metrics", "metrics.json", "-o", "json"]);
    args.extend(extra);
    sovra(t, server, &args)
}

/// Promotes the latest version to the registry: (exit code, the training_zone gate's reasons).
fn promote(t: &Tour, server: &str) -> (i32, String) {
    let (code, out, err) = sovra(t, server, &["model", "promote", "radiology", "--to", "registry", "-o", "json"]);
    (code, format!("{out}{err}"))
}

#[test]
fn receipts_prove_where_a_job_ran_and_gate_a_models_provenance() {
    let t = Tour::new();
    require_receipts(&t);
    let server = start_scheduler(&t.p("keys/scheduler.pem"));
    let id = train(&t, &server, "radiology-train", "fr-health", "succeeded");

    // The receipts: 2 placed + 2 ended, verified by the CLI with the scheduler's public key.
    let text = ok(&t, &server, &["job", "receipts", &id, "--verify-key", "keys/scheduler.pub.pem"]);
    assert_eq!(text.matches("fr-par-secnum  fr-health ✓").count(), 4, "{text}");
    assert!(text.contains("verified with keys/scheduler.pub.pem") && text.contains("succeeded"), "{text}");
    ok(&t, &server, &["job", "receipts", &id, "-o", "json", "--out", "receipts.json"]);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(t.p("receipts.json")).unwrap()).unwrap();
    assert_eq!(doc["receipts"].as_array().unwrap().len(), 4);
    let rogue = t.p("keys/trainer.pub.pem");
    let (code, out, err) = sovra(&t, &server, &["job", "receipts", &id, "--verify-key", rogue.to_str().unwrap()]);
    assert_eq!(code, 1, "another key does not verify them: {out}{err}");

    // The independent verifier agrees, and refuses an edited receipt.
    let receipts = t.p("receipts.json");
    let (code, out) = python(
        "evidence_verify.py",
        &["receipts", receipts.to_str().unwrap(), "--key", t.p("keys/scheduler.pub.pem").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("\"zone\": \"fr-par-secnum\"").count(), 2, "two replicas: {out}");
    let forged = forge_zone(&doc);
    std::fs::write(t.p("forged.json"), forged.to_string()).unwrap();
    let (code, out) = python(
        "evidence_verify.py",
        &["receipts", t.p("forged.json").to_str().unwrap(), "--key", t.p("keys/scheduler.pub.pem").to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REFUSED"), "{out}");

    // The scheduler's whole log: verified over the API, exported, and checked by tests/audit_verify.py.
    let v = ok(&t, &server, &["audit", "verify", "--scheduler"]);
    assert!(v.contains("Scheduler audit log OK: 4 entries"), "{v}");
    ok(&t, &server, &["audit", "export", "--scheduler", "--out", "scheduler-audit.jsonl"]);
    let (code, out) = python("audit_verify.py", &[t.p("scheduler-audit.jsonl").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    // Self-declared provenance is refused where receipts are required (the default).
    let (code, out, err) = push(&t, &server, 1, &["--provenance", "provenance.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, why) = promote(&t, &server);
    assert_eq!(code, 1, "{why}");
    assert!(why.contains("carries no placement receipts"), "{why}");

    // The receipts as provenance: fetched from the scheduler, and the gate passes.
    let (code, out, err) = push(&t, &server, 2, &["--training-job", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let pushed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pushed["data_zone"], "fr-par-secnum/training", "stored where the receipts say it was trained");
    let (code, out) = promote(&t, &server);
    assert_eq!(code, 0, "{out}");

    // Refused by the gate: a modified receipt, …
    std::fs::write(t.p("forged.json"), forged.to_string()).unwrap();
    assert_eq!(push(&t, &server, 3, &["--receipts", "forged.json"]).0, 0);
    let (code, why) = promote(&t, &server);
    assert!(code == 1 && why.contains("placement receipts refused") && why.contains("modified"), "{why}");
    // … receipts signed by a scheduler key the config does not trust, …
    t.ok(&["model", "keygen", "keys/other-scheduler"]);
    let other = start_scheduler(&t.p("keys/other-scheduler.pem"));
    let other_id = train(&t, &other, "elsewhere", "fr-health", "succeeded");
    assert_eq!(push(&t, &other, 4, &["--training-job", &other_id]).0, 0);
    let (code, why) = promote(&t, &server);
    assert!(code == 1 && why.contains("not a configured scheduler key"), "{why}");
    // … a job whose replicas ran outside the model's class (de-c5 runs in Germany), …
    let outside = train(&t, &server, "de-train", "de-c5", "succeeded");
    assert_eq!(push(&t, &server, 5, &["--training-job", &outside]).0, 0);
    let (code, why) = promote(&t, &server);
    assert!(code == 1 && why.contains("fails the model's residency class fr-health"), "{why}");
    // … a document with one receipt left out, …
    let mut partial = doc.clone();
    partial["receipts"].as_array_mut().unwrap().pop();
    std::fs::write(t.p("partial.json"), partial.to_string()).unwrap();
    assert_eq!(push(&t, &server, 6, &["--receipts", "partial.json"]).0, 0);
    let (code, why) = promote(&t, &server);
    assert!(code == 1 && why.contains("missing from the document"), "{why}");
    // … and a training job that failed.
    let failed = train(&t, &server, "crashed", "fr-health", "failed");
    assert_eq!(push(&t, &server, 7, &["--training-job", &failed]).0, 0);
    let (code, why) = promote(&t, &server);
    assert!(code == 1 && why.contains("did not succeed"), "{why}");

    // Bad input: a malformed receipts file is refused at push, naming the field.
    std::fs::write(t.p("bad.json"), r#"{"_type": "https://sovra.dev/job-receipts/v1", "job": "seven"}"#).unwrap();
    let (code, out, err) = push(&t, &server, 8, &["--receipts", "bad.json"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("job"), "{err}");
    let (code, _, err) = sovra(&t, &server, &["job", "receipts", "999"]);
    assert!(code == 1 && err.contains("no job 999"), "{err}");
}

/// `doc` with its first receipt's zone changed in the payload (the signature left as it was).
fn forge_zone(doc: &Value) -> Value {
    use base64::Engine as _;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let mut forged = doc.clone();
    let env = &mut forged["receipts"][0]["envelope"];
    let mut st: Value = serde_json::from_slice(&b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    st["predicate"]["zone"]["id"] = "de-fra-c5".into();
    env["payload"] = b64.encode(st.to_string()).into();
    forged
}
