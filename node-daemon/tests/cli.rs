//! Black-box tests of `sovra-node-daemon`.

use std::path::Path;
use std::process::{Command, Output};

fn daemon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra-node-daemon")).args(args).output().unwrap()
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).display().to_string()
}

#[test]
fn fake_inventory_says_it_is_fake() {
    let o = daemon(&["inventory", "--backend", "fake", "--fixture", &fixture("fake-8gpu.yaml")]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(inv["backend"].as_str().unwrap().starts_with("fake (fixture "), "{}", inv["backend"]);
    assert_eq!(inv["gpus"].as_array().unwrap().len(), 8);
    assert!(String::from_utf8_lossy(&o.stderr).contains("FAKE GPU backend"), "the log says fake too");
}

#[test]
fn watch_reports_xid_health_changes_and_heartbeats() {
    let o = daemon(&[
        "watch",
        "--backend",
        "fake",
        "--fixture",
        &fixture("fake-8gpu.yaml"),
        "--interval-ms",
        "50",
        "--duration-s",
        "0.6",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "inventory");
    let health: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "health").collect();
    assert_eq!(health.len(), 1, "XID 79 marks GPU 5 unhealthy; XID 31 is ignored: {health:?}");
    assert_eq!(health[0]["gpu"], 5);
    assert_eq!(health[0]["health"]["reason"], "XID 79");
    assert!(lines.iter().filter(|l| l["type"] == "heartbeat").count() >= 5);
    // With XID 31 no longer ignored, GPU 2 goes unhealthy too.
    let o = daemon(&[
        "watch",
        "--backend",
        "fake",
        "--fixture",
        &fixture("fake-8gpu.yaml"),
        "--interval-ms",
        "50",
        "--duration-s",
        "0.6",
        "--ignore-xid",
        "13",
    ]);
    let n = String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains("\"type\":\"health\"")).count();
    assert_eq!(n, 2);
}

#[test]
fn no_nvml_is_reported_not_fatal() {
    let o = daemon(&["inventory", "--nvml-lib", "/nonexistent/libnvidia-ml.so.1"]);
    assert_eq!(o.status.code(), Some(0));
    let inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inv["state"]["state"], "unavailable");
    assert!(inv["state"]["reason"].as_str().unwrap().contains("install the NVIDIA driver"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NVML unavailable"));
}

#[test]
fn bad_input_exits_2_naming_file_and_field() {
    let dir = std::env::temp_dir().join(format!("sovra-daemon-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "gpus:\n  - {uuid: g, name: n, memory_total_mib: lots, compute_capability: [9, 0]}\n",
            "gpus[0].memory_total_mib: invalid type",
        ),
        (
            "gpus:\n  - {uuid: g, name: n, memory_total_mib: 0, compute_capability: [9, 0]}\n",
            "gpus[0].memory_total_mib: must be at least 1",
        ),
        ("gpus: []\nevents:\n  - {after_s: 1, gpu: 3, xid: 79}\n", "events[0].gpu: GPU 3 does not exist"),
        ("gpus: [\n", "fixture.yaml:"),
        ("gpu: []\n", "unknown field `gpu`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = dir.join("fixture.yaml");
        std::fs::write(&f, text).unwrap();
        let o = daemon(&["inventory", "--backend", "fake", "--fixture", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(want) && err.contains("fixture.yaml"), "case {i}: {err}");
        assert!(!err.contains("panicked"), "case {i}: {err}");
    }
    let o = daemon(&["inventory", "--backend", "fake"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--backend fake needs --fixture"));
    let cfg = dir.join("daemon.yaml");
    std::fs::write(&cfg, "backend: fake\nfixture: x\nreport_interval_ms: 0\n").unwrap();
    let o = daemon(&["inventory", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("report_interval_ms: must be at least 1"));
    let _ = std::fs::remove_dir_all(&dir);
}
