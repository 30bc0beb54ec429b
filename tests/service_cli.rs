//! `sovra submit | jobs | job | cancel | nodes | pools | queues | zones | reload` against a scheduler service on
//! loopback, as a user would run them (the binary, its output and exit codes).

use std::path::Path;
use std::process::{Command, Output};

const TOKEN: &str = "cli-test-token";

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).display().to_string()
}

/// Starts the service on the example cluster in a background thread; returns its address.
fn start_server() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let cluster = sovra_domain::ClusterConfig::load(Path::new(&example("cluster.yaml"))).unwrap();
            let s = sovra_scheduler::service::Scheduler::new(cluster, Default::default(), 42, None).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap())).unwrap();
            sovra_scheduler::service::serve(listener, s, TOKEN.into(), std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn sovra(server: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(args)
        .env("SOVRA_SERVER", server)
        .env("SOVRA_TOKEN", token)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn job_commands_against_a_running_scheduler() {
    let server = start_server();
    let o = sovra(&server, TOKEN, &["submit", &example("job.yaml"), "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let job: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(job["state"], "placed");
    assert!(
        job["replicas"].as_array().unwrap().iter().all(|r| r["zone"] == "fr-par-secnum"),
        "fr-health stays in the HDS zone"
    );
    let id = job["id"].as_u64().unwrap().to_string();

    // Each copy (2 replicas × 4 GPUs on one NVLink island each) fills one of the 4 French H100 nodes (two islands
    // of 4 per node): three more copies fit, the fifth waits with an explanation.
    for _ in 0..4 {
        assert_eq!(sovra(&server, TOKEN, &["submit", &example("job.yaml")]).status.code(), Some(0));
    }
    let o = sovra(&server, TOKEN, &["jobs", "--state", "pending", "-o", "json"]);
    let pending: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let waiting = pending.as_array().unwrap()[0]["id"].as_u64().unwrap().to_string();
    let o = sovra(&server, TOKEN, &["job", &waiting, "--explain"]);
    let out = text(&o);
    assert!(out.contains("pending") && out.contains("why: no room now"), "{out}");
    assert!(out.contains("residency") && out.contains("gpu-capacity"), "{out}");
    // The engine's blockers, in its own wording: the first waiting job heads its queue.
    assert!(out.contains("blocked: position 1 of 1 in queue default"), "{out}");
    let o = sovra(&server, TOKEN, &["job", &waiting, "-o", "json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        j["blockers"][0],
        serde_json::json!({"blocker": "position", "queue": "default", "position": 1, "pending": 1})
    );
    assert_eq!(j["preemption_records"], serde_json::json!([]));

    let o = sovra(&server, TOKEN, &["jobs"]);
    assert!(text(&o).contains("oncology-finetune"));
    let o = sovra(&server, TOKEN, &["nodes"]);
    assert!(text(&o).contains("fr-par-h100-0") && text(&o).contains("fr-par-secnum"));
    let o = sovra(&server, TOKEN, &["pools", "-o", "json"]);
    let pools: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pools.as_array().unwrap().len(), 8);

    // Cancelling the first job lets the waiting one start.
    assert_eq!(sovra(&server, TOKEN, &["cancel", &id]).status.code(), Some(0));
    let o = sovra(&server, TOKEN, &["job", &waiting, "-o", "json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["state"], "placed");
}

#[test]
fn exit_codes_for_refusals_bad_input_and_no_access() {
    let server = start_server();
    // Refused at submit: health inference on H100 can never run (exit 1, the explanation printed).
    let dir = std::env::temp_dir().join(format!("sovra-svc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let refused = dir.join("refused.yaml");
    std::fs::write(&refused, "name: r\nkind: inference\nresidency: fr-health\nresources: {gpus: 1, gpu_models: [H100-80GB], cpu_milli: 1000, memory_mib: 1024}\n").unwrap();
    let o = sovra(&server, TOKEN, &["submit", refused.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("refused") && text(&o).contains("even when empty"), "{}", text(&o));
    // Bad job file: exit 2 naming the file and field, nothing sent.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "name: b\nkind: training\nresidency: fr-health\nresources: {gpus: 2, gpu_milli: 300, cpu_milli: 1, memory_mib: 1}\n").unwrap();
    let o = sovra(&server, TOKEN, &["submit", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("bad.yaml: resources.gpu_milli: 300 with gpus 2"), "{}", text(&o));
    // Wrong token, unreachable server: exit 3 with what to do.
    let o = sovra(&server, "wrong", &["jobs"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).contains("wrong token"), "{}", text(&o));
    let o = sovra("http://127.0.0.1:9", TOKEN, &["jobs"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).contains("cannot reach the scheduler"), "{}", text(&o));
    // Unknown job: exit 1.
    assert_eq!(sovra(&server, TOKEN, &["job", "999"]).status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn queues_zones_reload_and_tls_flags() {
    let server = start_server();
    let o = sovra(&server, TOKEN, &["queues", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let q: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(q[0]["name"], "default");
    let o = sovra(&server, TOKEN, &["queues"]);
    assert!(text(&o).contains("default") && text(&o).contains("share"), "{}", text(&o));
    let o = sovra(&server, TOKEN, &["zones", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let z: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let eu = z["residency_classes"].as_array().unwrap().iter().find(|c| c["name"] == "eu-restricted").unwrap();
    assert!(!eu["zones"].as_array().unwrap().iter().any(|z| z == "de-fra-hyperscaler"), "{eu}");
    // This server was not started from a file: reload is refused (exit 1), with the reason.
    let o = sovra(&server, TOKEN, &["reload"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not started from a cluster file"), "{}", text(&o));
    // An https:// server needs the CA: exit 2 naming --ca.
    let o = sovra("https://127.0.0.1:1", TOKEN, &["queues"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--ca"), "{}", text(&o));
}

#[test]
fn a_runner_reports_running_then_succeeded_and_the_gpus_are_released() {
    let server = start_server();
    let o = sovra(&server, TOKEN, &["submit", &example("job.yaml"), "-o", "json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"].as_u64().unwrap().to_string();
    let o = sovra(&server, TOKEN, &["set-state", &id, "succeeded"]);
    assert_eq!(o.status.code(), Some(0), "placed → succeeded is allowed: {}", text(&o));
    let o = sovra(&server, TOKEN, &["set-state", &id, "running"]);
    assert_eq!(o.status.code(), Some(1), "a finished job cannot start: {}", text(&o));
    let o = sovra(&server, TOKEN, &["submit", &example("job.yaml"), "-o", "json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"].as_u64().unwrap().to_string();
    assert_eq!(sovra(&server, TOKEN, &["set-state", &id, "running"]).status.code(), Some(0));
    let o = sovra(&server, TOKEN, &["job", &id, "-o", "json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["state"], "running");
    let o = sovra(&server, TOKEN, &["set-state", &id, "failed", "-o", "json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["state"], "failed");
    let o = sovra(&server, TOKEN, &["pools", "-o", "json"]);
    let pools: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(pools.as_array().unwrap().iter().all(|p| p["used_milli"] == 0), "everything released: {pools}");
    let o = sovra(&server, TOKEN, &["set-state", "999", "running"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}
