//! Fuzzes `trace::read_tasks` with in-memory bytes: it never panics, errors name `file:line`, every accepted task
//! has `gpu_milli <= 1000` (0 exactly when `num_gpu` is 0), and reading through a reader that returns one byte at a
//! time gives the same result.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sovra_simulator::trace::read_tasks;
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
    let result = read_tasks(FILE, data);
    match &result {
        Err(e) => {
            assert!(e.line >= 1, "in-memory error without a line: {e}");
            assert!(e.to_string().starts_with(&format!("{FILE}:{}:", e.line)), "error does not name the file: {e}");
        }
        Ok(tasks) => {
            for t in tasks {
                assert!(!t.name.is_empty(), "task without a name");
                assert!(t.gpu_milli <= 1000, "task {} with gpu_milli {}", t.name, t.gpu_milli);
                assert_eq!(t.num_gpu == 0, t.gpu_milli == 0, "task {}: num_gpu vs gpu_milli", t.name);
                assert!(t.num_gpu <= 64, "task {} with {} GPUs", t.name, t.num_gpu);
                assert!(t.num_gpu > 0 || t.gpu_models.is_empty(), "CPU-only task {} with GPU models", t.name);
                assert!(t.gpu_models.iter().all(|m| !m.is_empty()), "task {} with an empty model", t.name);
                assert!(t.total_gpu_milli() <= 64_000);
            }
        }
    }
    assert_eq!(read_tasks(FILE, OneByte(data)), result, "result depends on how the input is buffered");
});
