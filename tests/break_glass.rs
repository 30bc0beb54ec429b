//! Break-glass for placement, end to end over real gRPC with the `sovra` CLI: a job whose only compliant zone is
//! full runs under a placement exception signed by 2 of 3 approvers in a zone that fails one requirement of its
//! class; every receipt carries `underException`; too few signatures, an unknown key, the wrong requirement and a
//! skewed clock are each refused, audited and counted; at expiry the job is stopped and requeued.

#[path = "support/scheduler.rs"]
mod scheduler;

use scheduler::{run, start_on};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const CLUSTER: &str = r#"
zones:
  - {id: fr-hds, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR, certifications: [HDS, SecNumCloud]}
  - {id: fr-snc, country: FR, region: Lyon, jurisdiction: EU, operator: o, operator_hq: FR, certifications: [SecNumCloud]}
  - {id: de, country: DE, region: Berlin, jurisdiction: EU, operator: d, operator_hq: DE, certifications: [HDS]}
pools:
  - {id: t-hds, zone: fr-hds, purpose: training}
  - {id: t-snc, zone: fr-snc, purpose: training}
  - {id: t-de, zone: de, purpose: training}
residency_classes:
  - {name: fr-health, countries: [FR], certifications: [HDS, SecNumCloud]}
nodes:
  - {name: h1, pool: t-hds, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
  - {name: s1, pool: t-snc, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
  - {name: d1, pool: t-de, cpu_milli: 64000, memory_mib: 262144, gpus: {model: L4, count: 4, memory_mib: 23034}}
"#;

fn sovra(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sovra"));
    c.args(args);
    c
}

fn key(dir: &Path, name: &str) -> String {
    let (private, public) = sovra_oms::keys::generate_p256().unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), private).unwrap();
    std::fs::write(dir.join(format!("{name}.pub.pem")), public).unwrap();
    dir.join(format!("{name}.pem")).display().to_string()
}

fn job_yaml(dir: &Path, name: &str) -> String {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, format!("name: {name}\nkind: training\nresidency: fr-health\nreplicas: 1\nresources: {{gpus: 4, cpu_milli: 100, memory_mib: 128}}\n")).unwrap();
    p.display().to_string()
}

fn job(server: &str, id: &str) -> Value {
    let (code, out, err) = run(sovra(&["job", id, "-o", "json"]), server);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn wait_state(server: &str, id: &str, state: &str) -> Value {
    for _ in 0..100 {
        let j = job(server, id);
        if j["state"] == state {
            return j;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("job {id} never became {state}: {}", job(server, id));
}

fn events(server: &str) -> String {
    let (code, out, err) = run(sovra(&["events", "--limit", "1000"]), server);
    assert_eq!(code, 0, "{err}");
    out
}

fn audit_kinds(server: &str) -> Vec<(String, Value)> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("log.jsonl");
    let (code, _, err) = run(sovra(&["audit", "export", "--scheduler", "--out", out.to_str().unwrap()]), server);
    assert_eq!(code, 0, "{err}");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["kind"].as_str()?.to_string(), v["details"].clone())))
        .collect()
}

/// Proposes an exception for `id` and signs it with `keys`; the envelope file.
fn proposal(dir: &Path, name: &str, id: &str, waive: &str, dur: &str, keys: &[&str]) -> String {
    let file = dir.join(format!("{name}.json")).display().to_string();
    let (code, _, err) = run(
        sovra(&[
            "job",
            "exception",
            "propose",
            id,
            "--zone",
            "fr-snc",
            "--waive",
            waive,
            "--reason",
            "incident 42: fr-hds full",
            "--for",
            dur,
            "--out",
            &file,
        ]),
        "",
    );
    assert_eq!(code, 0, "{err}");
    for k in keys {
        let (code, _, err) = run(sovra(&["job", "exception", "sign", &file, "--key", k]), "");
        assert_eq!(code, 0, "{err}");
    }
    file
}

