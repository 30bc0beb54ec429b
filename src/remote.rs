//! Commands against a running scheduler (`sovra submit | jobs | job | watch | logs | cancel | nodes | pools | queues
//! | zones | reload`).
//!
//! The server comes from `--server` or `SOVRA_SERVER` (default `http://127.0.0.1:7070`), the token from `--token`
//! or `SOVRA_TOKEN`; an `https://` server is verified against `--ca` / `SOVRA_CA` (the scheduler's CA file, e.g.
//! the one `sovra dev` prints). Exit codes: 0 ok; 1 the scheduler refused (job refused at submit, unknown job, cannot
//! cancel); 2 bad input (the job file, a CA file that holds no certificate, or INVALID_ARGUMENT naming the field); 3
//! the scheduler cannot be reached, its TLS connection failed (the message says why: certificate from another CA,
//! for another host name, …; see `sovra_node_daemon::tls_check`), or it rejected the token.

use crate::table::{cells, table};
use crate::{Failure, Output};
use sovra_api::v1::admin_client::AdminClient;
use sovra_api::v1::cluster_client::ClusterClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{
    CancelRequest, ClassesRequest, GetRequest, JobInfo, ListRequest, LogsRequest, NodesRequest, PoolsRequest,
    QueuesRequest, ReloadRequest, SetStateRequest, SubmitRequest, WatchRequest, ZonesRequest,
};
use sovra_node_daemon::tls_check::{ConnectProblem, check_ca, diagnose};
use std::path::PathBuf;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Where the scheduler is and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct Remote {
    /// Scheduler address.
    #[arg(long, env = "SOVRA_SERVER", default_value = "http://127.0.0.1:7070", hide_env_values = true, global = true)]
    pub server: String,
    /// Bearer token printed by `sovra-scheduler serve`.
    #[arg(long, env = "SOVRA_TOKEN", default_value = "", hide_env_values = true, global = true)]
    pub token: String,
    /// The CA that signed an `https://` scheduler's certificate (required for `https://`; `sovra dev` prints it).
    #[arg(long, env = "SOVRA_CA", hide_env_values = true, global = true)]
    pub ca: Option<PathBuf>,
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
    /// Report a job's state as its runner sees it.
    SetState { id: u64, state: String },
    /// List nodes.
    Nodes,
    /// List pools.
    Pools,
    /// List queues with their figures.
    Queues,
    /// List zones and residency classes.
    Zones,
    /// Re-read the scheduler's cluster file.
    Reload,
    /// The latest event lines.
    Events {
        /// How many (0: 100).
        limit: u32,
    },
    /// Print a replica's output (stdout and stderr), read from its node.
    Logs {
        /// The job.
        id: u64,
        /// Its replica.
        replica: u32,
        /// Keep printing what it writes until it ends.
        follow: bool,
        /// Only the last lines (0: all the node keeps).
        tail: u32,
    },
    /// Print job updates as they happen (one job, or all).
    Watch {
        /// One job, or all.
        id: Option<u64>,
        /// Only changes after this revision.
        since: Option<u64>,
    },
}

/// The failure of a call to `remote`: the scheduler's refusal (its message), or, for a transport failure, what it
/// was (the connection broke, TLS failed late, a plain `http://` client met a TLS server).
pub(crate) fn status(remote: &Remote) -> impl Fn(Status) -> Failure + '_ {
    move |e: Status| {
        let code = match e.code() {
            Code::InvalidArgument => 2,
            Code::Unauthenticated | Code::Unavailable | Code::Unknown => 3,
            _ => 1,
        };
        if std::error::Error::source(&e).is_none() {
            return Failure { code, message: e.message().to_string() };
        }
        let message = match diagnose(&e) {
            // The CLI presents no client certificate, so a closed connection is not a refused one here.
            ConnectProblem::Other(chain) | ConnectProblem::ClosedAfterHandshake(chain)
                if remote.server.starts_with("http://") =>
            {
                format!(
                    "the connection to {} failed ({chain}); if the scheduler serves TLS (as `sovra dev` and \
                 `sovra-scheduler serve --tls-dir` do), use an https:// address with --ca",
                    remote.server
                )
            }
            ConnectProblem::Other(chain) | ConnectProblem::ClosedAfterHandshake(chain) => {
                format!("the connection to {} failed ({chain})", remote.server)
            }
            problem => problem.explain(&remote.server, "--ca"),
        };
        Failure { code: 3, message }
    }
}

