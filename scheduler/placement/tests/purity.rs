//! The placement core must stay pure: no async runtime, RPC, Kubernetes, storage or NVML crate may enter its
//! normal dependency tree (directly or transitively). This test reads `cargo metadata` and fails if one creeps in.

#[path = "../../../testsupport/dependency_tree.rs"]
mod dependency_tree;

use dependency_tree::{IO_CRATES, forbidden_in, normal_dependency_tree};

#[test]
fn placement_core_has_no_io_dependencies() {
    let tree = normal_dependency_tree(env!("CARGO_MANIFEST_DIR"), "sovra-placement");
    let found = forbidden_in(&tree, IO_CRATES);
    assert!(found.is_empty(), "the placement core now depends on {found:?}; keep I/O out of it");
    assert!(tree.contains("sovra-domain"), "the walk found the core's dependencies");
}
