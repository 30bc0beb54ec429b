//! Job commands against a running scheduler (`sovra submit | jobs | job | cancel | nodes | pools`).
//!
//! The server comes from `--server` or `SOVRA_SERVER` (default `http://127.0.0.1:7070`), the token from `--token`
//! or `SOVRA_TOKEN`. Exit codes: 0 ok; 1 the scheduler refused (job refused at submit, unknown job, cannot
//! cancel); 2 bad input (the job file, or INVALID_ARGUMENT naming the field); 3 the scheduler cannot be reached or
//! rejected the token.

use crate::{Failure, Output};
use sovra_api::v1::cluster_client::ClusterClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{CancelRequest, GetRequest, JobInfo, ListRequest, NodesRequest, PoolsRequest, SubmitRequest};
use std::path::PathBuf;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Where the scheduler is and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct Remote {
    /// Scheduler address.
    #[arg(long, env = "SOVRA_SERVER", default_value = "http://127.0.0.1:7070", global = true)]
    pub server: String,
    /// Bearer token printed by `sovra-scheduler serve`.
    #[arg(long, env = "SOVRA_TOKEN", default_value = "", hide_env_values = true, global = true)]
    pub token: String,
}

/// What to do.
pub enum Action {
    /// Submit a job file.
    Submit { file: PathBuf, request_id: Option<String> },
    /// List jobs.
    Jobs { queue: Option<String>, state: Option<String> },
    /// Show one job.
    Job { id: u64, explain: bool },
    /// Cancel a job.
    Cancel { id: u64 },
    /// List nodes.
    Nodes,
    /// List pools.
    Pools,
}

fn status(e: Status) -> Failure {
    let code = match e.code() {
        Code::InvalidArgument => 2,
        Code::Unauthenticated | Code::Unavailable | Code::Unknown => 3,
        _ => 1,
    };
    Failure { code, message: e.message().to_string() }
}

fn authed<T>(remote: &Remote, msg: T) -> Result<Request<T>, Failure> {
    let mut r = Request::new(msg);
    let value = format!("Bearer {}", remote.token)
        .parse()
        .map_err(|_| Failure { code: 2, message: "--token: not a valid header value".into() })?;
    r.metadata_mut().insert("authorization", value);
    Ok(r)
}

/// Runs an action.
pub fn run(remote: Remote, action: Action, output: Output) -> Result<u8, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure { code: 3, message: format!("cannot start the client runtime: {e}") })?;
    rt.block_on(run_async(remote, action, output))
}

