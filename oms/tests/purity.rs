//! Issue #12 item 6: the OMS library is the signing format only. No RPC framework, storage, policy engine, object
//! store or other Sovra crate may enter its normal dependency tree, directly or transitively. (The `sigstore` crate,
//! which signs and verifies, always pulls in tokio and an HTTP client that this crate never calls; those are
//! allowed.) This test reads `cargo metadata` and fails if a forbidden crate creeps in.

#[path = "../../testsupport/dependency_tree.rs"]
mod dependency_tree;

use dependency_tree::{forbidden_in, normal_dependency_tree};

const FORBIDDEN: &[&str] =
    &["tonic", "prost", "axum", "sled", "regorus", "object_store", "sovra-registry", "sovra-promotion", "sovra-domain"];

#[test]
fn oms_pulls_in_no_rpc_storage_or_policy_crate() {
    let tree = normal_dependency_tree(env!("CARGO_MANIFEST_DIR"), "sovra-oms");
    let found = forbidden_in(&tree, FORBIDDEN);
    assert!(found.is_empty(), "sovra-oms now depends on {found:?}; keep the signing format free of them");
    assert!(tree.contains("sigstore"), "the walk found the crate's dependencies");
}
