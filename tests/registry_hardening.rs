//! Regression tests of issue #11 for the registry, through the real `sovra` binary on real files: a rolled-back
//! or damaged `meta.sled` is never reported intact (items 3), exceptions are bounded (4), empty models are
//! refused (5), a killed promotion leaves nothing behind that the next open or `sovra registry gc` does not find
//! (11), `pull` puts the bundle beside the model (13) and stage flags are value enums (7).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "support/registry_tour.rs"]
mod registry_tour;

use registry_tour::Tour;

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_rolled_back_registry_is_not_reported_intact() {
    let t = Tour::new();
    t.history();
    // Backups of meta.sled taken one and three commits before the end.
    let snapshot = |name: &str| copy_dir(&t.p("registry/meta.sled"), &t.p(name));
    snapshot("minus3");
    t.ok(&["model", "approve", "radiology", "--to", "registry", "--key", "keys/alice.pem"]);
    t.ok(&["model", "approve", "radiology", "--to", "registry", "--key", "keys/bob.pem"]);
    snapshot("minus1");
    t.ok(&["model", "promote", "radiology", "--to", "inference"]);
    let (code, good) = t.verify(&[]);
    assert_eq!(code, 0, "{good}");
    assert_eq!(good["entries"], 8, "{good}");
    let head = good["head"]["hash"].as_str().unwrap().to_string();
    let (_, v) = t.verify(&["--expect-head", &head]);
    assert_eq!(v["status"], "intact", "{v}");

    for (backup, left) in [("minus1", 7), ("minus3", 5)] {
        // The database goes back to the backup; audit.head stays where the last commit put it.
        copy_dir(&t.p(backup), &t.p("registry/meta.sled"));
        let (code, v) = t.verify(&[]);
        assert_eq!(code, 1, "dropping {} entries must be detected: {v}", 8 - left);
        assert_eq!(v["status"], "broken");
        assert_eq!(v["entries"], left);
        assert_eq!(v["last_good"]["seq"], left - 1, "the last good entry is named: {v}");
        let problems = v["problems"].to_string();
        assert!(problems.contains("rolled back") && problems.contains("records 8 entries"), "{problems}");
        // Text output names the last good entry too.
        let (out, err) = t.expect(&["audit", "verify"], 1);
        assert!(out.contains(&format!("last good entry: #{}", left - 1)), "{out}");
        assert!(err.contains("last good entry"), "{err}");
        // Nothing else runs on the rolled-back state: promotions would vanish silently from `model list`.
        let (_, err) = t.expect(&["model", "list"], 1);
        assert!(err.contains("DAMAGED") && err.contains("rolled back"), "{err}");
        t.expect(&["model", "promote", "radiology", "--to", "inference", "--zone", "de-fra-c5"], 1);
        // A pipeline that anchored the head finds it gone too, even with the head file removed.
        let (code, v) = t.verify(&["--expect-head", &head]);
        assert_eq!(code, 1, "{v}");
        assert!(v["problems"].to_string().contains("expected head"), "{v}");
    }
    // A malformed anchor is bad input.
    t.expect(&["audit", "verify", "--expect-head", "xyz"], 2);
}

#[test]
fn a_missing_head_file_or_database_is_detected_when_entries_exist() {
    let t = Tour::new();
    t.history();
    std::fs::copy(t.p("registry/audit.head"), t.p("audit.head.saved")).unwrap();
    std::fs::remove_file(t.p("registry/audit.head")).unwrap();
    let (code, v) = t.verify(&[]);
    assert_eq!(code, 1, "{v}");
    assert!(v["problems"].to_string().contains("is missing but the log has 5 entries"), "{v}");
    let (_, err) = t.expect(&["model", "list"], 1);
    assert!(err.contains("audit.head is missing"), "{err}");
    // meta.sled gone entirely while the head says 5 entries: refused, and no empty database is created.
    std::fs::copy(t.p("audit.head.saved"), t.p("registry/audit.head")).unwrap();
    std::fs::remove_dir_all(t.p("registry/meta.sled")).unwrap();
    let (_, err) = t.expect(&["audit", "verify"], 1);
    assert!(err.contains("meta.sled is missing"), "{err}");
    let (_, err) =
        t.expect(&["model", "push", "x", "model", "--signature", "model.sig", "--residency-class", "fr-health"], 1);
    assert!(err.contains("meta.sled is missing"), "{err}");
    assert!(!t.p("registry/meta.sled").exists());
}

