//! Black-box tests of `sovra model keygen | push | pull | list | status | promote | approve`, `sovra exception
//! grant` and `sovra audit verify`: exit codes (0 done, 1 denied / broken, 2 bad input) and `--output json`.

use serde_json::Value;
use std::process::Command;

#[path = "support/registry_tour.rs"]
mod registry_tour;

use registry_tour::Tour;

#[test]
fn the_whole_flow_with_exit_codes_and_json() {
    let t = Tour::new();
    let v = t.json(
        &[
            "model",
            "push",
            "radiology",
            "model",
            "--signature",
            "model.sig",
            "--residency-class",
            "fr-health",
            "--provenance",
            "provenance.yaml",
            "--metrics",
            "metrics.json",
        ],
        0,
    );
    assert_eq!(v["status"], "pushed");
    assert_eq!(v["data_zone"], "fr-par-secnum/training");
    let d = t.json(&["model", "promote", "radiology", "--to", "inference"], 1);
    assert_eq!(d["status"], "denied");
    assert_eq!(d["failed"][0]["gate"], "stage_order");
    t.json(&["model", "promote", "radiology", "--to", "registry"], 0);
    let d = t.json(&["model", "promote", "radiology", "--to", "inference"], 1);
    assert_eq!(d["failed"][0]["gate"], "approvals");
    t.ok(&["model", "approve", "radiology", "--to", "inference", "--key", "keys/alice.pem"]);
    let a = t.json(
        &[
            "model",
            "approve",
            "radiology",
            "--to",
            "inference",
            "--key",
            "keys/bob.pem",
            "--out",
            "bob.json",
            "--no-record",
        ],
        0,
    );
    assert_eq!(a["approver"], "bob");
    let d = t.json(
        &["model", "promote", "radiology", "--to", "inference", "--zone", "de-fra-c5", "--approval", "bob.json"],
        1,
    );
    assert_eq!(d["failed"][0]["gate"], "residency");
    let p = t.json(&["model", "promote", "radiology", "--to", "inference", "--approval", "bob.json"], 0);
    assert_eq!(p["to"], "fr-par-secnum/inference");
    assert_eq!(p["under_exception"], false);
    let s = t.json(&["model", "status", "radiology"], 0);
    assert_eq!(s["current"], "fr-par-secnum/inference");
    assert_eq!(s["promotions"].as_array().unwrap().len(), 2);
    assert!(s["promotions"].as_array().unwrap().iter().all(|p| p["statement_verified"] == true));
    let l = t.json(&["model", "list"], 0);
    assert_eq!(l.as_array().unwrap().len(), 1);
    t.ok(&["model", "pull", "radiology", "pulled", "--stage", "inference"]);
    t.ok(&["model", "verify", "pulled", "--signature", "pulled.sig", "--public-key", "keys/trainer.pub.pem"]);
    let a = t.json(&["audit", "verify"], 0);
    assert_eq!(a["status"], "intact");
    assert_eq!(a["entries"], 8); // push, 3 denials, 1 approval, 2 promotions, 1 pull
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let t = Tour::new();
    // No promotion config.
    let o = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .current_dir(t.dir.path())
        .env("SOVRA_REGISTRY", t.p("registry"))
        .args([
            "model",
            "push",
            "m",
            "model",
            "--signature",
            "model.sig",
            "--residency-class",
            "eu-any",
            "--promotion-config",
            "nope.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.yaml"));
    // Corrupt bundle.
    std::fs::write(t.p("bad.sig"), "{\"mediaType\": 1").unwrap();
    let (code, _, err) =
        t.code(&["model", "push", "m", "model", "--signature", "bad.sig", "--residency-class", "eu-any"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.sig"), "{err}");
    // A model directory that does not exist.
    let (code, _, err) =
        t.code(&["model", "push", "m", "missing", "--signature", "model.sig", "--residency-class", "eu-any"]);
    assert_eq!(code, 2, "{err}");
    // A ../ in the model name.
    let (code, _, _) =
        t.code(&["model", "push", "../m", "model", "--signature", "model.sig", "--residency-class", "eu-any"]);
    assert_eq!(code, 2);
    assert_eq!(t.json(&["model", "list"], 0).as_array().unwrap().len(), 0);
    // Keys are never overwritten.
    let (code, _, err) = t.code(&["model", "keygen", "keys/alice"]);
    assert_eq!(code, 2, "{err}");
    // A changed file after signing: verification failure, exit 1, nothing stored.
    std::fs::write(t.p("model/weights/w0.bin"), b"changed").unwrap();
    let (code, _, err) =
        t.code(&["model", "push", "m", "model", "--signature", "model.sig", "--residency-class", "eu-any"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("weights/w0.bin"), "{err}");
    assert_eq!(t.json(&["model", "list"], 0).as_array().unwrap().len(), 0);
}

#[test]
fn break_glass_exception_by_admin_only_and_marked() {
    let t = Tour::new();
    t.push();
    t.ok(&["model", "promote", "radiology", "--to", "registry"]);
    let args = |key: &str| {
        vec![
            "exception",
            "grant",
            "--model",
            "radiology",
            "--gate",
            "approvals",
            "--ttl",
            "1h",
            "--reason",
            "incident 7",
            "--key",
            key,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let a: Vec<String> = args("keys/alice.pem");
    let (code, _, err) = t.code(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an admin key"), "{err}");
    let a: Vec<String> = args("keys/secops.pem");
    t.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let p = t.json(&["model", "promote", "radiology", "--to", "inference"], 0);
    assert_eq!(p["under_exception"], true);
    let s = t.ok(&["model", "status", "radiology"]);
    assert!(s.contains("UNDER EXCEPTION"), "{s}");
}

fn tamper(t: &Tour, f: impl FnOnce(&sovra_registry::Registry)) -> Value {
    t.push();
    t.ok(&["model", "promote", "radiology", "--to", "registry"]);
    t.ok(&["model", "approve", "radiology", "--to", "inference", "--key", "keys/alice.pem"]);
    t.ok(&["model", "approve", "radiology", "--to", "inference", "--key", "keys/bob.pem"]);
    assert_eq!(t.json(&["audit", "verify"], 0)["status"], "intact");
    {
        let reg = sovra_registry::Registry::open(&t.p("registry")).unwrap();
        f(&reg);
        reg.raw_audit_tree().flush().unwrap();
    }
    let v = t.json(&["audit", "verify"], 1);
    assert_eq!(v["status"], "broken");
    v
}

#[test]
fn audit_verify_detects_an_edited_entry() {
    let t = Tour::new();
    let v = tamper(&t, |reg| {
        let tree = reg.raw_audit_tree();
        let key = 2u64.to_be_bytes();
        let mut e: Value = serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
        e["actor"] = "mallory".into();
        tree.insert(key, serde_json::to_vec(&e).unwrap()).unwrap();
    });
    assert!(v["problems"].to_string().contains("edited"), "{v}");
}

#[test]
fn audit_verify_detects_a_deleted_entry() {
    let t = Tour::new();
    let v = tamper(&t, |reg| {
        reg.raw_audit_tree().remove(1u64.to_be_bytes()).unwrap();
    });
    assert!(v["problems"].to_string().contains("deleted"), "{v}");
}

#[test]
fn audit_verify_detects_reordered_entries() {
    let t = Tour::new();
    let v = tamper(&t, |reg| {
        let tree = reg.raw_audit_tree();
        let a = tree.get(2u64.to_be_bytes()).unwrap().unwrap();
        let b = tree.get(3u64.to_be_bytes()).unwrap().unwrap();
        tree.insert(2u64.to_be_bytes(), b).unwrap();
        tree.insert(3u64.to_be_bytes(), a).unwrap();
    });
    assert!(v["problems"].to_string().contains("reordered"), "{v}");
}

#[test]
fn an_acknowledged_approval_survives_kill_9() {
    use std::io::BufRead;
    let t = Tour::new();
    t.push();
    for round in 0..3 {
        let key = ["keys/alice.pem", "keys/bob.pem", "keys/carol.pem"][round];
        let mut child = Command::new(env!("CARGO_BIN_EXE_sovra"))
            .current_dir(t.dir.path())
            .env("SOVRA_REGISTRY", t.p("registry"))
            .env("SOVRA_PROMOTION_CONFIG", t.p("promotion.yaml"))
            .args(["model", "approve", "radiology", "--to", "inference", "--key", key])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Kill -9 as soon as the acknowledgement is printed: no destructor, no orderly sled shutdown.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("Approved"), "{line}");
        let _ = child.kill();
        let _ = child.wait();
        let s = t.json(&["model", "status", "radiology"], 0);
        assert_eq!(s["approvals"].as_array().unwrap().len(), round + 1, "{s}");
    }
    assert_eq!(t.json(&["audit", "verify"], 0)["entries"], 4);
}

#[test]
fn dry_run_explains_and_changes_nothing() {
    let t = Tour::new();
    t.push();
    let d = t.json(&["model", "promote", "radiology", "--to", "registry", "--dry-run", "--explain"], 0);
    assert_eq!(d["status"], "would-promote");
    assert_eq!(d["input"]["model"]["residency_class"], "fr-health");
    assert_eq!(d["input"]["signature"]["verified"], true);
    let d = t.json(&["model", "promote", "radiology", "--to", "inference", "--dry-run"], 1);
    assert_eq!(d["status"], "would-deny");
    assert_eq!(d["failed"][0]["gate"], "stage_order");
    assert_eq!(t.json(&["model", "status", "radiology"], 0)["current"], "fr-par-secnum/training");
    assert_eq!(t.json(&["audit", "verify"], 0)["entries"], 1);
}
