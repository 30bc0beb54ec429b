//! The engine must stay pure, like the placement core under it: no async runtime, RPC, Kubernetes, storage or NVML
//! crate may enter its normal dependency tree (directly or transitively), and it reads no clock — time is an input
//! of its callers (the service's wall clock, the simulator's simulated one). This test reads `cargo metadata` for
//! the first and scans the crate's own source for the second.

#[path = "../../testsupport/dependency_tree.rs"]
mod dependency_tree;

use dependency_tree::{IO_CRATES, forbidden_in, normal_dependency_tree};
use std::path::Path;

#[test]
fn engine_has_no_io_dependencies() {
    let tree = normal_dependency_tree(env!("CARGO_MANIFEST_DIR"), "sovra-engine");
    let found = forbidden_in(&tree, IO_CRATES);
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
