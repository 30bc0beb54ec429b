//! Issue #11, bounded input sizes: `sovra place` on a job file over a limit exits 2 with a message naming the field
//! and the limit — before it allocates anything for the job (`replicas: 4000000000` used to ask for hundreds of GiB
//! and abort with exit 134).

use std::path::Path;
use std::process::Command;

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).display().to_string()
}

/// Runs `sovra place` on the example cluster and a job file with `body`; returns (exit code, stderr).
fn place(body: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.yaml");
    std::fs::write(&job, body).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["place", "--config", &example("cluster.yaml"), "--job"])
        .arg(&job)
        .output()
        .expect("the sovra binary runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn job(replicas: &str, resources: &str) -> String {
    format!("name: big\nkind: training\nresidency: eu-any\nreplicas: {replicas}\nresources: {{{resources}}}\n")
}

#[test]
fn place_with_replicas_over_limit_exits_2_not_134() {
    let (code, err) = place(&job("4000000000", "gpus: 1, cpu_milli: 1000, memory_mib: 1024"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("replicas: 4000000000 is over the limit of 10000 replicas per job"), "{err}");
}

#[test]
fn place_with_sizes_over_limits_names_each_field() {
    let name = "n".repeat(300);
    let models = vec!["H100"; 1001].join(", ");
    for (body, expected) in [
        (job("1", "gpus: 65, cpu_milli: 1000, memory_mib: 1024"), "resources.gpus: 65 is over the limit of 64 GPUs"),
        (
            job("1", "gpus: 1, cpu_milli: 9223372036854775807, memory_mib: 1"),
            "resources.cpu_milli: 9223372036854775807 is over the limit of 1000000000 milli-cores",
        ),
        (
            job("1", "gpus: 1, cpu_milli: 1, memory_mib: 1099511627777"),
            "resources.memory_mib: 1099511627777 is over the limit of 1099511627776 MiB",
        ),
        (
            job("1", &format!("gpus: 1, gpu_models: [{models}], cpu_milli: 1, memory_mib: 1")),
            "resources.gpu_models: has 1001 entries; at most 1000",
        ),
        (
            job("1", "gpus: 1, cpu_milli: 1, memory_mib: 1").replace("name: big", &format!("name: {name}")),
            "name: is 300 bytes long; at most 253",
        ),
    ] {
        let (code, err) = place(&body);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
    // A list of more than MAX_JOBS_PER_FILE jobs.
    let one = "{name: j, kind: training, residency: eu-any, resources: {cpu_milli: 1, memory_mib: 1}}";
    let (code, err) = place(&format!("jobs: [{}]\n", vec![one; 10_001].join(", ")));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("jobs: has 10001 jobs; a job file may hold at most 10000"), "{err}");
}
