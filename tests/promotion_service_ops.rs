//! Operating the promotion service: withdrawing a version through it (pulls refused with the reason, status, the
//! audit log), and a crash test — `kill -9` of the service in the middle of a large promotion leaves the version
//! either fully promoted or not promoted at all, and `sovra registry gc` removes what the copy left.
//!
//! The crash test's model is `SOVRA_CRASH_TEST_MIB` MiB: default 256, which keeps the debug-build test suite
//! within CI's time (1024, the size issue #14 names, takes about three minutes in a debug build on 2 cores; the
//! closing note of #14 records that run).

#[path = "support/service.rs"]
mod service;
#[path = "support/registry_tour.rs"]
mod support;

use serde_json::Value;
use service::*;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_version_withdrawn_through_the_service_is_refused_to_pulls_and_shows_in_status() {
    let t = setup();
    let s = start(&t);
    ok(as_token(&t, &s, "pusher-ci", &push_args()));
    ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "registry"]));
    let withdraw = ["model", "withdraw", "radiology", "--zone", "fr-par-secnum", "--stage", "registry", "--reason"];
    let mut a = withdraw.to_vec();
    a.extend(["CVE-2026-4711: poisoned tokenizer", "--key", "keys/secops.pem"]);
    // The admin's key, but a client without the role: refused, naming it.
    let (code, _, err) = as_token(&t, &s, "promoter-ci", &a);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`withdrawer`"), "{err}");
    // The role, but not an admin's key: refused on the client.
    let mut b = withdraw.to_vec();
    b.extend(["x", "--key", "keys/alice.pem"]);
    assert_eq!(as_token(&t, &s, "withdraw-ci", &b).0, 2);
    let out = ok(as_token(&t, &s, "withdraw-ci", &a));
    assert!(out.contains("Withdrawn radiology@") && out.contains("fr-par-secnum/registry"), "{out}");

    let (code, _, err) = as_token(
        &t,
        &s,
        "pusher-ci",
        &["model", "pull", "radiology", "out", "--zone", "fr-par-secnum", "--stage", "registry"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("withdrawn") && err.contains("poisoned tokenizer"), "{err}");
    assert!(!t.p("out").exists(), "nothing pulled");
    // From training it still pulls, and the pull is audited with its caller.
    ok(as_token(&t, &s, "pusher-ci", &["model", "pull", "radiology", "out", "--stage", "training"]));
    let st: Value =
        serde_json::from_str(&ok(as_token(&t, &s, "pusher-ci", &["model", "status", "radiology", "-o", "json"])))
            .unwrap();
    assert_eq!(st["withdrawn"][0]["reason"], "CVE-2026-4711: poisoned tokenizer", "{st}");
    assert_eq!(st["locations"].as_array().unwrap().len(), 1, "{st}");
    let text = ok(as_token(&t, &s, "pusher-ci", &["model", "status", "radiology"]));
    assert!(text.contains("WITHDRAWN from fr-par-secnum/registry"), "{text}");
    let log: Value = serde_json::from_str(&ok(as_token(&t, &s, "audit-ci", &["audit", "log", "-o", "json"]))).unwrap();
    let entries = log.as_array().unwrap();
    let w = entries.iter().find(|e| e["kind"] == "withdrawal").expect("audited");
    assert_eq!(w["actor"], "withdraw-ci");
    let pull = entries.last().unwrap();
    assert_eq!((pull["kind"].as_str(), pull["actor"].as_str()), (Some("pull"), Some("pusher-ci")));
    // Promoting it there again goes through the gates again.
    ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "registry"]));
    ok(as_token(&t, &s, "pusher-ci", &["model", "pull", "radiology", "again", "--stage", "registry"]));
}

/// Writes `mib` MiB of incompressible-looking bytes (xorshift) to `path`.
fn big_file(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

/// Any file under `dir` (recursively).
fn has_files(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else { return false };
    rd.flatten().any(|e| if e.path().is_dir() { has_files(&e.path()) } else { true })
}

#[test]
fn kill_9_during_a_large_promotion_leaves_it_all_or_nothing_and_gc_removes_the_rest() {
    let mib: usize = std::env::var("SOVRA_CRASH_TEST_MIB").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    let t = setup();
    big_file(&t.p("model/weights/big.bin"), mib);
    t.ok(&["model", "sign", "model", "--private-key", "keys/trainer.pem", "--signature", "model.sig"]);
    let mut s = start(&t);
    ok(as_token(&t, &s, "pusher-ci", &push_args()));
    let target = t.p("service-registry/blobs/zones/fr-par-secnum/registry");
    let ca = t.p("tls/ca.pem");
    let mut promote = t
        .cmd(&["model", "promote", "radiology", "--to", "registry", "--server", &s.url])
        .args(["--ca", ca.to_str().unwrap(), "--token", token("promoter-ci")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the service as soon as the copy into the target data zone has begun.
    let began = Instant::now();
    while !has_files(&target) && began.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(has_files(&target), "the promotion never started copying");
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    let client_saw_success = promote.wait().unwrap().success();
    drop(s);

    // Offline: the version is not promoted (the commit never ran), and gc finds what the copy left.
    let (reg, cfg) = (t.p("service-registry"), t.p("service.yaml"));
    // `model …` reads the promotion config; `registry gc` and `audit verify` only the registry.
    let local = |args: &[&'static str]| -> Vec<&str> {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--registry", reg.to_str().unwrap()]);
        if args[0] == "model" {
            a.extend(["--promotion-config", cfg.to_str().unwrap()]);
        }
        a
    };
    let st = t.json(&local(&["model", "status", "radiology"]), 0);
    let locations = st["locations"].as_array().unwrap().len();
    let promotions = st["promotions"].as_array().unwrap().len();
    assert!(
        (locations, promotions) == (1, 0) || (locations, promotions) == (2, 1),
        "half promoted: {locations} location(s), {promotions} promotion(s): {st}"
    );
    assert!(!client_saw_success || locations == 2, "the client was told of a promotion that did not happen");
    let gc = t.json(&local(&["registry", "gc"]), 0);
    if locations == 1 {
        let orphans = gc["orphans"].as_array().unwrap();
        assert!(orphans.iter().all(|o| o["data_zone"] == "fr-par-secnum/registry"), "{gc}");
        t.json(&local(&["registry", "gc", "--remove-orphans"]), 0);
        let gc = t.json(&local(&["registry", "gc"]), 0);
        assert!(gc["orphans"].as_array().unwrap().is_empty(), "{gc}");
    } else {
        assert!(gc["orphans"].as_array().unwrap().is_empty(), "{gc}");
    }
    t.ok(&local(&["audit", "verify"]));

    // The service comes back and the promotion completes, every blob verified.
    let s = start(&t);
    if locations == 1 {
        ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "registry"]));
    }
    let st: Value =
        serde_json::from_str(&ok(as_token(&t, &s, "pusher-ci", &["model", "status", "radiology", "-o", "json"])))
            .unwrap();
    assert_eq!(st["locations"].as_array().unwrap().len(), 2, "{st}");
    assert!(st["promotions"][0]["statement_verified"] == true, "{st}");
    // Every blob of both data zones re-verifies through the service.
    let c: Value =
        serde_json::from_str(&ok(as_token(&t, &s, "pusher-ci", &["model", "check", "radiology", "-o", "json"])))
            .unwrap();
    assert_eq!(c["verified"], true, "{c}");
    assert_eq!(c["data_zones"].as_array().unwrap().len(), 2, "{c}");
}
