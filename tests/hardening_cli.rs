//! Regression tests of issue 11 ("what a hostile or careless user breaks today") for the `sovra` binary: flags of
//! a fixed set of values, secrets in help, broken pipes, `sovra dev`'s heartbeat and tour, `reload` under `sovra
//! dev`, `simulate` from another folder, scenario limits, and nodes whose GPUs cannot be read.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sovra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

#[test]
fn an_unknown_job_state_filter_exits_2_listing_the_valid_states() {
    // Before: `sovra jobs --state bogus` asked the scheduler, printed an empty list and exited 0.
    let o = sovra(&["jobs", "--state", "bogus", "--server", "http://127.0.0.1:1"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for state in ["pending", "placed", "running", "succeeded", "failed", "cancelled", "lost", "refused"] {
        assert!(t.contains(state), "{state} missing from: {t}");
    }
    let o = sovra(&["set-state", "1", "done"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("running, succeeded, failed"), "{}", text(&o));
}

#[test]
fn help_never_shows_a_value_from_the_environment() {
    let secrets = [
        ("SOVRA_TOKEN", "token-secret-4711"),
        ("SOVRA_SERVER", "https://user:server-secret-4711@scheduler:7070"),
        ("SOVRA_CA", "/secret-4711/ca.pem"),
    ];
    let commands = [
        "submit",
        "jobs",
        "job",
        "logs",
        "cancel",
        "set-state",
        "nodes",
        "pools",
        "queues",
        "zones",
        "reload",
        "watch",
        "dev",
    ];
    for c in commands {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sovra"));
        cmd.args([c, "--help"]);
        for (k, v) in secrets {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(0), "{c}: {t}");
        assert!(!t.contains("4711"), "`sovra {c} --help` shows a value from the environment:\n{t}");
    }
}

#[test]
fn a_closed_stdout_pipe_ends_quietly_without_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["place", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // 1: the built-in example refuses some jobs on purpose; a broken pipe must not change the exit code to 101.
    assert!(matches!(o.status.code(), Some(0 | 1)), "{:?}: {err}", o.status);
}

#[test]
fn a_heartbeat_below_100_ms_is_refused() {
    // Before: `--heartbeat-ms 1` ran, broke the tour's own bound (277 placements for 3 jobs) and exited 0.
    let o = sovra(&["dev", "--tour", "--heartbeat-ms", "1"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("--heartbeat-ms") && t.contains("use 100 to 60000 ms"), "{t}");
    let o = sovra(&["dev", "--tour", "--heartbeat-ms", "99"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn the_tour_exits_1_when_a_check_it_prints_fails() {
    // Twice the French H100 nodes: the "wide" job no longer waits and the "giant" one is no longer impossible, so
    // the tour's checks must fail — and its exit code with them.
    let yaml = std::fs::read_to_string(example("cluster.yaml")).unwrap();
    let bigger = yaml.replacen("  - name: fr-par-h100\n    count: 4\n", "  - name: fr-par-h100\n    count: 8\n", 1);
    assert_ne!(yaml, bigger, "the example changed: update this test");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.yaml");
    std::fs::write(&config, bigger).unwrap();
    let data = dir.path().join("data");
    let o = sovra(&[
        "dev",
        "--tour",
        "--heartbeat-ms",
        "400",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("✗ FAILED: job 4 waits (state placed)"), "{t}");
    assert!(t.contains("the tour's checks failed"), "{t}");
    assert!(t.contains("✓ job 1 placed"), "the checks that hold still say so: {t}");
}

/// `sovra dev` in the background on free ports; its `export …` line parsed into environment variables.
struct Dev {
    child: std::process::Child,
    env: Vec<(String, String)>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(data: &Path) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["dev", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--heartbeat-ms", "500"])
        .args(["--promotion-listen", "127.0.0.1:0"])
        .args(["--data", data.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim().strip_prefix("export ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(90)).expect("sovra dev printed its export line");
    let env = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Dev { child, env }
}

fn against(dev: &Dev, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sovra"));
    cmd.args(args).envs(dev.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd.output().unwrap()
}

#[test]
fn reload_works_under_plain_sovra_dev() {
    // Before: `sovra dev` without --config ran the built-in cluster with no file behind it, so `sovra reload`
    // failed with "this scheduler was not started from a cluster file".
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    let o = against(&dev, &["reload"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("reloaded: 39 nodes in 8 pools"), "{}", text(&o));
    // The file is the one in the data folder: an edit there is what reload reads.
    let file = dir.path().join("cluster.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, yaml.replace("name: eu-any\n", "name: eu-any-renamed\n")).unwrap();
    let o = against(&dev, &["reload"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = against(&dev, &["zones"]);
    assert!(text(&o).contains("eu-any-renamed"), "{}", text(&o));
}

#[test]
fn simulate_runs_from_another_folder() {
    // Before: the default --data was `data/alibaba-gpu-v2023` relative to the working folder.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["simulate", "-p", "best-fit", "--seeds", "42", "-o", "json"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let best = &doc["policies"][0]["summary"];
    assert_eq!(best["published_alloc_at_100"].as_f64(), Some(92.91), "the published figures are built in too");
    assert_eq!(doc["trace"], "openb_pod_list_default.csv (built in)");
    // A --data folder without the files: the error names --data.
    let o = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["simulate", "--data", "no-such-folder", "--seeds", "42"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("(--data no-such-folder: the folder of the trace files)"), "{}", text(&o));
}

#[test]
fn a_trace_of_cpu_only_tasks_is_refused_not_inflated_forever() {
    // Before: inflating a trace whose tasks ask for no GPU never reached its target and grew without bound.
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("cpu.csv");
    std::fs::write(&tasks, "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,1024,0,0\np1,2000,1024,0,0\n")
        .unwrap();
    let o = sovra(&["simulate", "-t", tasks.to_str().unwrap(), "-p", "best-fit", "--seeds", "42"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no task of the trace asks for a GPU"), "{}", text(&o));
}

#[test]
fn a_scenario_horizon_or_sample_count_over_its_limit_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example("cluster.yaml"), dir.path().join("cluster.yaml")).unwrap();
    let stream = "streams:\n  - job: {name: j, kind: training, residency: eu-any, resources: {gpus: 1, cpu_milli: 1, \
                  memory_mib: 1}}\n    count: 1\n    arrival: {every_minutes: 1}\n    duration: {fixed_minutes: 1}\n";
    for (head, want) in [
        ("horizon_hours: 1000000000\n", "horizon_hours: 1000000000 is over the limit of 87600 hours"),
        ("horizon_hours: 80000\nsample_minutes: 0.001\n", "sample_minutes: 0.001 minutes over 80000 hours"),
    ] {
        let f = dir.path().join("s.yaml");
        std::fs::write(&f, format!("cluster: cluster.yaml\n{head}{stream}")).unwrap();
        let started = Instant::now();
        let o = sovra(&["replay", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "{want} missing from: {}", text(&o));
        assert!(started.elapsed() < Duration::from_secs(30), "refused before any work");
    }
}

#[test]
fn nodes_show_why_a_daemon_cannot_read_its_gpus() {
    // Before: `sovra nodes` showed "ready, 0 GPUs" with no reason.
    use sovra_node_daemon::HealthPolicy;
    use sovra_node_daemon::report::{DaemonMetrics, Reporter, sources};
    let dir = tempfile::tempdir().unwrap();
    let tls = sovra_scheduler::tls::generate(dir.path(), &[], &["gpu-1".into()]).unwrap();
    let server_tls = tls.server_config().unwrap();
    let cluster = "zones:\n  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}\n\
                   pools:\n  - {id: p, zone: fr, purpose: training}\nresidency_classes:\n  - {name: fr, countries: [FR]}\n\
                   nodes:\n  - {name: gpu-1, pool: p, cpu_milli: 1000, memory_mib: 1000, gpus: {model: L4, count: 1, memory_mib: 23034}}\n";
    let (tx, rx) = std::sync::mpsc::channel();
    let (ca, (cert, key)) = (tls.ca(), tls.node("gpu-1"));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let cluster = sovra_domain::ClusterConfig::from_yaml("cluster.yaml", cluster).unwrap();
            let opts = sovra_scheduler::service::Options {
                heartbeat: Duration::from_millis(500),
                require_daemons: true,
                ..Default::default()
            };
            let s =
                sovra_scheduler::service::Scheduler::with_options(cluster, Default::default(), 42, None, opts).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = format!("https://{}", listener.local_addr().unwrap());
            tokio::spawn(sovra_scheduler::service::serve_with(
                listener,
                s,
                "t".into(),
                Some(server_tls),
                std::future::pending(),
            ));
            // A daemon whose NVML library cannot be loaded: it reports no GPUs, and why.
            let missing = std::ffi::OsString::from("/nonexistent/libnvidia-ml.so.1");
            let (inv, updates) =
                sources::nvml(Some(missing), HealthPolicy::default(), Duration::from_millis(100)).unwrap();
            let reporter = Reporter {
                server: server.clone(),
                node: "gpu-1".into(),
                ca_pem: std::fs::read(&ca).unwrap(),
                cert_pem: std::fs::read(&cert).unwrap(),
                key_pem: std::fs::read(&key).unwrap(),
                claim_zone: None,
                claim_pool: None,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                runner: None,
                address: String::new(),
            };
            tx.send(server).unwrap();
            let _ = reporter.run(inv, updates, std::sync::Arc::new(DaemonMetrics::default())).await;
        });
    });
    let server = rx.recv().unwrap();
    let nodes = |output: &str| {
        Command::new(env!("CARGO_BIN_EXE_sovra"))
            .args(["nodes", "-o", output])
            .env("SOVRA_SERVER", &server)
            .env("SOVRA_TOKEN", "t")
            .env("SOVRA_CA", tls.ca())
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let doc = loop {
        let o = nodes("json");
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if doc[0]["connected"] == true || Instant::now() > deadline {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let reason = doc[0]["gpu_error"].as_str().unwrap_or_default().to_string();
    assert!(!reason.is_empty(), "the reason is carried: {doc}");
    assert_eq!(doc[0]["gpus"], 0, "{doc}");
    let o = nodes("text");
    assert!(text(&o).contains(&format!("GPUs cannot be read: {reason}")), "{}", text(&o));
}

#[test]
fn simulate_worker_threads_are_bounded() {
    // Before: `--threads 100000` spawned up to one thread per run (policies × seeds, up to 70,007).
    let o = sovra(&["simulate", "--threads", "100000", "--seeds", "42"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("100000 is not in 1..=1024"), "{}", text(&o));
}

#[test]
fn a_job_with_a_run_section_runs_and_sovra_logs_prints_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    let job = dir.path().join("hello.yaml");
    std::fs::write(
        &job,
        "name: hello\nkind: inference\nresidency: fr-health\nresources: {gpus: 1, gpu_models: [L4], cpu_milli: 100, \
         memory_mib: 100}\nrun:\n  command: /bin/sh\n  args: [\"-c\", \"echo first; echo gpus=$CUDA_VISIBLE_DEVICES; \
         echo last; exit 4\"]\n",
    )
    .unwrap();
    let o = against(&dev, &["submit", job.to_str().unwrap(), "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"].as_u64().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let o = against(&dev, &["job", &id]);
        if text(&o).contains("ended:") || Instant::now() > deadline {
            break text(&o);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(shown.contains(&format!("job {id} (hello) failed")), "{shown}");
    assert!(shown.contains("run 0 on fr-par-l4-") && shown.contains("exit code 4"), "{shown}");
    assert!(shown.contains("ended: replica 0 on fr-par-l4-") && shown.contains("failed: exit code 4"), "{shown}");
    let o = against(&dev, &["logs", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with("first\ngpus=GPU-fake-fr-par-l4-") && out.ends_with("last\n"), "{out}");
    let o = against(&dev, &["logs", &id, "--tail", "1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "last\n");
    // A replica the job does not have: bad input (exit 2), naming the field.
    let o = against(&dev, &["logs", &id, "--replica", "3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("replica: job"), "{}", text(&o));
    // What each node's daemon enforces is shown, never left out: a cgroup, or why none.
    let o = against(&dev, &["nodes", "-o", "json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let unlimited = nodes.iter().filter(|n| n["isolation"].as_str().unwrap_or("").starts_with("none: ")).count();
    assert!(nodes.iter().all(|n| !n["isolation"].as_str().unwrap_or("").is_empty()), "{nodes:?}");
    let table = text(&against(&dev, &["nodes"]));
    assert_eq!(table.contains("jobs run without CPU or memory limits"), unlimited > 0, "{table}");
    // --follow of a running job: its lines as they come, and the command ends with the job.
    let slow = dir.path().join("slow.yaml");
    let yaml = std::fs::read_to_string(&job).unwrap().replace(
        "echo first; echo gpus=$CUDA_VISIBLE_DEVICES; echo last; exit 4",
        "for i in 1 2 3; do echo tick$i; sleep 0.5; done",
    );
    std::fs::write(&slow, yaml.replace("name: hello", "name: slow")).unwrap();
    let o = against(&dev, &["submit", slow.to_str().unwrap(), "-o", "json"]);
    let slow_id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"].as_u64().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text(&against(&dev, &["job", &slow_id])).contains("): running") {
        assert!(Instant::now() < deadline, "job {slow_id} never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = against(&dev, &["logs", &slow_id, "--follow"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "tick1\ntick2\ntick3\n");
    assert!(text(&against(&dev, &["job", &slow_id])).contains("succeeded"));
    // A job no daemon ran has no output to read.
    let o = against(&dev, &["submit", example("job.yaml").to_str().unwrap(), "-o", "json"]);
    let placed = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"].as_u64().unwrap().to_string();
    let o = against(&dev, &["logs", &placed]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no node daemon has run it"), "{}", text(&o));
}

#[test]
fn a_running_job_survives_a_kill_9_of_sovra_dev_and_ends_after_its_restart() {
    // The scheduler and every daemon die at once (they share the `sovra dev` process); the job's process, under
    // its shim, does not. Restarted on the same data, the scheduler restores the job, the daemons re-adopt the
    // process, and its end is reported as if nothing happened.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = start_dev(&data);
    let job = dir.path().join("steady.yaml");
    std::fs::write(
        &job,
        "name: steady\nkind: inference\nresidency: fr-health\nresources: {gpus: 1, gpu_models: [L4], cpu_milli: 100, \
         memory_mib: 100}\nrun: {command: /bin/sh, args: [\"-c\", \"echo start; sleep 4; echo done\"]}\n",
    )
    .unwrap();
    let o = against(&dev, &["submit", job.to_str().unwrap(), "-o", "json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"].as_u64().unwrap().to_string();
    let wait_for = |dev: &Dev, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let t = text(&against(dev, &["job", &id]));
            if t.contains(what) {
                return t;
            }
            assert!(Instant::now() < deadline, "job {id} never showed {what:?}: {t}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let before = wait_for(&dev, "): running");
    drop(dev); // SIGKILL
    let dev = start_dev(&data);
    let after = wait_for(&dev, "succeeded");
    assert!(after.contains(&format!("job {id} (steady) succeeded")), "{before}\n{after}");
    let o = against(&dev, &["logs", &id]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "start\ndone\n", "one process, started once");
}
