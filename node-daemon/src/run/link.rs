//! The runner's thread, and the assignment sets it takes from the scheduler's messages.

use super::files::{Device, Work};
use super::{Desired, Runner, Status};
use crate::report::{RunnerLink, Update};
use std::sync::{Arc, Mutex};

/// The daemon's form of an `Assignments` message. An assignment whose `run_json` cannot be read (a scheduler of
/// another version) is left out, with an error in the log.
pub fn desired_from(a: &sovra_api::v1::Assignments) -> Desired {
    let mut work = Vec::with_capacity(a.replicas.len());
    for r in &a.replicas {
        let run = match serde_json::from_str(&r.run_json) {
            Ok(run) => run,
            Err(e) => {
                tracing::error!(job = r.job, replica = r.replica, error = %e, "unreadable run spec in an assignment: not started");
                continue;
            }
        };
        work.push(Work {
            job: r.job,
            replica: r.replica,
            replicas: r.replicas,
            attempt: r.attempt,
            job_name: r.job_name.clone(),
            devices: r.devices.iter().map(|d| Device { gpu: d.gpu, uuid: d.uuid.clone(), milli: d.milli }).collect(),
            run,
            master_addr: r.master_addr.clone(),
            master_port: r.master_port,
            peers: r.peers.clone(),
            cpu_milli: r.cpu_milli,
            memory_mib: r.memory_mib,
        });
    }
    Desired { generation: a.generation, work, stop_reasons: a.stop_reasons.clone().into_iter().collect() }
}

/// Runs `runner` on a thread of its own: it takes assignment sets from the returned link, reconciles every tick,
/// and sends each status change to `out` (the reporter's updates).
pub fn spawn(mut runner: Runner, out: tokio::sync::mpsc::Sender<Update>) -> Result<RunnerLink, String> {
    let (tx, rx) = std::sync::mpsc::channel::<Desired>();
    let statuses: Arc<Mutex<Vec<Status>>> = Arc::new(Mutex::new(runner.statuses()));
    let link = RunnerLink {
        desired: tx,
        statuses: statuses.clone(),
        state_dir: runner.cfg.state_dir.clone(),
        isolation: runner.isolation().describe(),
    };
    let tick = runner.cfg.tick;
    std::thread::Builder::new()
        .name("sovra-runner".into())
        .spawn(move || {
            loop {
                match rx.recv_timeout(tick) {
                    Ok(d) => {
                        // Only the latest set matters.
                        let mut latest = d;
                        while let Ok(d) = rx.try_recv() {
                            latest = d;
                        }
                        runner.set_desired(latest);
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let changed = runner.step();
                if changed.is_empty() {
                    continue;
                }
                if let Ok(mut s) = statuses.lock() {
                    *s = runner.statuses();
                }
                for s in changed {
                    if out.blocking_send(Update::Replica(s)).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the runner thread: {e}"))?;
    Ok(link)
}

/// Opens the runner of `cfg`, attaches it to `reporter`, and returns one channel carrying both the GPU updates of
/// `gpu` and the runner's replica statuses (what [`crate::report::Reporter::run`] takes).
pub fn attach(
    reporter: &mut crate::report::Reporter,
    cfg: super::RunnerConfig,
    mut gpu: tokio::sync::mpsc::Receiver<Update>,
) -> Result<tokio::sync::mpsc::Receiver<Update>, String> {
    let runner = Runner::open(cfg)?;
    match runner.isolation() {
        super::Isolation::Cgroup(_) => tracing::info!(isolation = %runner.isolation().describe(), "running jobs"),
        super::Isolation::None(_) => {
            tracing::warn!(isolation = %runner.isolation().describe(), "running jobs WITHOUT CPU and memory limits")
        }
    }
    let (tx, merged) = tokio::sync::mpsc::channel(1024);
    let gpu_tx = tx.clone();
    tokio::spawn(async move {
        while let Some(u) = gpu.recv().await {
            if gpu_tx.send(u).await.is_err() {
                return;
            }
        }
    });
    reporter.runner = Some(spawn(runner, tx)?);
    Ok(merged)
}