/// A request carrying the bearer token.
pub fn authed<T>(remote: &Remote, msg: T) -> Result<Request<T>, Failure> {
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

/// A channel to the scheduler (TLS verified against `--ca` for `https://`).
pub async fn connect(remote: &Remote) -> Result<Channel, Failure> {
    let mut endpoint = Channel::from_shared(remote.server.clone())
        .map_err(|e| Failure { code: 2, message: format!("--server {}: {e}", remote.server) })?;
    if remote.server.starts_with("https://") {
        let Some(ca) = &remote.ca else {
            return Err(Failure {
                code: 2,
                message: format!(
                    "--ca: {} uses TLS; give the scheduler's CA file with --ca or SOVRA_CA",
                    remote.server
                ),
            });
        };
        let pem = std::fs::read(ca)
            .map_err(|e| Failure { code: 2, message: format!("--ca {}: cannot read the file: {e}", ca.display()) })?;
        // A garbage CA file is our mistake, not the server's: say so before connecting (exit 2).
        check_ca(&pem, &format!("--ca {}", ca.display())).map_err(|e| Failure { code: 2, message: e.to_string() })?;
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
        endpoint = endpoint.tls_config(tls).map_err(|e| Failure { code: 2, message: format!("--ca: {e}") })?;
    }
    endpoint.connect().await.map_err(|e| {
        let ca = remote.ca.as_ref().map_or_else(|| "--ca".to_string(), |p| format!("--ca {}", p.display()));
        let message = match diagnose(&e) {
            p @ ConnectProblem::Unreachable(_) => format!(
                "cannot reach the scheduler: {}; start it with `sovra-scheduler serve` or `sovra dev`, or fix \
                 --server / SOVRA_SERVER",
                p.explain(&remote.server, &ca)
            ),
            ConnectProblem::ClosedAfterHandshake(d) => {
                format!("the scheduler at {} closed the connection during the TLS handshake ({d})", remote.server)
            }
            p => p.explain(&remote.server, &ca),
        };
        Failure { code: 3, message }
    })
}

/// Runs an action on the caller's runtime.
pub async fn run_async(remote: Remote, action: Action, output: Output) -> Result<u8, Failure> {
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
    let channel = connect(&remote).await?;
    let mut jobs = JobsClient::new(channel.clone());
    let mut admin = AdminClient::new(channel.clone());
    let mut cluster = ClusterClient::new(channel);
    let json = output == Output::Json;
    match action {
        Action::Submit { request_id, .. } => {
            let req =
                SubmitRequest { job_yaml: job_yaml.unwrap_or_default(), request_id: request_id.unwrap_or_default() };
            let r = jobs.submit(authed(&remote, req)?).await.map_err(status(&remote))?.into_inner();
            let info = jobs.get(authed(&remote, GetRequest { id: r.id })?).await.map_err(status(&remote))?.into_inner();
            if json {
                println!("{}", to_json(&info));
            } else {
                print_job(&info, false);
            }
        }
        Action::Jobs { queue, state } => {
            // Every page, in id order.
            let mut list = Vec::new();
            let mut page_token = String::new();
            loop {
                let req = ListRequest {
                    queue: queue.clone().unwrap_or_default(),
                    state: state.clone().unwrap_or_default(),
                    page_size: 0,
                    page_token,
                };
                let page = jobs.list(authed(&remote, req)?).await.map_err(status(&remote))?.into_inner();
                list.extend(page.jobs);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if json {
                println!("{}", to_json(&list));
            } else {
                let mut t = table(&["id", "name", "queue", "prio", "state", "nodes"], &[0, 3]);
                for j in &list {
                    let nodes: Vec<&str> = j.replicas.iter().map(|r| r.node.as_str()).collect();
                    t.add_row(cells([
                        j.id.to_string(),
                        j.name.clone(),
                        j.queue.clone(),
                        j.priority.to_string(),
                        j.state.clone(),
                        nodes.join(","),
                    ]));
                }
                println!("{}", t.trim_fmt());
            }
        }
        Action::Job { id, explain } => {
            let info = jobs.get(authed(&remote, GetRequest { id })?).await.map_err(status(&remote))?.into_inner();
            if json { println!("{}", to_json(&info)) } else { print_job(&info, explain) }
        }
        Action::SetState { id, state } => {
            let info = jobs
                .set_state(authed(&remote, SetStateRequest { id, state })?)
                .await
                .map_err(status(&remote))?
                .into_inner();
            if json { println!("{}", to_json(&info)) } else { println!("job {} {}", info.id, info.state) }
        }
        Action::Cancel { id } => {
            let info = jobs.cancel(authed(&remote, CancelRequest { id })?).await.map_err(status(&remote))?.into_inner();
            if json { println!("{}", to_json(&info)) } else { println!("job {} {}", info.id, info.state) }
        }
        Action::Nodes => {
            // Every page, by node name.
            let mut nodes = Vec::new();
            let mut page_token = String::new();
            loop {
                let req = NodesRequest { page_size: 0, page_token };
                let page = cluster.nodes(authed(&remote, req)?).await.map_err(status(&remote))?.into_inner();
                nodes.extend(page.nodes);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if json {
                println!("{}", to_json(&nodes));
            } else {
                let mut t =
                    table(&["node", "pool", "zone", "ready", "GPUs", "healthy", "used GPU", "reported by"], &[4, 5, 6]);
                let mut problems = Vec::new();
                // Nodes whose daemons cannot limit CPU and memory, by reason (one line per reason).
                let mut unlimited: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
                for n in &nodes {
                    let via = match (n.backend.as_str(), n.connected) {
                        ("config", _) => "cluster file".to_string(),
                        (b, true) => format!("daemon, {b}"),
                        (b, false) => format!("daemon (disconnected), {b}"),
                    };
                    t.add_row(cells([
                        n.name.clone(),
                        n.pool.clone(),
                        n.zone.clone(),
                        n.ready.to_string(),
                        n.gpus.to_string(),
                        n.healthy_gpus.to_string(),
                        format!("{:.2}", n.used_milli as f64 / 1000.0),
                        via,
                    ]));
                    if !n.gpu_error.is_empty() {
                        problems.push(format!("{}: GPUs cannot be read: {}", n.name, n.gpu_error));
                    }
                    problems.extend(n.unhealthy.iter().map(|u| format!("{}: unhealthy GPU {u}", n.name)));
                    if let Some(why) = n.isolation.strip_prefix("none: ") {
                        unlimited.entry(why.to_string()).or_default().push(n.name.as_str());
                    }
                }
                println!("{}", t.trim_fmt());
                for p in problems {
                    println!("{p}");
                }
                for (why, names) in unlimited {
                    let who = match names.as_slice() {
                        [one] => one.to_string(),
                        many => format!("{} nodes ({})", many.len(), many.join(", ")),
                    };
                    println!("{who}: jobs run without CPU or memory limits: {why}");
                }
            }
        }
        Action::Pools => {
            let pools =
                cluster.pools(authed(&remote, PoolsRequest {})?).await.map_err(status(&remote))?.into_inner().pools;
            if json {
                println!("{}", to_json(&pools));
            } else {
                let mut t = table(&["pool", "zone", "purpose", "nodes", "GPUs", "used"], &[3, 4, 5]);
                for p in &pools {
                    t.add_row(cells([
                        p.id.clone(),
                        p.zone.clone(),
                        p.purpose.clone(),
                        p.nodes.to_string(),
                        (p.capacity_milli / 1000).to_string(),
                        format!("{:.2}", p.used_milli as f64 / 1000.0),
                    ]));
                }
                println!("{}", t.trim_fmt());
            }
        }
        Action::Queues => {
            let queues =
                admin.queues(authed(&remote, QueuesRequest {})?).await.map_err(status(&remote))?.into_inner().queues;
            if json {
                println!("{}", to_json(&queues));
            } else {
                let mut t =
                    table(&["queue", "weight", "pending", "running", "GPUs", "share", "quotas"], &[1, 2, 3, 4, 5]);
                for q in &queues {
                    let mut quotas: Vec<(&String, &u64)> = q.quota_milli.iter().collect();
                    quotas.sort();
                    let quotas: Vec<String> =
                        quotas.iter().map(|(p, m)| format!("{p}={:.2}", **m as f64 / 1000.0)).collect();
                    t.add_row(cells([
                        q.name.clone(),
                        q.weight.to_string(),
                        q.pending.to_string(),
                        q.running.to_string(),
                        format!("{:.2}", q.gpu_milli_held as f64 / 1000.0),
                        format!("{:.3}", q.share),
                        if quotas.is_empty() { "none".into() } else { quotas.join(", ") },
                    ]));
                }
                println!("{}", t.trim_fmt());
            }
        }
        Action::Zones => {
            let zones =
                admin.zones(authed(&remote, ZonesRequest {})?).await.map_err(status(&remote))?.into_inner().zones;
            let classes =
                admin.classes(authed(&remote, ClassesRequest {})?).await.map_err(status(&remote))?.into_inner().classes;
            if json {
                println!("{}", serde_json::json!({"zones": to_json(&zones), "residency_classes": to_json(&classes)}));
            } else {
                let mut t = table(&["zone", "country", "jurisdiction", "operator", "HQ", "certifications"], &[]);
                for z in &zones {
                    t.add_row(cells([
                        z.id.clone(),
                        z.country.clone(),
                        z.jurisdiction.clone(),
                        z.operator.clone(),
                        z.operator_hq.clone(),
                        z.certifications.join(", "),
                    ]));
                }
                println!("{}", t.trim_fmt());
                println!();
                let mut t = table(&["residency class", "zones that satisfy it"], &[]);
                for c in &classes {
                    let zones = if c.zones.is_empty() { "(none)".to_string() } else { c.zones.join(", ") };
                    t.add_row(cells([c.name.clone(), zones]));
                }
                println!("{}", t.trim_fmt());
            }
        }
        Action::Events { limit } => {
            let req = sovra_api::v1::EventsRequest { limit };
            let r = admin.events(authed(&remote, req)?).await.map_err(status(&remote))?.into_inner();
            if json {
                println!("{}", to_json(&r));
            } else {
                for e in &r.events {
                    println!("{e}");
                }
            }
        }
        Action::Reload => {
            let r = admin.reload(authed(&remote, ReloadRequest {})?).await.map_err(status(&remote))?.into_inner();
            if json {
                println!("{}", to_json(&r));
            } else {
                println!("reloaded: {} nodes in {} pools; requeued jobs: {:?}", r.nodes, r.pools, r.requeued);
            }
        }
        Action::Logs { id, replica, follow, tail } => {
            use std::io::Write;
            let req = LogsRequest { id, replica, follow, tail_lines: tail };
            let mut stream = jobs.logs(authed(&remote, req)?).await.map_err(status(&remote))?.into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.message().await.map_err(status(&remote))? {
                // A closed stdout (`sovra logs … | head`) ends the read.
                if out.write_all(&chunk.data).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
        Action::Watch { id, since } => {
            let req = WatchRequest { id: id.unwrap_or(0), queue: String::new(), since_revision: since.unwrap_or(0) };
            let mut stream = jobs.watch(authed(&remote, req)?).await.map_err(status(&remote))?.into_inner();
            while let Some(j) = stream.message().await.map_err(status(&remote))? {
                if json {
                    println!("{}", to_json(&j));
                } else {
                    let nodes: Vec<&str> = j.replicas.iter().map(|r| r.node.as_str()).collect();
                    println!("job {} ({}) {} {}", j.id, j.name, j.state, nodes.join(","));
                }
            }
        }
    }
    Ok(0)
}

/// A message as JSON, by the serde derives on the generated API types (sovra-api's build script). Keys come out
/// sorted (`serde_json::Value` objects are ordered maps), so the output is the same on every run.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    // The API messages hold only strings, numbers, lists and string-keyed maps: serialising them cannot fail.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn print_job(j: &JobInfo, explain: bool) {
    println!(
        "job {} ({}) {} — queue {}, priority {}, class {}",
        j.id, j.name, j.state, j.queue, j.priority, j.residency
    );
    if !j.model.is_empty() {
        println!("  serves model {} (placed only where that version was promoted)", j.model);
    }
    if let Ok(w) = serde_json::from_str::<sovra_domain::Waiver>(&j.exception_json) {
        println!(
            "  UNDER EXCEPTION {}: may run in zone {} without {} until {} (Unix s), granted by {}: {}",
            w.id,
            w.zone,
            w.requirement,
            w.expires_at_ms / 1000,
            w.approvers.join(", "),
            w.reason
        );
    }
    for (i, r) in j.replicas.iter().enumerate() {
        println!("  replica {i} → {} (pool {}, zone {}) devices {:?}", r.node, r.pool, r.zone, r.devices);
    }
    for r in &j.runs {
        let mut line = format!("  run {} on {} (attempt {}): {}", r.replica, r.node, r.attempt, r.state);
        if let Some(c) = r.exit_code {
            line.push_str(&format!(", exit code {c}"));
        }
        if let Some(sig) = r.signal {
            line.push_str(&format!(", signal {sig}"));
        }
        if r.restarts > 0 {
            line.push_str(&format!(", {} restart(s)", r.restarts));
        }
        if r.cpu_ms > 0 || r.max_rss_kib > 0 {
            line.push_str(&format!(", {:.1} s CPU, {} MiB peak", r.cpu_ms as f64 / 1000.0, r.max_rss_kib / 1024));
        }
        if !r.reason.is_empty() {
            line.push_str(&format!(" — {}", r.reason));
        }
        println!("{line}");
    }
    if !j.ended_reason.is_empty() {
        println!("  ended: {}", j.ended_reason);
    }
    if !j.explanation_summary.is_empty() {
        println!("  why: {}", j.explanation_summary);
    }
    if explain {
        // The engine's own wording (one formatting function per record type, `sovra_engine::Blocker` and
        // `sovra_engine::PreemptionRecord`); a server that sends none (older, or the job never waited) shows none.
        for b in serde_json::from_str::<Vec<sovra_engine::Blocker>>(&j.blockers_json).unwrap_or_default() {
            println!("  blocked: {b}");
        }
        for p in
            serde_json::from_str::<Vec<sovra_engine::PreemptionRecord>>(&j.preemption_records_json).unwrap_or_default()
        {
            println!("  preempted: {p}");
        }
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
