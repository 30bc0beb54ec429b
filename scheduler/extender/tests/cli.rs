//! Black-box tests of the `sovra-extender` binary's command line (issue 11): `--config` is required (with
//! `--kube` too) and says so; no `--help` shows a value from the environment; a closed stdout pipe ends it
//! quietly.

use std::process::{Command, Output, Stdio};

fn extender(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra-extender")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn serve_requires_config_even_with_kube_and_its_help_says_so() {
    // Before: the help said "(optional with --kube)", but the flag was required.
    let o = extender(&["serve", "--help"]);
    let help = text(&o);
    assert_eq!(o.status.code(), Some(0), "{help}");
    assert!(!help.contains("optional with --kube"), "{help}");
    assert!(help.contains("The Sovra cluster file (required)"), "{help}");
    assert!(help.contains("With --kube the file is still required"), "{help}");
    let o = extender(&["serve", "--kube"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--config <CONFIG>"), "{}", text(&o));
}

#[test]
fn help_never_shows_a_value_from_the_environment() {
    for c in ["serve", "labels", "label-node"] {
        let o = Command::new(env!("CARGO_BIN_EXE_sovra-extender"))
            .args([c, "--help"])
            .env("NODE_NAME", "node-secret-4711")
            .env("POD_NAME", "pod-secret-4711")
            .env("POD_NAMESPACE", "ns-secret-4711")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(!text(&o).contains("4711"), "`sovra-extender {c} --help` shows NODE_NAME:\n{}", text(&o));
    }
}

#[test]
fn labels_into_a_closed_pipe_end_quietly_without_a_panic() {
    let dir = std::env::temp_dir().join(format!("sovra-extender-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inv = dir.join("inventory.json");
    std::fs::write(
        &inv,
        r#"{"driver_version": "550.54.15", "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3",
            "memory_total_mib": 81559, "compute_capability": [9, 0], "pci_bus_id": "0000:01:00.0"}]}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sovra-extender"))
        .args(["labels", "--inventory", inv.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.status.success(), "{:?}: {err}", o.status);
}

#[test]
fn leader_election_and_gang_flags_are_checked_naming_the_flag() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cluster.yaml");
    let o = extender(&["serve", "-c", cfg, "--leader-elect"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--kube"), "--leader-elect needs --kube: {}", text(&o));
    let o = extender(&["serve", "-c", cfg, "--lease-duration", "15"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--lease-duration") && text(&o).contains("the unit is ms, s or m"), "{}", text(&o));
    let o = extender(&["serve", "-c", cfg, "--listen", "127.0.0.1:0", "--gang-reservation-timeout", "0s"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--gang-reservation-timeout is 0"), "{}", text(&o));
}

#[test]
fn dry_run_bind_is_explicit_never_with_kube_and_documented_as_such() {
    let help = text(&extender(&["serve", "--help"]));
    assert!(help.contains("--dry-run-bind") && help.contains("Never for a real kube-scheduler"), "{help}");
    assert!(help.contains("--probe-listen"), "{help}");
    let o = extender(&["serve", "-c", "cluster.yaml", "--kube", "--dry-run-bind"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot be used with"), "{}", text(&o));
}
