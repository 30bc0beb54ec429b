//! The gRPC service: roles per call, every `Promoter` call on the blocking pool, and the TLS server.

use crate::auth::{Caller, identify};
use serde_json::{Value, json};
use sovra_api::v1::promotion_server::{Promotion, PromotionServer};
use sovra_api::v1::{
    AuditEntryJson, AuditExportRequest, AuditVerifyRequest, ListModelsRequest, ModelDocument, ModelRef, NamedKeyHint,
    PromoteModelRequest, PullModelRequest, PushChunk, ResolveModelRequest, ResolveModelResponse, SignedGrant,
};
use sovra_domain::datazone::Stage;
use sovra_oms::dsse::Envelope;
use sovra_promotion::service_config::{Client, Role};
use sovra_promotion::{PromoteError, Promoter};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// The service: the shared promoter, the clients, and where uploads are staged.
#[derive(Clone)]
pub struct PromotionService {
    pub(crate) promoter: Arc<Promoter>,
    clients: Arc<Vec<Client>>,
    pub(crate) staging: PathBuf,
    pub(crate) max_upload: u64,
    /// One promotion of a model at a time in this process (the registry's commit is the final check).
    promote_locks: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The CA client certificates chain to; `None`: tokens only.
    pub client_ca: Option<PathBuf>,
    /// Staging directory for uploads and downloads.
    pub staging: PathBuf,
    /// Largest upload, bytes.
    pub max_upload: u64,
    /// The clients.
    pub clients: Vec<Client>,
}

/// A `PromoteError` as a gRPC status: bad input → INVALID_ARGUMENT, a failed verification (or a denial) →
/// FAILED_PRECONDITION, concurrent writers won every retry → ABORTED. The CLI maps these back to exit codes 2, 1
/// and 1.
pub(crate) fn status_of(e: PromoteError) -> Status {
    match e {
        PromoteError::BadInput(m) => Status::invalid_argument(m),
        PromoteError::Conflict(m) => Status::aborted(m),
        e @ (PromoteError::Verification(_) | PromoteError::Denied { .. }) => Status::failed_precondition(e.to_string()),
    }
}

/// Runs `f` on tokio's blocking pool: the promoter blocks (sled, and its blob store's own runtime).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("the call failed on the service: {e}")))?
}

pub(crate) fn doc(v: &Value) -> Response<ModelDocument> {
    Response::new(ModelDocument { json: v.to_string() })
}

fn split_ref(s: &str) -> (String, Option<String>) {
    match s.split_once('@') {
        Some((n, r)) => (n.to_string(), Some(r.to_string())),
        None => (s.to_string(), None),
    }
}

pub(crate) fn parse_stage(s: &str, field: &str) -> Result<Stage, Status> {
    serde_json::from_value(Value::String(s.to_string()))
        .map_err(|_| Status::invalid_argument(format!("{field}: `{s}` is not a stage (training, registry, inference)")))
}

fn envelope(text: &str, what: &str) -> Result<Envelope, Status> {
    serde_json::from_str(text).map_err(|e| Status::invalid_argument(format!("{what}: not a DSSE envelope (JSON): {e}")))
}

impl PromotionService {
    /// A service over `promoter`.
    pub fn new(promoter: Arc<Promoter>, clients: Vec<Client>, staging: PathBuf, max_upload: u64) -> Self {
        PromotionService { promoter, clients: Arc::new(clients), staging, max_upload, promote_locks: Arc::default() }
    }

    pub(crate) fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let certs = req.peer_certs();
        let auth = req.metadata().get("authorization").map(|v| v.to_str().unwrap_or(""));
        identify(&self.clients, certs.as_deref().map(|v| v.as_slice()), auth)
    }

    fn promote_lock(&self, model: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.promote_locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(model.to_string()).or_default().clone()
    }
}

fn hints(ids: &[sovra_promotion::config::Identity]) -> Vec<NamedKeyHint> {
    ids.iter().map(|i| NamedKeyHint { name: i.name.clone(), hint: i.hint.clone() }).collect()
}

