//! Jobs that run: the daemon binary (fake GPU backend, real processes) takes its assignments from an in-process
//! scheduler over real gRPC and mutual TLS on loopback, starts each replica on exactly its GPUs with the gang's
//! environment, relays its output, stops it on cancel, preemption and walltime (SIGTERM, then SIGKILL after the
//! grace period), restarts it on failure, and reports how it ended; a daemon killed with SIGKILL and restarted
//! re-adopts its running children, and a node that was lost kills its stale work when it returns.
//!
//! Run as root (as CI does), the jobs run as `nobody`; their scripts are inline (`sh -c`) since the test's
//! folders are not nobody's.

use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{CancelRequest, GetRequest, JobInfo, LogsRequest, SubmitRequest};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::{Options, Scheduler, serve_with};
use sovra_scheduler::tls::{TlsDir, generate};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};

const TOKEN: &str = "t";
const HEARTBEAT: Duration = Duration::from_millis(500);

/// A scheduler with `nodes` (name, GPUs) in one French pool, and the daemons started for them.
struct Env {
    dir: tempfile::TempDir,
    addr: String,
    daemons: Vec<(String, Child)>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for (_, c) in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn start(nodes: &[(&str, u32)]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    // Jobs run as `nobody` when the tests run as root: let them reach their work folders.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let names: Vec<String> = nodes.iter().map(|(n, _)| n.to_string()).collect();
    generate(dir.path(), &[], &names).unwrap();
    let mut yaml = String::from(
        "zones:\n  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}\npools:\n  \
         - {id: train-fr, zone: fr, purpose: training}\nresidency_classes:\n  - {name: fr-only, countries: [FR]}\n\
         scheduling:\n  max_grace: 10s\nnodes:\n",
    );
    for (n, gpus) in nodes {
        yaml.push_str(&format!(
            "  - {{name: {n}, pool: train-fr, cpu_milli: 64000, memory_mib: 262144, gpus: {{model: H100-80GB-HBM3, \
             count: {gpus}, memory_mib: 81920}}}}\n"
        ));
    }
    let cluster = ClusterConfig::from_yaml("cluster.yaml", &yaml).unwrap();
    let opts = Options { heartbeat: HEARTBEAT, require_daemons: true, config_path: None, ..Options::default() };
    let scheduler = Scheduler::with_options(cluster, PolicySpec::default(), 42, None, opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("https://{}", listener.local_addr().unwrap());
    let tls = TlsDir(dir.path().into()).server_config().unwrap();
    tokio::spawn(serve_with(listener, scheduler, TOKEN.into(), Some(tls), std::future::pending()));
    let mut env = Env { dir, addr, daemons: Vec::new() };
    for (n, gpus) in nodes {
        let child = daemon(&env, n, *gpus);
        env.daemons.push((n.to_string(), child));
    }
    env
}

/// The UUID the fake backend reports for GPU `i` of `node`.
fn uuid(node: &str, i: u32) -> String {
    format!("GPU-run-{node}-{i}")
}

/// Starts the daemon binary for `node` (a fake fixture of `gpus` H100s), running jobs under its state folder.
fn daemon(env: &Env, node: &str, gpus: u32) -> Child {
    let dir = env.dir.path();
    let fixture = dir.join(format!("{node}.yaml"));
    let mut f = String::from("driver_version: fake\ngpus:\n");
    for i in 0..gpus {
        f.push_str(&format!(
            "  - {{uuid: {}, name: NVIDIA H100 80GB HBM3, memory_total_mib: 81559, compute_capability: [9, 0], pci_bus_id: \"0000:{:02x}:00.0\"}}\n",
            uuid(node, i),
            0x10 + i
        ));
    }
    std::fs::write(&fixture, f).unwrap();
    let cfg = dir.join(format!("{node}-daemon.yaml"));
    let text = format!(
        "backend: fake\nfixture: {}\nreport_interval_ms: 50\nserver: {}\nnode: {node}\ntls_dir: {}\nstate_dir: {}\n",
        fixture.display(),
        env.addr,
        dir.display(),
        dir.join(format!("state-{node}")).display()
    );
    std::fs::write(&cfg, text).unwrap();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{node}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sovra-node-daemon"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn jobs(env: &Env) -> JobsClient<Channel> {
    let ca = Certificate::from_pem(std::fs::read(env.dir.path().join("ca.pem")).unwrap());
    let tls = ClientTlsConfig::new().ca_certificate(ca);
    JobsClient::new(Endpoint::from_shared(env.addr.clone()).unwrap().tls_config(tls).unwrap().connect().await.unwrap())
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

/// A job of `replicas` × `gpus` GPUs running `sh -c script`, with more job-file lines in `extra`.
fn job(name: &str, replicas: u32, gpus: u32, script: &str, extra: &str) -> String {
    format!(
        "name: {name}\nkind: training\nresidency: fr-only\nreplicas: {replicas}\nresources: {{gpus: {gpus}, \
         cpu_milli: 100, memory_mib: 100}}\n{extra}run:\n  command: /bin/sh\n  args: [\"-c\", {script:?}]\n  grace: 1s\n"
    )
}

async fn submit(env: &Env, yaml: &str) -> Result<u64, tonic::Status> {
    let r = jobs(env).await.submit(authed(SubmitRequest { job_yaml: yaml.into(), request_id: String::new() })).await?;
    Ok(r.into_inner().id)
}

async fn get(env: &Env, id: u64) -> JobInfo {
    jobs(env).await.get(authed(GetRequest { id })).await.unwrap().into_inner()
}

/// Polls job `id` until `cond` holds; panics with the job after `secs` seconds.
async fn wait(env: &Env, id: u64, secs: u64, cond: impl Fn(&JobInfo) -> bool) -> JobInfo {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = get(env, id).await;
        if cond(&j) {
            return j;
        }
        if Instant::now() > deadline {
            let mut logs = String::new();
            for (n, _) in &env.daemons {
                let text = std::fs::read_to_string(env.dir.path().join(format!("{n}.log"))).unwrap_or_default();
                logs.push_str(&format!("--- daemon {n}:\n{text}"));
            }
            panic!("job {id} did not get there in {secs} s: {j:#?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ended(j: &JobInfo) -> bool {
    matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled")
}

/// A replica's output through the scheduler (`Jobs.Logs`).
async fn logs(env: &Env, id: u64, replica: u32, follow: bool, tail_lines: u32) -> Result<String, tonic::Status> {
    let mut s = jobs(env).await.logs(authed(LogsRequest { id, replica, follow, tail_lines })).await?.into_inner();
    let mut out = Vec::new();
    while let Some(c) = s.message().await? {
        out.extend(c.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Whether process `pid` is still there (and not a zombie waiting for its parent).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_runs_on_its_gpus_with_the_torch_distributed_environment_and_its_output_is_kept() {
    let env = start(&[("gpu-1", 2), ("gpu-2", 2)]).await;
    let script = "echo rank=$RANK world=$WORLD_SIZE local=$LOCAL_RANK master=$MASTER_ADDR:$MASTER_PORT; \
                  echo cuda=$CUDA_VISIBLE_DEVICES nvidia=$NVIDIA_VISIBLE_DEVICES; \
                  echo job=$SOVRA_JOB_ID replica=$SOVRA_REPLICA/$SOVRA_REPLICAS; sleep 1; echo to-stderr >&2";
    let id = submit(&env, &job("gang", 2, 2, script, "")).await.unwrap();
    // The placement, while it holds (a finished job's GPUs are released).
    let placed = wait(&env, id, 30, |j| j.state == "running").await.replicas;
    let j = wait(&env, id, 30, ended).await;
    assert_eq!(j.state, "succeeded", "{j:#?}");
    assert_eq!(j.runs.len(), 2, "{j:#?}");
    let mut masters = Vec::new();
    for r in &j.runs {
        assert_eq!((r.state.as_str(), r.exit_code), ("succeeded", Some(0)), "{r:?}");
        assert!(r.started_ms > 0 && r.ended_ms >= r.started_ms, "{r:?}");
        let out = logs(&env, id, r.replica, false, 0).await.unwrap();
        // Exactly the GPUs the placement gave this replica, by UUID.
        let placed = placed.iter().find(|p| p.node == r.node).unwrap();
        let want: Vec<String> = placed.devices.iter().map(|d| uuid(&r.node, *d)).collect();
        let want = want.join(",");
        assert!(out.contains(&format!("cuda={want} nvidia={want}\n")), "replica {}: {out}", r.replica);
        assert!(out.contains(&format!("rank={} world=2 local=0 master=", r.replica)), "{out}");
        assert!(out.contains(&format!("job={id} replica={}/2\n", r.replica)), "{out}");
        assert!(out.contains("to-stderr\n"), "stderr is kept with stdout: {out}");
        let master = out.split("master=").nth(1).unwrap().lines().next().unwrap().to_string();
        masters.push(master);
    }
    assert_eq!(masters[0], masters[1], "one rendezvous for the gang");
    assert!(masters[0].starts_with("127.0.0.1:"), "replica 0's node address: {}", masters[0]);
    // --tail: the last line only.
    let tail = logs(&env, id, 0, false, 1).await.unwrap();
    assert_eq!(tail, "to-stderr\n");
    // A replica the job does not have is named.
    let e = logs(&env, id, 5, false, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("replica"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_output_streams_lines_as_they_are_written_and_ends_with_the_job() {
    let env = start(&[("gpu-1", 1)]).await;
    let id = submit(&env, &job("slow", 1, 1, "for i in 1 2 3 4; do echo line$i; sleep 0.4; done", "")).await.unwrap();
    wait(&env, id, 30, |j| j.runs.iter().any(|r| r.state == "running")).await;
    let started = Instant::now();
    let req = LogsRequest { id, replica: 0, follow: true, tail_lines: 0 };
    let mut s = jobs(&env).await.logs(authed(req)).await.unwrap().into_inner();
    let mut out = String::new();
    let mut first_at = None;
    while let Some(c) = s.message().await.unwrap() {
        out.push_str(&String::from_utf8_lossy(&c.data));
        first_at.get_or_insert(started.elapsed());
    }
    assert_eq!(out, "line1\nline2\nline3\nline4\n");
    assert!(first_at.unwrap() < Duration::from_millis(1200), "the first lines came before the job ended");
    assert_eq!(wait(&env, id, 10, ended).await.state, "succeeded");
}

/// A script that ignores SIGTERM and keeps running (its `sleep`s inherit the ignored signal).
const STUBBORN: &str = "trap '' TERM; echo up; while true; do sleep 0.1; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_a_process_that_ignores_sigterm_once_the_grace_period_is_over() {
    let env = start(&[("gpu-1", 1)]).await;
    let id = submit(&env, &job("stubborn", 1, 1, STUBBORN, "")).await.unwrap();
    let j = wait(&env, id, 30, |j| j.state == "running").await;
    let pid = j.runs[0].pid;
    assert!(pid > 0 && alive(pid), "{j:#?}");
    let cancelled_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    jobs(&env).await.cancel(authed(CancelRequest { id })).await.unwrap();
    let j = wait(&env, id, 10, |j| j.runs.first().is_some_and(|r| r.ended_ms > 0)).await;
    let r = &j.runs[0];
    assert_eq!(j.state, "cancelled");
    assert_eq!((r.state.as_str(), r.signal), ("stopped", Some(9)), "SIGTERM was ignored: SIGKILL ended it: {r:?}");
    assert!(r.reason.contains("cancelled"), "{r:?}");
    // When the process ended (its shim's clock), after the cancel: within the 1 s grace period plus 1 s, and not
    // before the grace period.
    let took = r.ended_ms.saturating_sub(cancelled_ms);
    assert!(took < 2000, "within the 1 s grace and a second: {took} ms");
    assert!(took >= 950, "not before the grace period: {took} ms");
    assert!(!alive(pid), "the process is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preemptor_starts_only_after_its_victims_processes_are_gone() {
    let env = start(&[("gpu-1", 1)]).await;
    let low = submit(&env, &job("low", 1, 1, STUBBORN, "priority: 0\n")).await.unwrap();
    let v = wait(&env, low, 30, |j| j.state == "running").await;
    let victim_pid = v.runs[0].pid;
    let high = submit(&env, &job("high", 1, 1, "echo preemptor; sleep 2", "priority: 100\n")).await.unwrap();
    // The victim's run of attempt 1 ends (SIGKILL after its 1 s grace), and only then does the preemptor start.
    let v = wait(&env, low, 10, |j| j.runs.first().is_some_and(|r| r.attempt == 1 && r.ended_ms > 0)).await;
    let h = wait(&env, high, 10, |j| j.runs.first().is_some_and(|r| r.started_ms > 0)).await;
    let (victim, preemptor) = (&v.runs[0], &h.runs[0]);
    assert_eq!(v.preemptions, 1, "{v:#?}");
    assert_eq!((victim.state.as_str(), victim.signal), ("stopped", Some(9)), "{victim:?}");
    assert!(victim.reason.contains(&format!("preempted by job {high}")), "{victim:?}");
    assert!(
        victim.ended_ms <= preemptor.started_ms,
        "victim ended at {}, preemptor started at {}",
        victim.ended_ms,
        preemptor.started_ms
    );
    assert!(!alive(victim_pid), "the victim's process is gone");
    assert_eq!(wait(&env, high, 30, ended).await.state, "succeeded");
    // The victim is placed again once the GPU is free: a new attempt.
    let v = wait(&env, low, 30, |j| j.state == "running").await;
    assert_eq!(v.runs[0].attempt, 2, "{v:#?}");
    assert!(logs(&env, high, 0, false, 0).await.unwrap().contains("preemptor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walltime_ends_a_run_as_failed_and_restarts_stop_at_the_maximum() {
    let env = start(&[("gpu-1", 2)]).await;
    let long = job("long", 1, 1, "sleep 60", "").replace("  grace: 1s\n", "  grace: 1s\n  walltime: 1s\n");
    let id = submit(&env, &long).await.unwrap();
    let j = wait(&env, id, 30, ended).await;
    assert_eq!(j.state, "failed", "{j:#?}");
    assert!(j.ended_reason.contains("walltime"), "{}", j.ended_reason);
    assert!(j.ended_reason.contains("replica 0 on gpu-1"), "{}", j.ended_reason);

    let flaky = job("flaky", 1, 1, "echo try $SOVRA_RESTARTS; exit 3", "")
        .replace("  grace: 1s\n", "  grace: 1s\n  restart: {policy: on-failure, max: 2}\n");
    let id = submit(&env, &flaky).await.unwrap();
    let j = wait(&env, id, 30, ended).await;
    assert_eq!(j.state, "failed", "{j:#?}");
    let r = &j.runs[0];
    assert_eq!((r.exit_code, r.restarts), (Some(3), 2), "{r:?}");
    assert!(j.ended_reason.contains("exit code 3"), "{}", j.ended_reason);
    let out = logs(&env, id, 0, false, 0).await.unwrap();
    assert!(out.contains("try 2"), "the last try's output: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_run_sections_are_refused_at_submit_and_unstartable_ones_fail_with_the_reason() {
    let env = start(&[("gpu-1", 1)]).await;
    let base = job("bad", 1, 1, "true", "");
    for (yaml, field) in [
        (base.replace("  grace: 1s\n", "  grace: 1s\n  walltime: 0\n"), "run.walltime"),
        (base.replace("  grace: 1s\n", "  grace: 11s\n"), "run.grace"),
        (base.replace("  grace: 1s\n", "  grace: 1s\n  env: {CUDA_VISIBLE_DEVICES: \"0\"}\n"), "run.env"),
        (base.replace("  command: /bin/sh\n", ""), "command"),
    ] {
        let e = submit(&env, &yaml).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{yaml}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let missing = base.replace("command: /bin/sh", "command: /no/such/program");
    let id = submit(&env, &missing).await.unwrap();
    let j = wait(&env, id, 30, ended).await;
    assert_eq!(j.state, "failed");
    assert!(j.ended_reason.contains("/no/such/program"), "{}", j.ended_reason);
    let nobody = base.replace("  grace: 1s\n", "  grace: 1s\n  user: no-such-user-4711\n");
    let id = submit(&env, &nobody).await.unwrap();
    let j = wait(&env, id, 30, ended).await;
    assert_eq!(j.state, "failed");
    assert!(j.ended_reason.contains("no-such-user-4711"), "{}", j.ended_reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_and_restarted_re_adopts_its_running_replica_without_starting_another() {
    let mut env = start(&[("gpu-1", 1)]).await;
    let id = submit(&env, &job("steady", 1, 1, "echo start; sleep 3; echo done", "")).await.unwrap();
    let j = wait(&env, id, 30, |j| j.state == "running").await;
    let pid = j.runs[0].pid;
    let (_, mut d) = env.daemons.pop().unwrap();
    d.kill().unwrap();
    d.wait().unwrap();
    assert!(alive(pid), "the replica outlives its daemon");
    let d = daemon(&env, "gpu-1", 1);
    env.daemons.push(("gpu-1".into(), d));
    let j = wait(&env, id, 30, ended).await;
    assert_eq!(j.state, "succeeded", "{j:#?}");
    assert_eq!(j.runs[0].pid, pid, "the same process, re-adopted");
    assert_eq!(logs(&env, id, 0, false, 0).await.unwrap(), "start\ndone\n", "started once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_kills_its_stale_replica_when_it_returns() {
    let env = start(&[("gpu-1", 1), ("gpu-2", 1)]).await;
    let id = submit(&env, &job("moved", 1, 1, STUBBORN, "")).await.unwrap();
    let j = wait(&env, id, 30, |j| j.state == "running").await;
    let (first_node, first_pid) = (j.runs[0].node.clone(), j.runs[0].pid);
    // Freeze that node's daemon past the liveness deadline: the node is lost and the job goes to the other.
    let daemon_pid = env.daemons.iter().find(|(n, _)| *n == first_node).unwrap().1.id();
    let kill = |sig: &str| Command::new("kill").args([sig, &daemon_pid.to_string()]).status().unwrap();
    assert!(kill("-STOP").success());
    let j = wait(&env, id, 30, |j| j.runs.iter().any(|r| r.node != first_node && r.state == "running")).await;
    assert_eq!(j.runs[0].attempt, 2, "{j:#?}");
    assert!(alive(first_pid), "no self-fencing: the frozen node's process still runs");
    assert!(kill("-CONT").success());
    // Back, its daemon gets a set without the job and stops the stale process (SIGKILL after the 1 s grace).
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(first_pid) {
        assert!(Instant::now() < deadline, "the stale replica on {first_node} still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&env, id).await.state, "running", "the job runs on at its new node");
}
