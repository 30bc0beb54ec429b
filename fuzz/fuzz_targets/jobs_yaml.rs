//! Fuzzes `jobs_from_yaml`: it never panics, hangs or allocates without bound, errors name the file, jobs it accepts
//! are well formed, and every number it accepts is the number written in the file (no silent truncation).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_yaml_ng::Value;
use sovra_domain::{GPU_MILLI, Job, NvlinkWish, jobs_from_yaml};

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match jobs_from_yaml(FILE, text) {
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            assert!(e.to_string().starts_with(FILE), "error does not name the file: {e}");
        }
        Ok(jobs) => {
            assert!(!jobs.is_empty(), "no jobs accepted");
            // The same text as an untyped document, to compare the numbers written with the numbers accepted.
            let doc: Value = serde_yaml_ng::from_str(text).expect("accepted text is YAML");
            let written: Vec<&Value> = match doc.get("jobs").and_then(Value::as_sequence) {
                Some(list) => list.iter().collect(),
                None => vec![&doc],
            };
            assert_eq!(written.len(), jobs.len(), "number of jobs");
            for (job, w) in jobs.iter().zip(written) {
                check(job, w);
            }
        }
    }
});

fn check(job: &Job, written: &Value) {
    for (what, s) in [("name", &job.name), ("queue", &job.queue), ("residency", &job.residency)] {
        assert!(!s.trim().is_empty(), "empty {what} accepted");
    }
    let r = &job.resources;
    assert!(job.replicas >= 1, "0 replicas accepted");
    assert!(r.cpu_milli >= 1 && r.memory_mib >= 1, "no CPU or memory accepted");
    assert!(r.gpu_milli <= GPU_MILLI, "gpu_milli {} accepted", r.gpu_milli);
    assert_eq!(r.gpus == 0, r.gpu_milli == 0, "gpus {} with gpu_milli {}", r.gpus, r.gpu_milli);
    assert!(r.gpus <= 1 || r.gpu_milli == GPU_MILLI, "a share of several GPUs accepted");
    assert!(r.gpus > 0 || r.gpu_models.is_empty(), "GPU models without GPUs accepted");
    assert!(job.nvlink == NvlinkWish::None || r.gpus >= 2, "NVLink wish with {} GPUs accepted", r.gpus);
    let int = |v: Option<&Value>| v.and_then(Value::as_i64);
    let res = written.get("resources");
    for (what, accepted, w) in [
        ("replicas", i128::from(job.replicas), int(written.get("replicas"))),
        ("priority", i128::from(job.priority), int(written.get("priority"))),
        ("resources.gpus", i128::from(r.gpus), int(res.and_then(|r| r.get("gpus")))),
        ("resources.cpu_milli", i128::from(r.cpu_milli), int(res.and_then(|r| r.get("cpu_milli")))),
        ("resources.memory_mib", i128::from(r.memory_mib), int(res.and_then(|r| r.get("memory_mib")))),
    ] {
        if let Some(w) = w {
            assert_eq!(accepted, i128::from(w), "{what} written as {w} but accepted as {accepted}");
        }
    }
}
