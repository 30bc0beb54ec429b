//! The engine must stay pure, like the placement core under it: no async runtime, RPC, Kubernetes, storage or NVML
//! crate may enter its normal dependency tree (directly or transitively), and it reads no clock — time is an input
//! of its callers (the service's wall clock, the simulator's simulated one). This test reads `cargo metadata` for
//! the first and scans the crate's own source for the second.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "futures",
    "tonic",
    "prost",
    "hyper",
    "axum",
    "reqwest",
    "kube",
    "kube-client",
    "k8s-openapi",
    "sled",
    "redb",
    "fjall",
    "rocksdb",
    "nvml-wrapper",
    "tower",
    "mio",
];

/// Names of every package in `sovra-engine`'s normal (not dev, not build) dependency tree, itself included.
fn normal_dependency_tree() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let deps: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let normal = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), normal)
        })
        .collect();
    let root = names.iter().find(|(_, n)| **n == "sovra-engine").map(|(id, _)| *id).unwrap();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(deps.get(id).into_iter().flatten().copied());
        }
    }
    seen.iter().map(|id| names[id].to_string()).collect()
}

#[test]
fn engine_has_no_io_dependencies() {
    let tree = normal_dependency_tree();
    let found: Vec<&String> = tree.iter().filter(|n| FORBIDDEN.contains(&n.as_str())).collect();
    assert!(found.is_empty(), "the engine now depends on {found:?}; keep I/O out of it");
    assert!(
        tree.contains("sovra-placement") && tree.contains("sovra-domain"),
        "the walk found the engine's dependencies"
    );
}

#[test]
fn engine_reads_no_clock() {
    let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut scanned = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        scanned += 1;
        for needle in ["SystemTime", "Instant", "std::time", "UNIX_EPOCH", "thread::sleep"] {
            assert!(
                !text.contains(needle),
                "{} mentions {needle}: the engine must not read a clock; take the time as an argument",
                p.display()
            );
        }
    }
    assert!(scanned >= 3, "the scan found the engine's source files ({scanned})");
}
