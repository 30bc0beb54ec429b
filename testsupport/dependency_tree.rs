//! Shared by the purity tests of the pure crates (`scheduler/placement`, `engine`, `oms`), each of which includes this
//! file with `#[path = …] mod dependency_tree;`: one walk of `cargo metadata`, so the three tests cannot drift apart.
//! (A file rather than a crate: it is test code only, and a crate of its own would be one more workspace member for
//! ten lines.)

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Crates that do I/O — async runtimes, RPC, Kubernetes, storage, NVML — and so must never enter a pure crate.
#[allow(dead_code)] // the OMS test has its own list: sigstore brings tokio and an HTTP client
pub const IO_CRATES: &[&str] = &[
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

/// The names of every package in `package`'s normal (not dev, not build) dependency tree, itself included, for the
/// manifest at `manifest_dir`/Cargo.toml.
pub fn normal_dependency_tree(manifest_dir: &str, package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(format!("{manifest_dir}/Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let deps: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .filter_map(|n| {
            let normal = n["deps"]
                .as_array()?
                .iter()
                .filter(|d| d["dep_kinds"].as_array().is_some_and(|k| k.iter().any(|k| k["kind"].is_null())))
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            Some((n["id"].as_str()?, normal))
        })
        .collect();
    let root = names.iter().find(|(_, n)| **n == package).map(|(id, _)| *id).expect("the package is in the metadata");
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(deps.get(id).into_iter().flatten().copied());
        }
    }
    seen.iter().map(|id| names[id].to_string()).collect()
}

/// The members of `tree` that are in `forbidden`.
pub fn forbidden_in<'a>(tree: &'a BTreeSet<String>, forbidden: &[&str]) -> Vec<&'a str> {
    tree.iter().map(String::as_str).filter(|n| forbidden.contains(n)).collect()
}
