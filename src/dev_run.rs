//! The part of `sovra dev --tour` where jobs actually run: a two-replica job with a `run:` section is started by
//! the node daemons (real processes, given the fake GPUs' UUIDs), its output is read back with `sovra logs`, and a
//! job that ignores SIGTERM is cancelled: SIGKILL ends it once its grace period is over, and a high-priority job
//! preempts a gang that holds every MIG instance: the victims' processes end before the preemptor's starts.

use crate::dev::{Checks, Local, job};
use crate::remote::{self, Action};
use crate::{Failure, Output};
use sovra_api::v1::LogsRequest;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_node_daemon::fake::FakeBackend;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Two inference replicas on French nodes, each printing what it was given.
const GANG: &str = "name: hello-gang\nkind: inference\nresidency: fr-health\nreplicas: 2\n\
resources: {gpus: 1, gpu_models: [L4], cpu_milli: 1000, memory_mib: 1024}\n\
run:\n  command: /bin/sh\n  args: [\"-c\", \"echo rank $RANK of $WORLD_SIZE on $SOVRA_NODE, GPUs $CUDA_VISIBLE_DEVICES, \
rendezvous $MASTER_ADDR:$MASTER_PORT; sleep 1\"]\n";

/// A job that ignores SIGTERM, with a one-second grace period.
const STUBBORN: &str = "name: stubborn\nkind: inference\nresidency: fr-health\n\
resources: {gpus: 1, gpu_models: [L4], cpu_milli: 1000, memory_mib: 1024}\n\
run:\n  command: /bin/sh\n  args: [\"-c\", \"trap '' TERM; while true; do sleep 0.1; done\"]\n  grace: 1s\n";

