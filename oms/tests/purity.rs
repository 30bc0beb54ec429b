//! Issue #12 item 6: the OMS library is the signing format only. No RPC framework, storage, policy engine, object
//! store or other Sovra crate may enter its normal dependency tree, directly or transitively. (The `sigstore` crate,
//! which signs and verifies, always pulls in tokio and an HTTP client that this crate never calls; those are
//! allowed.) This test reads `cargo metadata` and fails if a forbidden crate creeps in.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const FORBIDDEN: &[&str] =
    &["tonic", "prost", "axum", "sled", "regorus", "object_store", "sovra-registry", "sovra-promotion", "sovra-domain"];

#[test]
fn oms_pulls_in_no_rpc_storage_or_policy_crate() {
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
    assert!(seen.iter().any(|id| names[id] == "sigstore"), "the walk found the crate's dependencies");
}
