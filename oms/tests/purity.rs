//! Issue #12 item 6: the OMS library is the signing format only. No async runtime, RPC, storage, policy engine or
//! object store may enter its normal dependency tree, directly or transitively (the `sigstore` crate, used before,
//! always pulled in tokio). This test reads `cargo metadata` and fails if one creeps in.

use std::collections::{BTreeMap, BTreeSet};
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
    "tower",
    "mio",
    "sled",
    "regorus",
    "object_store",
    "sigstore",
    "sovra-registry",
    "sovra-promotion",
    "sovra-domain",
];

#[test]
fn oms_pulls_in_no_runtime_network_storage_or_policy_crate() {
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
    let root = names.iter().find(|(_, n)| **n == "sovra-oms").map(|(id, _)| *id).unwrap();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(deps.get(id).into_iter().flatten().copied());
        }
    }
    let found: Vec<&str> = seen.iter().map(|id| names[id]).filter(|n| FORBIDDEN.contains(n)).collect();
    assert!(found.is_empty(), "sovra-oms now depends on {found:?}; keep the signing format free of them");
    assert!(seen.iter().any(|id| names[id] == "aws-lc-rs"), "the walk found the crate's dependencies");
}