/// A replica's whole output, through the scheduler (what `sovra logs` prints).
async fn logs_of(local: &Local, id: u64, replica: u32) -> Result<String, Failure> {
    let ch = remote::connect(&local.remote).await?;
    let req = LogsRequest { id, replica, follow: false, tail_lines: 0 };
    let refused = |e: tonic::Status| Failure { code: 1, message: e.message().to_string() };
    let mut s = JobsClient::new(ch).logs(remote::authed(&local.remote, req)?).await.map_err(refused)?.into_inner();
    let mut out = Vec::new();
    while let Some(c) = s.message().await.map_err(refused)? {
        out.extend(c.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A low-priority gang on all four MIG instances of the French A100 node.
const MIG_GANG: &str = "name: batch-embeddings\nkind: inference\nresidency: fr-health\npriority: 0\nreplicas: 4\n\
resources: {gpus: 1, gpu_models: [A100-80GB-MIG-3g.40gb], cpu_milli: 1000, memory_mib: 1024}\n\
run:\n  command: /bin/sh\n  args: [\"-c\", \"echo embedding on $CUDA_VISIBLE_DEVICES; sleep 300\"]\n  grace: 2s\n";

/// A high-priority job that needs one of those instances.
const URGENT: &str = "name: urgent-triage\nkind: inference\nresidency: fr-health\npriority: 100\n\
resources: {gpus: 1, gpu_models: [A100-80GB-MIG-3g.40gb], cpu_milli: 1000, memory_mib: 1024}\n\
run:\n  command: /bin/sh\n  args: [\"-c\", \"echo triage on $CUDA_VISIBLE_DEVICES; sleep 2\"]\n";

/// Polls job `id` until `cond` holds or `secs` pass; the last view either way.
async fn wait(
    local: &Local,
    id: u64,
    secs: u64,
    cond: impl Fn(&sovra_api::v1::JobInfo) -> bool,
) -> Result<sovra_api::v1::JobInfo, Failure> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = job(local, id).await?;
        if cond(&j) || Instant::now() > deadline {
            return Ok(j);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the tour's jobs `first` and `first + 1`; files go to `file`.
pub(crate) async fn tour_runs(
    local: &Local,
    checks: &mut Checks,
    first: u64,
    file: &dyn Fn(&str, &str) -> Result<PathBuf, Failure>,
) -> Result<(), Failure> {
    println!("\n── Jobs that run: a job with a `run:` section is started by the node daemons on exactly its GPUs");
    let submit = Action::Submit { file: file("gang.yaml", GANG)?, request_id: Some("tour-run-1".into()) };
    remote::run_async(local.remote.clone(), submit, Output::Text).await?;
    let j = wait(local, first, 30, |j| matches!(j.state.as_str(), "succeeded" | "failed")).await?;
    checks.check(j.state == "succeeded", format!("job {first} ran to the end on both replicas (state {})", j.state));
    let mut outputs = Vec::new();
    for replica in 0..2 {
        println!("\n── sovra logs {first} --replica {replica}");
        let out = logs_of(local, first, replica).await?;
        print!("{out}");
        outputs.push(out);
    }
    // The UUIDs the fake daemons report, from the same source as their fixtures.
    let given = |r: u32| -> Vec<String> {
        let Some(p) = j.replicas.get(r as usize) else { return Vec::new() };
        let Some(node) = local.cluster.nodes.iter().find(|n| n.name == p.node) else { return Vec::new() };
        let gpus = FakeBackend::of_node(node, "").inventory().gpus;
        p.devices.iter().filter_map(|d| gpus.get(*d as usize)).map(|g| g.uuid.clone()).collect()
    };
    let ok = (0..2u32).all(|r| {
        let o = &outputs[r as usize];
        o.contains(&format!("rank {r} of 2")) && given(r).iter().all(|u| o.contains(u.as_str()))
    });
    checks.check(ok, "each replica saw its rank and exactly its GPUs' UUIDs".into());

    println!("\n── Cancel a job that ignores SIGTERM: SIGKILL ends it after its 1 s grace period");
    let submit = Action::Submit { file: file("stubborn.yaml", STUBBORN)?, request_id: Some("tour-run-2".into()) };
    remote::run_async(local.remote.clone(), submit, Output::Text).await?;
    let id = first + 1;
    let j = wait(local, id, 30, |j| j.state == "running").await?;
    checks.check(j.state == "running", format!("job {id} running (state {})", j.state));
    let cancelled_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    remote::run_async(local.remote.clone(), Action::Cancel { id }, Output::Text).await?;
    let j = wait(local, id, 10, |j| j.runs.first().is_some_and(|r| r.ended_ms > 0)).await?;
    remote::run_async(local.remote.clone(), Action::Job { id, explain: false }, Output::Text).await?;
    let run = j.runs.first();
    let took = run.map_or(u64::MAX, |r| r.ended_ms.saturating_sub(cancelled_ms));
    let killed = run.is_some_and(|r| r.signal == Some(9));
    checks.check(
        killed && took < 2000,
        format!(
            "job {id}'s process killed {:.1} s after the cancel (grace 1 s; the bound is grace + 1 s)",
            took as f64 / 1000.0
        ),
    );
    Ok(())
}

/// Runs the tour's preemption (jobs `first` and `first + 1`); files go to `file`.
pub(crate) async fn tour_preemption(
    local: &Local,
    checks: &mut Checks,
    first: u64,
    file: &dyn Fn(&str, &str) -> Result<PathBuf, Failure>,
) -> Result<(), Failure> {
    println!("\n── Preemption: a priority-100 job needs a MIG instance held by a priority-0 gang of four");
    let submit = Action::Submit { file: file("mig-gang.yaml", MIG_GANG)?, request_id: Some("tour-run-3".into()) };
    remote::run_async(local.remote.clone(), submit, Output::Text).await?;
    let (low, high) = (first, first + 1);
    let v = wait(local, low, 30, |j| j.state == "running").await?;
    checks.check(v.state == "running", format!("job {low} runs on all four MIG instances (state {})", v.state));
    let submit = Action::Submit { file: file("urgent.yaml", URGENT)?, request_id: Some("tour-run-4".into()) };
    remote::run_async(local.remote.clone(), submit, Output::Text).await?;
    let h = wait(local, high, 30, |j| j.runs.first().is_some_and(|r| r.started_ms > 0)).await?;
    let v = job(local, low).await?;
    remote::run_async(local.remote.clone(), Action::Job { id: low, explain: true }, Output::Text).await?;
    let victims_end = v.runs.iter().filter(|r| r.attempt == 1).map(|r| r.ended_ms).max().unwrap_or(0);
    let all_ended = v.runs.len() == 4 && v.runs.iter().all(|r| r.attempt == 1 && r.ended_ms > 0);
    let start = h.runs.first().map_or(0, |r| r.started_ms);
    checks.check(
        all_ended && victims_end <= start,
        format!(
            "the victims' processes were gone {} ms before the preemptor's started",
            start.saturating_sub(victims_end)
        ),
    );
    println!("\n── sovra logs {high}");
    print!("{}", logs_of(local, high, 0).await?);
    let h = wait(local, high, 30, |j| j.state == "succeeded").await?;
    checks.check(h.state == "succeeded", format!("job {high} ran to the end (state {})", h.state));
    // The gang is placed again once the instance is free; the tour stops it.
    remote::run_async(local.remote.clone(), Action::Cancel { id: low }, Output::Text).await?;
    Ok(())
}
