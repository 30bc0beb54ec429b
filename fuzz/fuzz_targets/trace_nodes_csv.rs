//! Fuzzes `trace::read_nodes` with in-memory bytes: it never panics, errors name `file:line`, accepted nodes are
//! well formed, and reading through a reader that returns one byte at a time gives the same result.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sovra_simulator::trace::read_nodes;
use std::io::Read;

const FILE: &str = "fuzz.csv";

/// A reader that returns at most one byte per call, to exercise every buffer boundary.
struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(1);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let result = read_nodes(FILE, data);
    match &result {
        Err(e) => {
            assert!(e.line >= 1, "in-memory error without a line: {e}");
            assert!(e.to_string().starts_with(&format!("{FILE}:{}:", e.line)), "error does not name the file: {e}");
        }
        Ok(nodes) => {
            for n in nodes {
                assert!(!n.name.is_empty(), "node without a name");
                assert!(n.gpus <= 64, "node {} with {} GPUs", n.name, n.gpus);
                assert!(n.gpus == 0 || !n.model.is_empty(), "node {} has GPUs but no model", n.name);
            }
        }
    }
    assert_eq!(read_nodes(FILE, OneByte(data)), result, "result depends on how the input is buffered");
});