#[test]
fn a_placement_exception_signed_by_two_of_three_approvers_lets_one_job_run_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (alice, bob, _carol, mallory) = (key(d, "alice"), key(d, "bob"), key(d, "carol"), key(d, "mallory"));
    std::fs::write(
        d.join("break-glass.yaml"),
        "approvers:\n  - {name: alice, public_key: alice.pub.pem}\n  - {name: bob, public_key: bob.pub.pem}\n  - {name: \
         carol, public_key: carol.pub.pem}\nrequired: 2\nmax_hours: 8\n",
    )
    .unwrap();
    let bg = sovra_scheduler::service::exceptions::BreakGlass::load(&d.join("break-glass.yaml")).unwrap();
    let cluster = sovra_domain::ClusterConfig::from_yaml("cluster.yaml", CLUSTER).unwrap();
    let opts = sovra_scheduler::service::Options {
        break_glass: Some(std::sync::Arc::new(bg)),
        heartbeat: std::time::Duration::from_millis(400),
        ..Default::default()
    };
    let server = start_on(cluster, opts);

    // fr-hds is the only compliant zone; the second job waits.
    for name in ["a", "b"] {
        let (code, _, err) = run(sovra(&["submit", &job_yaml(d, name)]), &server);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(wait_state(&server, "1", "placed")["replicas"][0]["zone"], "fr-hds");
    assert_eq!(job(&server, "2")["state"], "pending");

    let grant = |file: &str| run(sovra(&["job", "exception", "grant", file]), &server);
    // One approver, or one plus an unknown key: refused, naming the count.
    let (code, _, err) = grant(&proposal(d, "one", "2", "certification:HDS", "1h", &[&alice, &mallory]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("2 of the 3 configured approvers must sign; valid: alice"), "{err}");
    assert!(err.contains("is not a configured approver"), "{err}");
    // The wrong requirement: fr-snc fails fr-health only in HDS.
    let (code, _, err) = grant(&proposal(d, "country", "2", "country", "1h", &[&alice, &bob]));
    assert_eq!(code, 1);
    assert!(err.contains("fails class fr-health in [certification:HDS (zone lacks certification HDS)]"), "{err}");
    // A window longer than max_hours.
    let (code, _, err) = grant(&proposal(d, "long", "2", "certification:HDS", "9h", &[&alice, &bob]));
    assert_eq!(code, 1);
    assert!(err.contains("at most 8 h"), "{err}");
    // A skewed clock: dated an hour ahead of the scheduler's.
    let skewed = {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let p = serde_json::json!({"_type": sovra_scheduler::service::exceptions::EXCEPTION_V1, "job": 2,
            "zone": "fr-snc", "requirement": "certification:HDS", "reason": "skewed", "notBefore": now + 3600,
            "expiresAt": now + 7200});
        let mut env = sovra_oms::multisig::unsigned(
            sovra_scheduler::service::exceptions::EXCEPTION_TYPE,
            p.to_string().as_bytes(),
        );
        for k in [&alice, &bob] {
            let k = sovra_oms::keys::SigningKey::from_pem_file(Path::new(k)).unwrap();
            sovra_oms::multisig::add_signature(&mut env, &k).unwrap();
        }
        let f = d.join("skewed.json");
        std::fs::write(&f, serde_json::to_string(&env).unwrap()).unwrap();
        f.display().to_string()
    };
    let (code, _, err) = grant(&skewed);
    assert_eq!(code, 1);
    assert!(err.contains("ahead of the scheduler's clock"), "{err}");
    assert_eq!(job(&server, "2")["state"], "pending", "nothing refused changed the job");

    // Two approvers, the one requirement, 3 seconds: granted and placed in fr-snc, under exception.
    let (code, out, err) = grant(&proposal(d, "ok", "2", "certification:HDS", "3s", &[&alice, &bob]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("UNDER EXCEPTION"), "{out}");
    let j = wait_state(&server, "2", "placed");
    assert_eq!(j["replicas"][0]["zone"], "fr-snc");
    let w = j["exception"].clone();
    assert_eq!(w["approvers"], serde_json::json!(["alice", "bob"]));

    // Expiry: stopped and requeued (fr-hds is still full).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let j = wait_state(&server, "2", "pending");
    assert!(j["replicas"].as_array().is_none_or(|r| r.is_empty()), "{j}");
    assert!(j["exception"].is_null(), "{j}");

    // Every receipt of the job carries the exception; the placement does not satisfy the class.
    let (code, out, err) = run(sovra(&["job", "receipts", "2", "-o", "json"]), &server);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let receipts = doc["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 2, "placed and ended");
    for r in receipts {
        let payload = r["envelope"]["payload"].as_str().unwrap();
        use base64::Engine;
        let st: Value =
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(payload).unwrap()).unwrap();
        assert_eq!(st["predicate"]["underException"]["id"], w["id"], "{st}");
        assert_eq!(st["predicate"]["satisfiesClass"], false);
    }

    // Audited: the grant with its envelope, its expiry, and each refusal; alerted: events and the metric.
    let log = audit_kinds(&server);
    let kinds: Vec<(&str, &str)> =
        log.iter().map(|(k, d)| (k.as_str(), d["event"].as_str().or(d["attempt"].as_str()).unwrap_or(""))).collect();
    assert_eq!(kinds.iter().filter(|k| **k == ("refusal", "placement-exception")).count(), 4, "{kinds:?}");
    assert!(kinds.contains(&("placement-exception", "granted")), "{kinds:?}");
    assert!(kinds.contains(&("placement-exception", "expired")), "{kinds:?}");
    let ev = events(&server);
    assert_eq!(ev.matches("REFUSED placement-exception").count(), 4, "{ev}");
    assert!(ev.contains("granted by alice, bob"), "{ev}");
    assert!(ev.contains("expired: its replicas there are stopped and it is requeued"), "{ev}");
}
