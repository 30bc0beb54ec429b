//! What the console shows, read once per refresh from the two APIs into memory: every page renders from a
//! [`Snapshot`], never from the network (so a page costs the same at 100,000 jobs as the bench measures).

use super::ConsoleArgs;
use crate::Failure;
use crate::remote::{self, Remote};
use serde_json::Value;
use sovra_api::v1::admin_client::AdminClient;
use sovra_api::v1::cluster_client::ClusterClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{
    ClassInfo, ClassesRequest, JobInfo, ListRequest, NodeInfo, NodesRequest, PoolInfo, PoolsRequest, QueueInfo,
    QueuesRequest, SchedulerAuditRequest, ZoneInfo, ZonesRequest,
};
use std::path::PathBuf;

/// Everything the pages show, as read at `taken_at`.
#[derive(Default)]
pub(crate) struct Snapshot {
    /// When it was read (RFC 3339, UTC).
    pub taken_at: String,
    /// Zones.
    pub zones: Vec<ZoneInfo>,
    /// Residency classes with the zones that satisfy each.
    pub classes: Vec<ClassInfo>,
    /// Pools.
    pub pools: Vec<PoolInfo>,
    /// Nodes, by name.
    pub nodes: Vec<NodeInfo>,
    /// Queues.
    pub queues: Vec<QueueInfo>,
    /// Jobs, by id.
    pub jobs: Vec<JobInfo>,
    /// Each model version's status document (as `sovra model status -o json` prints it).
    pub models: Vec<Value>,
    /// The registry's audit report (`sovra audit verify -o json`).
    pub registry_audit: Option<Value>,
    /// The registry's audit entries, oldest first.
    pub registry_log: Vec<Value>,
    /// The scheduler's audit chain, verified (`sovra_audit::AuditReport` as JSON).
    pub scheduler_audit: Option<Value>,
    /// The scheduler's receipts log entries, oldest first.
    pub scheduler_log: Vec<Value>,
    /// Simulator plots: file name and SVG text.
    pub plots: Vec<(String, String)>,
    /// What could not be read (shown on every page, so a stale or partial view says so).
    pub errors: Vec<String>,
}

/// Where the snapshot is read from.
pub(crate) struct Source {
    scheduler: Remote,
    promotion: Option<crate::promotion_client::ServerArgs>,
    plots: Option<PathBuf>,
}

impl Source {
    /// From `sovra console`'s flags (bad flags: exit 2, naming them).
    pub(crate) fn from_args(a: &ConsoleArgs) -> Result<Source, Failure> {
        let promotion = match &a.promotion_server {
            Some(s) if !s.is_empty() => Some(crate::promotion_client::ServerArgs::for_console(
                s.clone(),
                a.promotion_ca.clone(),
                a.promotion_token.clone(),
            )),
            _ => None,
        };
        if let Some(d) = &a.plots
            && !d.is_dir()
        {
            return Err(Failure { code: 2, message: format!("--plots {}: not a directory", d.display()) });
        }
        Ok(Source {
            scheduler: Remote {
                server: a.scheduler.clone(),
                token: a.scheduler_token.clone(),
                ca: a.scheduler_ca.clone(),
            },
            promotion,
            plots: a.plots.clone(),
        })
    }

    /// The services of `sovra dev`: its scheduler, and its promotion service at `promotion` (CA `ca`, token
    /// `token`).
    pub(crate) fn dev(scheduler: Remote, promotion: String, ca: PathBuf, token: String) -> Source {
        let promotion = crate::promotion_client::ServerArgs::for_console(promotion, Some(ca), Some(token));
        Source { scheduler, promotion: Some(promotion), plots: None }
    }

    /// Reads a snapshot; what fails is recorded in `errors`, never hidden.
    pub(crate) fn fetch(&self) -> Snapshot {
        let mut s = Snapshot {
            taken_at: jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_default().to_string(),
            ..Snapshot::default()
        };
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => {
                if let Err(f) = rt.block_on(scheduler(&self.scheduler, &mut s)) {
                    s.errors.push(format!("the scheduler at {}: {}", self.scheduler.server, f.message));
                }
            }
            Err(e) => s.errors.push(format!("cannot start the client runtime: {e}")),
        }
        match &self.promotion {
            Some(p) => {
                if let Err(f) = promotion(p, &mut s) {
                    s.errors.push(format!("the promotion service: {}", f.message));
                }
            }
            None => s
                .errors
                .push("no promotion service configured (--promotion-server): no models or registry audit".into()),
        }
        if let Some(dir) = &self.plots {
            s.plots = read_plots(dir, &mut s.errors);
        }
        s
    }
}