#[tonic::async_trait]
impl Promotion for PromotionService {
    async fn resolve(&self, req: Request<ResolveModelRequest>) -> Result<Response<ResolveModelResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require_any(&Role::ALL, "resolve")?;
        let p = self.promoter.clone();
        let (name, r) = split_ref(&req.into_inner().model);
        blocking(move || {
            let v = p.registry.resolve(&name, r.as_deref()).map_err(|e| status_of(e.into()))?;
            let c = &p.config;
            Ok(Response::new(ResolveModelResponse {
                model: v.model.clone(),
                digest: v.digest.clone(),
                current: v.current().map(|l| l.data_zone.to_string()).unwrap_or_default(),
                approvers: hints(&c.approvers),
                admins: hints(&c.admins),
                approval_max_age_secs: c.approval_max_age,
                approval_max_age: c.approvals.max_age.clone(),
                exception_max_ttl_secs: c.exception_max_ttl,
                exception_max_ttl: c.exceptions.max_ttl.clone(),
                gates: p.gates.names(),
                now: p.now(),
                caller: caller.name.clone(),
                roles: caller.roles.iter().map(|r| r.to_string()).collect(),
            }))
        })
        .await
    }

    async fn push(&self, req: Request<Streaming<PushChunk>>) -> Result<Response<ModelDocument>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Role::Pusher, "push")?;
        crate::streams::push(self, req.into_inner()).await
    }

    async fn verify(&self, req: Request<ModelRef>) -> Result<Response<ModelDocument>, Status> {
        self.caller(&req)?.require(Role::Viewer, "verify")?;
        let p = self.promoter.clone();
        let (name, r) = split_ref(&req.into_inner().model);
        blocking(move || {
            let v = p.registry.resolve(&name, r.as_deref()).map_err(|e| status_of(e.into()))?;
            Ok(doc(&p.verify_stored(&v)))
        })
        .await
    }

    async fn promote(&self, req: Request<PromoteModelRequest>) -> Result<Response<ModelDocument>, Status> {
        let caller = self.caller(&req)?;
        let m = req.into_inner();
        if m.dry_run {
            caller.require_any(&[Role::Viewer, Role::Promoter], "a dry-run promotion")?;
        } else {
            caller.require(Role::Promoter, "promote")?;
        }
        let to = parse_stage(&m.to, "to")?;
        let (name, r) = split_ref(&m.model);
        let lock = self.promote_lock(&name);
        let _held = if m.dry_run { None } else { Some(lock.lock_owned().await) };
        let p = self.promoter.clone();
        let staging = self.staging.clone();
        blocking(move || {
            let dir = tempfile::Builder::new()
                .prefix("sovra-approvals-")
                .tempdir_in(&staging)
                .map_err(|e| Status::internal(format!("{}: cannot stage the approvals: {e}", staging.display())))?;
            let mut files = Vec::new();
            for (i, a) in m.approvals_json.iter().enumerate() {
                envelope(a, &format!("approvals_json[{i}]"))?;
                let f = dir.path().join(format!("approval-{i}.json"));
                std::fs::write(&f, a).map_err(|e| Status::internal(format!("{}: {e}", f.display())))?;
                files.push(f);
            }
            let zone = Some(m.zone.as_str()).filter(|z| !z.is_empty());
            if m.dry_run {
                let d = p.evaluate(&name, r.as_deref(), to, zone, &files).map_err(status_of)?;
                let failed: Vec<_> = d.gates.iter().filter(|g| !g.allows()).collect();
                let mut out = json!({"status": if d.allowed { "would-promote" } else { "would-deny" },
                    "version": d.version, "from": d.from, "to": d.to, "under_exception": d.under_exception,
                    "allowed": d.allowed, "failed": failed, "gates": d.gates, "exceptions": d.exceptions,
                    "previous": d.previous, "policy_digest": p.gates.digest()});
                if m.explain {
                    out["input"] = d.input.clone();
                }
                return Ok(doc(&out));
            }
            match p.promote(&name, r.as_deref(), to, zone, &files) {
                Ok(done) => Ok(doc(&json!({"status": "promoted", "version": done.version, "record": done.record,
                    "from": done.from, "to": done.to, "gates": done.gates, "under_exception": done.under_exception,
                    "audit_seq": done.audit_seq, "promoted_by": caller.name}))),
                Err(PromoteError::Denied { subject, from, to, failed, gates }) => {
                    Ok(doc(&json!({"status": "denied", "subject": subject, "from": from, "to": to, "failed": failed,
                            "gates": gates})))
                }
                Err(e) => Err(status_of(e)),
            }
        })
        .await
    }

    async fn approve(&self, req: Request<SignedGrant>) -> Result<Response<ModelDocument>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Role::Approver, "approve")?;
        let env = envelope(&req.into_inner().envelope_json, "envelope_json")?;
        let p = self.promoter.clone();
        blocking(move || {
            let rec = p.record_approval(&env, &caller.name).map_err(status_of)?;
            Ok(doc(&serde_json::to_value(&rec).unwrap_or(Value::Null)))
        })
        .await
    }

    async fn grant_exception(&self, req: Request<SignedGrant>) -> Result<Response<ModelDocument>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Role::ExceptionAdmin, "granting an exception")?;
        let env = envelope(&req.into_inner().envelope_json, "envelope_json")?;
        let p = self.promoter.clone();
        blocking(move || {
            let rec = p.record_exception(&env, &caller.name).map_err(status_of)?;
            Ok(doc(&serde_json::to_value(&rec).unwrap_or(Value::Null)))
        })
        .await
    }

    async fn withdraw(&self, req: Request<SignedGrant>) -> Result<Response<ModelDocument>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Role::Withdrawer, "withdrawing a version")?;
        let env = envelope(&req.into_inner().envelope_json, "envelope_json")?;
        let p = self.promoter.clone();
        blocking(move || {
            let rec = p.record_withdrawal(&env, &caller.name).map_err(status_of)?;
            Ok(doc(&serde_json::to_value(&rec).unwrap_or(Value::Null)))
        })
        .await
    }

    async fn status(&self, req: Request<ModelRef>) -> Result<Response<ModelDocument>, Status> {
        self.caller(&req)?.require(Role::Viewer, "status")?;
        let p = self.promoter.clone();
        let (name, r) = split_ref(&req.into_inner().model);
        blocking(move || Ok(doc(&p.status(&name, r.as_deref()).map_err(status_of)?))).await
    }

    async fn list(&self, req: Request<ListModelsRequest>) -> Result<Response<ModelDocument>, Status> {
        self.caller(&req)?.require(Role::Viewer, "list")?;
        let p = self.promoter.clone();
        let name = Some(req.into_inner().name).filter(|n| !n.is_empty());
        blocking(move || {
            let vs = p.registry.versions(name.as_deref()).map_err(|e| status_of(e.into()))?;
            Ok(doc(&serde_json::to_value(&vs).unwrap_or(Value::Null)))
        })
        .await
    }

    type PullStream = crate::streams::PullStream;

    async fn pull(&self, req: Request<PullModelRequest>) -> Result<Response<Self::PullStream>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Role::Viewer, "pull")?;
        crate::streams::pull(self, req.into_inner(), caller.name).await
    }

    async fn audit_verify(&self, req: Request<AuditVerifyRequest>) -> Result<Response<ModelDocument>, Status> {
        self.caller(&req)?.require(Role::Auditor, "audit verify")?;
        let expect = Some(req.into_inner().expect_head).filter(|h| !h.is_empty());
        let p = self.promoter.clone();
        blocking(move || {
            let reg = &p.registry;
            let report = reg.verify_audit_expecting(expect.as_deref()).map_err(|e| status_of(e.into()))?;
            let anchors: Vec<Value> =
                reg.anchors().iter().map(|a| json!({"anchor": a.label, "path": a.path})).collect();
            Ok(doc(&json!({"status": if report.ok() { "intact" } else { "broken" },
                "entries": report.entries, "head": report.head, "problems": report.problems, "notes": report.notes,
                "last_good": report.last_good, "anchors": anchors})))
        })
        .await
    }

    type AuditExportStream = crate::streams::AuditStream;

    async fn audit_export(
        &self,
        req: Request<AuditExportRequest>,
    ) -> Result<Response<Self::AuditExportStream>, Status> {
        self.caller(&req)?.require(Role::Auditor, "audit export")?;
        let p = self.promoter.clone();
        let entries = blocking(move || p.registry.audit_entries().map_err(|e| status_of(e.into()))).await?;
        let items: Vec<Result<AuditEntryJson, Status>> =
            entries.iter().map(|e| Ok(AuditEntryJson { json: serde_json::to_string(e).unwrap_or_default() })).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

/// Serves the promotion service on `listener` over TLS until `shutdown` completes. Client certificates are
/// optional at the TLS layer (token clients present none) but, when presented, must chain to `client_ca`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    promoter: Arc<Promoter>,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let read =
        |p: &PathBuf, what: &str| std::fs::read(p).map_err(|e| format!("{}: cannot read the {what}: {e}", p.display()));
    let identity = tonic::transport::Identity::from_pem(
        read(&opts.cert, "server certificate (service.tls.cert)")?,
        read(&opts.key, "server key (service.tls.key)")?,
    );
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &opts.client_ca {
        let ca = tonic::transport::Certificate::from_pem(read(ca, "client CA (service.tls.client_ca)")?);
        tls = tls.client_ca_root(ca).client_auth_optional(true);
    }
    let service = PromotionService::new(promoter, opts.clients, opts.staging, opts.max_upload);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    // HTTP/2 flow-control windows large enough for 1 MiB upload chunks (the 64 KiB defaults stall a push on
    // window updates; BENCHMARKS.md has the figures with and without).
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .tls_config(tls)
        .map_err(|e| format!("TLS settings: {e}"))?
        .add_service(PromotionServer::new(service).max_decoding_message_size(64 << 20))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("the gRPC server stopped: {e}"))
}

/// Serves `/metrics` (the refused attempts, Prometheus text format) over plain HTTP on `listener`, until the
/// process ends.
pub async fn serve_metrics(listener: tokio::net::TcpListener, refusals: Arc<sovra_promotion::refusals::Refusals>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let r = refusals.clone();
            async move {
                ([(axum::http::header::CONTENT_TYPE, sovra_promotion::refusals::Refusals::CONTENT_TYPE)], r.render())
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("error: the metrics server stopped: {e}");
    }
}