#[test]
fn the_witness_catches_a_rollback_of_meta_sled_and_head_file_together() {
    let t = Tour::new();
    let witness = t.p("witness/audit.head");
    let w = witness.to_str().unwrap().to_string();
    let with = |args: &[&str]| -> (i32, String, String) {
        let o = t.cmd(args).env("SOVRA_AUDIT_WITNESS", &w).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into(),
            String::from_utf8_lossy(&o.stderr).into(),
        )
    };
    // A witness configured on an existing registry starts missing: refused until the operator accepts the log.
    t.push();
    let (code, _, err) = with(&["model", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("witness") && err.contains("missing"), "{err}");
    let (code, out, err) = with(&["audit", "reset-head"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(witness.exists());
    copy_dir(&t.p("registry"), &t.p("backup"));
    let (code, out, err) = with(&["model", "promote", "radiology", "--to", "registry"]);
    assert_eq!(code, 0, "{out}{err}");
    // The whole registry directory (database and its head file) goes back to the backup.
    copy_dir(&t.p("backup"), &t.p("registry"));
    let (code, _, _) = t.code(&["audit", "verify"]);
    assert_eq!(code, 0, "without the witness the restored registry is self-consistent");
    let (code, out, err) = with(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("witness") && out.contains("rolled back"), "{out}");
    let (code, _, err) = with(&["model", "list"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn reset_head_is_refused_on_a_broken_chain_and_recorded_on_an_intact_one() {
    let t = Tour::new();
    t.history();
    std::fs::remove_file(t.p("registry/audit.head")).unwrap();
    let out = t.ok(&["audit", "reset-head", "--actor", "ops"]);
    assert!(out.contains("head file") && out.contains("was missing"), "{out}");
    let v = t.json(&["audit", "verify"], 0);
    assert_eq!(v["entries"], 6, "the reset is itself an audit entry: {v}");
    let log = t.json(&["audit", "log"], 0);
    assert_eq!(log[5]["kind"], "head_reset");
    assert_eq!(log[5]["actor"], "ops");
    t.ok(&["model", "list"]);
    // A broken chain cannot be accepted.
    {
        let reg = sovra_registry::Registry::open(&t.p("registry")).unwrap();
        reg.raw_audit_tree().remove(2u64.to_be_bytes()).unwrap();
        reg.raw_audit_tree().flush().unwrap();
    }
    let (_, err) = t.expect(&["audit", "reset-head"], 1);
    assert!(err.contains("chain itself is broken"), "{err}");
}

/// The reporter's case: a truncated `meta.sled`, on a registry large enough for sled to use several log
/// segments, so that a truncation can make sled recover an older state.
#[test]
fn a_truncated_or_overwritten_meta_sled_is_never_reported_intact() {
    let t = Tour::new();
    t.push();
    t.ok(&["model", "promote", "radiology", "--to", "registry"]);
    let n = 602u64;
    {
        let reg = sovra_registry::Registry::open(&t.p("registry")).unwrap();
        for i in 2..n {
            let event = sovra_registry::AuditEvent {
                kind: "approval".into(),
                subject: format!("radiology@{i}"),
                actor: "alice".into(),
                details: serde_json::json!({"note": "x".repeat(2000), "i": i}),
            };
            reg.audit(event).unwrap();
        }
    }
    let (code, v) = t.verify(&[]);
    assert_eq!((code, v["entries"].as_u64()), (0, Some(n)), "{v}");
    let db = t.p("registry/meta.sled/db");
    let len = std::fs::metadata(&db).unwrap().len();
    let pristine = t.p("pristine");
    copy_dir(&t.p("registry"), &pristine);
    let mut cuts: Vec<u64> = (1..32).map(|i| len * i / 32).collect();
    cuts.extend([0, 4096, len - 1]);
    let (mut detected, mut rolled_back, mut recovered) = (0, 0, 0);
    let mut damage = |label: String, apply: &dyn Fn(&Path)| {
        copy_dir(&pristine, &t.p("registry"));
        apply(&db);
        let (code, v) = t.verify(&[]);
        match code {
            1 => {
                detected += 1;
                // The reporter's fault: sled recovered an older, self-consistent state; only the head file knows.
                if v["problems"].to_string().contains("rolled back") && v["entries"].as_u64() < Some(n) {
                    rolled_back += 1;
                }
            }
            0 => {
                // Only a damage sled repairs completely may verify, and then with every entry.
                assert_eq!(v["entries"].as_u64(), Some(n), "{label}: reported intact with fewer entries: {v}");
                recovered += 1;
            }
            other => panic!("{label}: exit {other} (must be 0 with all {n} entries, or 1): {v}"),
        }
        // And `model list` never shows a rolled-back state as fine: it refuses, or shows the promotion. (Damage
        // inside the log that leaves its tail and the versions readable is `audit verify`'s to report.)
        let (code, out, err) = t.code(&["model", "list", "-o", "json"]);
        match code {
            1 => assert!(err.contains("DAMAGED"), "{label}: {err}"),
            0 => {
                let list: Value = serde_json::from_str(&out).unwrap();
                assert_eq!(list[0]["current"], "fr-par-secnum/registry", "{label}: model list shows {list}");
            }
            other => panic!("{label}: model list exit {other}: {err}"),
        }
    };
    for cut in &cuts {
        damage(format!("truncated to {cut} of {len} bytes"), &|db| {
            std::fs::OpenOptions::new().write(true).open(db).unwrap().set_len(*cut).unwrap();
        });
    }
    for off in (0..16).map(|i| len * i / 16) {
        damage(format!("64 bytes overwritten at {off}"), &|db| {
            use std::io::{Seek, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
            f.seek(std::io::SeekFrom::Start(off)).unwrap();
            f.write_all(&[0xA5; 64]).unwrap();
        });
    }
    println!(
        "{len}-byte meta.sled/db: {detected} damages detected ({rolled_back} rollbacks to an older state), \
         {recovered} repaired by sled with all {n} entries"
    );
    assert!(rolled_back > 0, "no damage made sled recover an older state; the test no longer covers the fault");
}

#[test]
fn an_exception_longer_than_max_ttl_is_refused() {
    let t = Tour::new();
    t.push();
    let grant = |ttl: &str| {
        t.code(&[
            "exception",
            "grant",
            "--model",
            "radiology",
            "--gate",
            "evaluation",
            "--ttl",
            ttl,
            "--reason",
            "incident 7",
            "--key",
            "keys/secops.pem",
        ])
    };
    let (code, _, err) = grant("100000000h");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("3650d"), "the parse limit is named: {err}");
    let (code, _, err) = grant("99999999999999999999999d");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("longer than the limit"), "{err}");
    let (code, _, err) = grant("25h");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exceptions.max_ttl (24h"), "the configured limit is named: {err}");
    let (code, out, err) = grant("24h");
    assert_eq!(code, 0, "{out}{err}");
    // The limit is configurable.
    let cfg = std::fs::read_to_string(t.p("promotion.yaml")).unwrap();
    assert!(cfg.contains("max_ttl: 24h"), "examples/promotion.yaml shows the field");
    let cfg = cfg.replace("max_ttl: 24h", "max_ttl: 2h");
    std::fs::write(t.p("promotion.yaml"), cfg).unwrap();
    let (code, _, err) = grant("3h");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exceptions.max_ttl (2h"), "{err}");
    assert_eq!(grant("2h").0, 0);
    // Without the field, the default is 24 hours.
    let cfg = std::fs::read_to_string(t.p("promotion.yaml"))
        .unwrap()
        .replace("exceptions:\n", "")
        .replace("  max_ttl: 2h", "");
    std::fs::write(t.p("promotion.yaml"), cfg).unwrap();
    let (code, _, err) = grant("25h");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exceptions.max_ttl (24h"), "{err}");
}

#[test]
fn an_empty_model_is_refused_at_sign_and_push() {
    let t = Tour::new();
    std::fs::create_dir_all(t.p("empty/.git")).unwrap();
    std::fs::write(t.p("empty/.git/HEAD"), "ref: x\n").unwrap(); // ignored by default: still no files
    let (_, err) =
        t.expect(&["model", "sign", "empty", "--private-key", "keys/trainer.pem", "--signature", "e.sig"], 2);
    assert!(err.contains("no files") && err.contains("--allow-empty"), "{err}");
    assert!(!t.p("e.sig").exists(), "nothing is written");
    t.ok(&["model", "sign", "empty", "--private-key", "keys/trainer.pem", "--signature", "e.sig", "--allow-empty"]);
    let (_, err) =
        t.expect(&["model", "push", "radiology", "empty", "--signature", "e.sig", "--residency-class", "fr-health"], 2);
    assert!(err.contains("no files"), "{err}");
    let list = t.json(&["model", "list"], 0);
    assert_eq!(list, serde_json::json!([]), "nothing was stored");
}

#[test]
fn a_bogus_stage_value_exits_2_listing_the_valid_ones() {
    let t = Tour::new();
    let (_, err) = t.expect(&["model", "promote", "radiology", "--to", "bogus"], 2);
    assert!(err.contains("possible values: registry, inference"), "{err}");
    let (_, err) = t.expect(&["model", "pull", "radiology", "out", "--stage", "prod"], 2);
    assert!(err.contains("possible values: training, registry, inference"), "{err}");
    let (_, err) = t.expect(&["model", "approve", "radiology", "--to", "training", "--key", "keys/alice.pem"], 2);
    assert!(err.contains("possible values: registry, inference"), "{err}");
}

#[test]
fn pull_writes_the_bundle_beside_the_directory_not_hidden_inside() {
    let t = Tour::new();
    t.push();
    let out = t.ok(&["model", "pull", "radiology", "out/"]);
    assert!(t.p("out.sig").is_file(), "the bundle goes to out.sig: {out}");
    assert!(!t.p("out/.sig").exists(), "never a hidden file inside the model");
    assert!(out.contains("bundle → out.sig"), "the output says where the bundle went: {out}");
    t.ok(&["model", "verify", "out", "--signature", "out.sig", "--public-key", "keys/trainer.pub.pem"]);
    // The reference implementation agrees, when installed (tests/model_signing_interop.rs installs it in CI).
    if let Some(exe) = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("model_signing")).find(|f| f.is_file()))
    {
        let o = Command::new(exe)
            .current_dir(t.dir.path())
            .args(["verify", "key", "out", "--signature", "out.sig", "--public_key", "keys/trainer.pub.pem"])
            .output()
            .unwrap();
        assert!(o.status.success(), "model_signing verify: {}", String::from_utf8_lossy(&o.stderr));
    }
    // An existing bundle file is never overwritten.
    let (_, err) = t.expect(&["model", "pull", "radiology", "again", "--signature", "out.sig"], 2);
    assert!(err.contains("out.sig: exists"), "{err}");
    assert!(!t.p("again").exists(), "nothing was written");
    let v = t.json(&["model", "pull", "radiology", "third"], 0);
    assert_eq!(v["signature"], "third.sig");
}

/// The reporter's case: `kill -9` during a promotion. The model is 64 MiB in debug builds (hashing runs at about
/// 25 MiB/s there) and 512 MiB in release builds; the kill lands while the big blob streams into the target zone.
#[test]
fn a_killed_promotion_leaves_no_temp_file_behind() {
    let t = Tour::new();
    std::fs::create_dir_all(t.p("big")).unwrap();
    std::fs::write(t.p("big/config.json"), b"{\"layers\": 80}\n").unwrap();
    let size: u32 = if cfg!(debug_assertions) { 64 << 20 } else { 512 << 20 };
    let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(t.p("big/weights.bin"), &data).unwrap();
    drop(data);
    t.ok(&["model", "sign", "big", "--private-key", "keys/trainer.pem", "--signature", "big.sig"]);
    t.push_model("big", "big.sig");
    let target = t.p("registry/blobs/zones/fr-par-secnum/registry");
    let mut child = t
        .cmd(&["model", "promote", "radiology", "--to", "registry"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let find_temp = || -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![target.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else if e.file_name().to_string_lossy().starts_with(".sovra-tmp-") {
                    found.push(e.path());
                }
            }
        }
        found
    };
    let start = std::time::Instant::now();
    let temp = loop {
        let found = find_temp();
        if !found.is_empty() && std::fs::metadata(&found[0]).map(|m| m.len() >= 1 << 20).unwrap_or(false) {
            break found;
        }
        assert!(child.try_wait().unwrap().is_none(), "the promotion ended before a temp file was seen");
        assert!(start.elapsed().as_secs() < 120, "no temp file appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left: u64 = temp.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    assert!(left > 0 && temp.iter().all(|p| p.exists()), "the kill left a temp file ({left} bytes)");
    // `registry gc` (any open) removes it and reports it; the blob copied before the kill is an orphan.
    let gc = t.json(&["registry", "gc"], 0);
    let removed: Vec<&str> = gc["temp_files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for p in &temp {
        assert!(!p.exists(), "{} is still there", p.display());
        assert!(removed.contains(&p.to_str().unwrap()), "gc reports {}: {gc}", p.display());
    }
    let orphans = gc["orphans"].as_array().unwrap().clone();
    assert!(orphans.iter().all(|o| o["data_zone"] == "fr-par-secnum/registry"), "{gc}");
    if !orphans.is_empty() {
        let gc = t.json(&["registry", "gc", "--remove-orphans"], 0);
        assert_eq!(gc["removed_orphans"], true);
        assert_eq!(t.json(&["registry", "gc"], 0)["orphans"], serde_json::json!([]));
    }
    // The promotion then goes through and leaves nothing behind; the training copies are untouched.
    t.ok(&["model", "promote", "radiology", "--to", "registry"]);
    assert!(find_temp().is_empty());
    let gc = t.json(&["registry", "gc"], 0);
    assert_eq!((gc["temp_files"].as_array().unwrap().len(), gc["orphans"].as_array().unwrap().len()), (0, 0), "{gc}");
    t.ok(&["model", "pull", "radiology", "back", "--stage", "registry"]);
    assert_eq!(std::fs::metadata(t.p("back/weights.bin")).unwrap().len(), u64::from(size));
    t.ok(&["audit", "verify"]);
}

#[test]
fn a_planted_staged_upload_of_object_store_is_removed_at_open() {
    // Registries written before the `.sovra-tmp-` names (object_store's `<digest>#<n>` staging files).
    let t = Tour::new();
    t.push();
    let dir = t.p("registry/blobs/zones/fr-par-secnum/training/sha256/ab");
    std::fs::create_dir_all(&dir).unwrap();
    let staged = dir.join(format!("{}#1", "ab".repeat(32)));
    std::fs::write(&staged, vec![0u8; 4096]).unwrap();
    let keep = dir.join("notes#1");
    std::fs::write(&keep, b"not ours").unwrap();
    let gc = t.json(&["registry", "gc"], 0);
    assert!(!staged.exists());
    assert!(keep.exists(), "only names the registry writes are removed");
    assert_eq!(gc["temp_files"][0]["bytes"], 4096, "{gc}");
}
