//! `sovra dev --tour`, the README's first command: the scheduler and a node daemon per node (fake GPUs) over real
//! gRPC and mutual TLS, driven through the same client code as `sovra submit | jobs | nodes`.

use std::process::Command;

#[test]
fn the_tour_places_refuses_explains_and_survives_a_dead_daemon() {
    let data = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["dev", "--tour", "--heartbeat-ms", "400", "--data", data.path().to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    for want in [
        "node daemons with FAKE GPUs",
        "the promotion service answers over TLS: 0 model version(s)",
        "job 1 (oncology-finetune) placed",
        "(pool fr-par-train, zone fr-par-secnum)",
        "refused (exit 1): job 3 refused",
        "job 4 (fr-health-wide) pending",
        "residency     rejected",
        "unhealthy: 2: XID 79",
        "job 1 was lost with the node and requeued",
        "sovra_placements_total",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // The eu-restricted job never lands in the US-owned region.
    let eu = out.lines().skip_while(|l| !l.contains("job 2 (eu-restricted-pretrain)")).take(3).collect::<Vec<_>>();
    assert!(eu.iter().all(|l| !l.contains("de-fra-hyperscaler")), "{eu:?}");
    // The dead daemon's node left the pool within two heartbeat intervals.
    let line = out.lines().find(|l| l.contains("NotReady") && l.contains("ms after its daemon stopped")).unwrap();
    let ms: f64 = line.split(" NotReady ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(ms <= 800.0 + 250.0, "{line}");
    assert!(!err.contains("panicked"), "{err}");
}