async fn run_async(remote: Remote, action: Action, output: Output) -> Result<u8, Failure> {
    // Validate a job file locally first: errors then name the file, not just the field.
    let job_yaml = match &action {
        Action::Submit { file, .. } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Failure { code: 2, message: format!("{}: cannot read the file: {e}", file.display()) })?;
            sovra_domain::jobs_from_yaml(&file.display().to_string(), &text)?;
            Some(text)
        }
        _ => None,
    };
    let endpoint = Channel::from_shared(remote.server.clone())
        .map_err(|e| Failure { code: 2, message: format!("--server {}: {e}", remote.server) })?;
    let channel = endpoint.connect().await.map_err(|e| Failure {
        code: 3,
        message: format!("cannot reach the scheduler at {}: {e}; start it with `sovra-scheduler serve`", remote.server),
    })?;
    let mut jobs = JobsClient::new(channel.clone());
    let mut cluster = ClusterClient::new(channel);
    let json = output == Output::Json;
    match action {
        Action::Submit { request_id, .. } => {
            let req =
                SubmitRequest { job_yaml: job_yaml.unwrap_or_default(), request_id: request_id.unwrap_or_default() };
            let r = jobs.submit(authed(&remote, req)?).await.map_err(status)?.into_inner();
            let info = jobs.get(authed(&remote, GetRequest { id: r.id })?).await.map_err(status)?.into_inner();
            if json {
                println!("{}", job_json(&info));
            } else {
                print_job(&info, false);
            }
        }
        Action::Jobs { queue, state } => {
            let req = ListRequest { queue: queue.unwrap_or_default(), state: state.unwrap_or_default() };
            let list = jobs.list(authed(&remote, req)?).await.map_err(status)?.into_inner().jobs;
            if json {
                println!("{}", serde_json::Value::Array(list.iter().map(job_json).collect()));
            } else {
                println!("{:>6}  {:<24} {:<12} {:>4}  {:<10} nodes", "id", "name", "queue", "prio", "state");
                for j in &list {
                    let nodes: Vec<&str> = j.replicas.iter().map(|r| r.node.as_str()).collect();
                    println!(
                        "{:>6}  {:<24} {:<12} {:>4}  {:<10} {}",
                        j.id,
                        j.name,
                        j.queue,
                        j.priority,
                        j.state,
                        nodes.join(",")
                    );
                }
            }
        }
        Action::Job { id, explain } => {
            let info = jobs.get(authed(&remote, GetRequest { id })?).await.map_err(status)?.into_inner();
            if json { println!("{}", job_json(&info)) } else { print_job(&info, explain) }
        }
        Action::Cancel { id } => {
            let info = jobs.cancel(authed(&remote, CancelRequest { id })?).await.map_err(status)?.into_inner();
            if json { println!("{}", job_json(&info)) } else { println!("job {} {}", info.id, info.state) }
        }
        Action::Nodes => {
            let nodes = cluster.nodes(authed(&remote, NodesRequest {})?).await.map_err(status)?.into_inner().nodes;
            if json {
                let v: Vec<_> = nodes
                    .iter()
                    .map(|n| {
                        serde_json::json!({"name": n.name, "pool": n.pool, "zone": n.zone, "ready": n.ready,
                        "gpus": n.gpus, "healthy_gpus": n.healthy_gpus, "used_milli": n.used_milli})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!(
                    "{:<20} {:<18} {:<20} {:<6} {:>5} {:>8} {:>9}",
                    "node", "pool", "zone", "ready", "GPUs", "healthy", "used GPU"
                );
                for n in &nodes {
                    println!(
                        "{:<20} {:<18} {:<20} {:<6} {:>5} {:>8} {:>9.2}",
                        n.name,
                        n.pool,
                        n.zone,
                        n.ready,
                        n.gpus,
                        n.healthy_gpus,
                        n.used_milli as f64 / 1000.0
                    );
                }
            }
        }
        Action::Pools => {
            let pools = cluster.pools(authed(&remote, PoolsRequest {})?).await.map_err(status)?.into_inner().pools;
            if json {
                let v: Vec<_> = pools
                    .iter()
                    .map(|p| {
                        serde_json::json!({"id": p.id, "zone": p.zone, "purpose": p.purpose, "nodes": p.nodes,
                        "capacity_milli": p.capacity_milli, "used_milli": p.used_milli})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("{:<18} {:<20} {:<10} {:>5} {:>9} {:>9}", "pool", "zone", "purpose", "nodes", "GPUs", "used");
                for p in &pools {
                    println!(
                        "{:<18} {:<20} {:<10} {:>5} {:>9} {:>9.2}",
                        p.id,
                        p.zone,
                        p.purpose,
                        p.nodes,
                        p.capacity_milli / 1000,
                        p.used_milli as f64 / 1000.0
                    );
                }
            }
        }
    }
    Ok(0)
}

fn job_json(j: &JobInfo) -> serde_json::Value {
    let explanation: serde_json::Value = serde_json::from_str(&j.explanation_json).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": j.id, "name": j.name, "queue": j.queue, "priority": j.priority, "residency": j.residency,
        "state": j.state, "preemptions": j.preemptions,
        "replicas": j.replicas.iter().map(|r| serde_json::json!({"node": r.node, "pool": r.pool, "zone": r.zone,
            "devices": r.devices, "milli_per_device": r.milli_per_device})).collect::<Vec<_>>(),
        "explanation": explanation,
    })
}

fn print_job(j: &JobInfo, explain: bool) {
    println!(
        "job {} ({}) {} — queue {}, priority {}, class {}",
        j.id, j.name, j.state, j.queue, j.priority, j.residency
    );
    for (i, r) in j.replicas.iter().enumerate() {
        println!("  replica {i} → {} (pool {}, zone {}) devices {:?}", r.node, r.pool, r.zone, r.devices);
    }
    if !j.explanation_summary.is_empty() {
        println!("  why: {}", j.explanation_summary);
    }
    if explain && let Ok(e) = serde_json::from_str::<serde_json::Value>(&j.explanation_json) {
        for f in e["filters"].as_array().into_iter().flatten() {
            if f["rejected_nodes"].as_u64().unwrap_or(0) == 0 {
                continue;
            }
            println!("    {:<13} rejected {:>5} node(s)", f["filter"].as_str().unwrap_or(""), f["rejected_nodes"]);
            for r in f["reasons"].as_array().into_iter().flatten() {
                println!("        {:>5} × {}", r["nodes"], r["reason"].as_str().unwrap_or(""));
            }
        }
    }
}