async fn scheduler(r: &Remote, s: &mut Snapshot) -> Result<(), Failure> {
    let ch = remote::connect(r).await?;
    let st = remote::status(r);
    let mut admin = AdminClient::new(ch.clone()).max_decoding_message_size(256 << 20);
    s.zones = admin.zones(remote::authed(r, ZonesRequest {})?).await.map_err(&st)?.into_inner().zones;
    s.classes = admin.classes(remote::authed(r, ClassesRequest {})?).await.map_err(&st)?.into_inner().classes;
    s.queues = admin.queues(remote::authed(r, QueuesRequest {})?).await.map_err(&st)?.into_inner().queues;
    let mut cluster = ClusterClient::new(ch.clone()).max_decoding_message_size(256 << 20);
    s.pools = cluster.pools(remote::authed(r, PoolsRequest {})?).await.map_err(&st)?.into_inner().pools;
    let mut page_token = String::new();
    loop {
        let req = NodesRequest { page_size: 10_000, page_token };
        let page = cluster.nodes(remote::authed(r, req)?).await.map_err(&st)?.into_inner();
        s.nodes.extend(page.nodes);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut jobs = JobsClient::new(ch.clone()).max_decoding_message_size(256 << 20);
    let mut page_token = String::new();
    loop {
        let req = ListRequest { queue: String::new(), state: String::new(), page_size: 10_000, page_token };
        let page = jobs.list(remote::authed(r, req)?).await.map_err(&st)?.into_inner();
        s.jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    s.jobs.sort_by_key(|j| j.id);
    let req = remote::authed(r, SchedulerAuditRequest { from: 0 })?;
    let mut stream = admin.audit_export(req).await.map_err(&st)?.into_inner();
    // The first line is the head; then the entries, as stored (the check of `sovra audit verify --scheduler`).
    let head = stream.message().await.map_err(&st)?.and_then(|l| serde_json::from_str::<Value>(&l.json).ok());
    let head: Option<sovra_audit::AuditHead> = head.and_then(|h| serde_json::from_value(h["head"].clone()).ok());
    let mut lines = Vec::new();
    while let Some(line) = stream.message().await.map_err(&st)? {
        lines.push(line.json);
    }
    match head {
        Some(head) => {
            let raw = lines.iter().enumerate().map(|(i, l)| ((i as u64).to_be_bytes().to_vec(), l.as_bytes().to_vec()));
            s.scheduler_audit = serde_json::to_value(sovra_audit::verify(raw, head)).ok();
        }
        None => s.errors.push("the scheduler's audit export has no head line".into()),
    }
    s.scheduler_log =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.clone()))).collect();
    Ok(())
}

fn promotion(p: &crate::promotion_client::ServerArgs, s: &mut Snapshot) -> Result<(), Failure> {
    let Some(remote) = p.connect()? else { return Ok(()) };
    let versions = remote.versions(None)?;
    match remote.audit_verify(None) {
        Ok(v) => s.registry_audit = Some(v),
        Err(f) => s.errors.push(format!("the registry's audit chain: {}", f.message)),
    }
    match remote.audit_export() {
        Ok(v) => s.registry_log = v,
        Err(f) => s.errors.push(format!("the registry's audit log: {}", f.message)),
    }
    let backend = crate::promotion_client::Backend::Remote(Box::new(remote));
    for v in versions {
        match backend.status(&v.model, Some(&v.digest)) {
            Ok(doc) => s.models.push(doc),
            Err(e) => s.errors.push(format!("status of {}@{}: {}", v.model, v.digest, Failure::from(e).message)),
        }
    }
    Ok(())
}

fn read_plots(dir: &std::path::Path, errors: &mut Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".svg") {
                    match std::fs::read_to_string(e.path()) {
                        Ok(t) => out.push((name, t)),
                        Err(err) => errors.push(format!("{}: {err}", e.path().display())),
                    }
                }
            }
        }
        Err(e) => errors.push(format!("--plots {}: {e}", dir.display())),
    }
    out.sort();
    out
}
