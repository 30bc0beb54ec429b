//! `--server URL` (`SOVRA_PROMOTION_SERVER`): the `sovra model …`, `sovra exception grant` and `sovra audit …`
//! commands against a running promotion service (`sovra-promotion serve`, docs/promotion-service.md) instead of a
//! local registry, with the same output and exit codes.
//!
//! The service is reached over TLS only (`https://`), verified against `--ca`; the client is identified by a
//! client certificate (`--client-cert` / `--client-key`; `--key` already names the approver's or admin's signing
//! key) or a bearer token (`--token` / `SOVRA_PROMOTION_TOKEN`). Approvals and exceptions are signed here, with the
//! approver's or admin's own key, and only verified and recorded by the service. Exit codes: as in local mode (0
//! done; 1 denied, refused — PERMISSION_DENIED — or a verification failed; 2 bad input), plus 3 when the service
//! cannot be reached, its TLS fails or it does not know the client: nothing was done (fail closed).

mod transfer;

use crate::Failure;
use serde_json::Value;
use sovra_api::v1::promotion_client::PromotionClient;
use sovra_api::v1::{
    AuditExportRequest, AuditVerifyRequest, ListModelsRequest, ModelDocument, ModelRef, PromoteModelRequest,
    ResolveModelRequest, ResolveModelResponse, SignedGrant,
};
use sovra_domain::datazone::{DataZone, Stage};
use sovra_node_daemon::tls_check::{ConnectProblem, check_ca, check_identity, diagnose};
use sovra_oms::keys::SigningKey;
use sovra_promotion::{Decision, PromoteError, Promoted, Promoter, PullFrom, PushRequest};
use sovra_registry::{SignedRecord, VersionRecord};
use std::path::{Path, PathBuf};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Where the promotion service is and how to authenticate (flattened into every command that can use it).
#[derive(clap::Args, Clone, Default)]
pub(crate) struct ServerArgs {
    /// Run on the promotion service at this address (`https://HOST:PORT`) instead of a local registry.
    #[arg(long = "server", env = "SOVRA_PROMOTION_SERVER", hide_env_values = true, value_name = "URL")]
    pub(crate) server: Option<String>,
    /// The CA that signed the service's certificate (with --server).
    #[arg(long = "ca", env = "SOVRA_PROMOTION_CA", hide_env_values = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// This client's certificate (PEM), for mutual TLS (with --client-key).
    #[arg(long, env = "SOVRA_PROMOTION_CERT", hide_env_values = true, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// This client's certificate key (PEM).
    #[arg(long, env = "SOVRA_PROMOTION_KEY", hide_env_values = true, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Bearer token the service knows this client by (its SHA-256 is in the service's config).
    #[arg(long = "token", env = "SOVRA_PROMOTION_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The error of a command that runs locally or on the service.
pub(crate) enum BackendError {
    /// The promoter's own error (local mode).
    Promote(PromoteError),
    /// Anything else, exit code decided.
    Failure(Failure),
}

impl From<PromoteError> for BackendError {
    fn from(e: PromoteError) -> Self {
        BackendError::Promote(e)
    }
}

impl From<Failure> for BackendError {
    fn from(f: Failure) -> Self {
        BackendError::Failure(f)
    }
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Failure {
        match e {
            BackendError::Promote(e) => Failure { code: e.exit_code(), message: e.to_string() },
            BackendError::Failure(f) => f,
        }
    }
}

type Res<T> = Result<T, BackendError>;

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

/// A connected service client with its own (current-thread) runtime.
pub(crate) struct Remote {
    rt: tokio::runtime::Runtime,
    client: PromotionClient<Channel>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    server: String,
}

/// Local (a registry in this process) or the service.
pub(crate) enum Backend {
    /// The registry and the config, here.
    Local(Box<Promoter>),
    /// The promotion service.
    Remote(Box<Remote>),
}

impl ServerArgs {
    /// The promotion service of `sovra console` (its own flags: `--promotion-server`, `--promotion-ca`,
    /// `--promotion-token`).
    pub(crate) fn for_console(server: String, ca: Option<PathBuf>, token: Option<String>) -> ServerArgs {
        ServerArgs { server: Some(server), ca, token, ..ServerArgs::default() }
    }

    /// Connects when --server is given; `None` for local mode.
    pub(crate) fn connect(&self) -> Result<Option<Remote>, Failure> {
        let Some(server) = self.server.clone().filter(|s| !s.is_empty()) else { return Ok(None) };
        if !server.starts_with("https://") {
            return Err(fail(
                2,
                format!("--server {server}: the promotion service speaks TLS only; give an https:// address"),
            ));
        }
        let Some(ca) = &self.ca else {
            return Err(fail(
                2,
                format!("--ca: {server} uses TLS; give the service's CA file with --ca or SOVRA_PROMOTION_CA"),
            ));
        };
        let read = |p: &Path, flag: &str| {
            std::fs::read(p).map_err(|e| fail(2, format!("{flag} {}: cannot read the file: {e}", p.display())))
        };
        let pem = read(ca, "--ca")?;
        check_ca(&pem, &format!("--ca {}", ca.display())).map_err(|e| fail(2, e.to_string()))?;
        let mut tls =
            tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
        if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
            let (cp, kp) = (read(c, "--client-cert")?, read(k, "--client-key")?);
            check_identity(&cp, &kp, &c.display().to_string(), &k.display().to_string())
                .map_err(|e| fail(2, e.to_string()))?;
            tls = tls.identity(tonic::transport::Identity::from_pem(cp, kp));
        }
        let token = match self.token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| fail(2, "--token: not a valid header value"))?),
            None => None,
        };
        if token.is_none() && self.client_cert.is_none() {
            return Err(fail(
                2,
                "--server: give --token (SOVRA_PROMOTION_TOKEN) or --client-cert/--client-key; the service \
                 refuses unidentified clients",
            ));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(3, format!("cannot start the client runtime: {e}")))?;
        let endpoint = Channel::from_shared(server.clone())
            .map_err(|e| fail(2, format!("--server {server}: {e}")))?
            .tls_config(tls)
            .map_err(|e| fail(2, format!("--ca: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(10))
            // Large HTTP/2 windows for 1 MiB pull chunks (see promotion-server/src/server.rs).
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20));
        let ca_flag = format!("--ca {}", ca.display());
        let channel = rt.block_on(endpoint.connect()).map_err(|e| {
            let message = match diagnose(&e) {
                p @ ConnectProblem::Unreachable(_) => format!(
                    "cannot reach the promotion service: {}; nothing was done (start it with `sovra-promotion \
                     serve`, or fix --server / SOVRA_PROMOTION_SERVER)",
                    p.explain(&server, &ca_flag)
                ),
                p => format!("{}; nothing was done", p.explain(&server, &ca_flag)),
            };
            fail(3, message)
        })?;
        let client = PromotionClient::new(channel).max_decoding_message_size(64 << 20);
        Ok(Some(Remote { rt, client, token, server }))
    }
}

impl Remote {
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("authorization", t.clone());
        }
        r
    }

    /// A gRPC status as the CLI's failure: INVALID_ARGUMENT/NOT_FOUND → 2; FAILED_PRECONDITION (a verification
    /// failed), PERMISSION_DENIED (a missing role) and the service's internal errors → 1; UNAVAILABLE,
    /// UNAUTHENTICATED and transport failures → 3.
    pub(crate) fn status(&self, e: Status) -> Failure {
        let m = e.message().to_string();
        match e.code() {
            Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::OutOfRange => fail(2, m),
            Code::PermissionDenied => fail(1, format!("refused by the promotion service at {}: {m}", self.server)),
            Code::Unauthenticated => {
                fail(3, format!("the promotion service at {} does not know this client: {m}", self.server))
            }
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                let why = match std::error::Error::source(&e) {
                    Some(_) => match diagnose(&e) {
                        ConnectProblem::Other(c) | ConnectProblem::ClosedAfterHandshake(c) => c,
                        p => p.explain(&self.server, "--ca"),
                    },
                    None => m,
                };
                fail(3, format!("the promotion service at {} is unavailable ({why}); nothing was done", self.server))
            }
            _ => fail(1, format!("the promotion service failed: {m}")),
        }
    }

    fn doc(&self, r: Result<tonic::Response<ModelDocument>, Status>) -> Res<Value> {
        let d = r.map_err(|e| self.status(e))?.into_inner();
        Ok(serde_json::from_str(&d.json)
            .map_err(|e| fail(1, format!("the promotion service answered with a document that is not JSON: {e}")))?)
    }

    fn resolve(&self, model: &str) -> Res<ResolveModelResponse> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.resolve(self.req(ResolveModelRequest { model: model.to_string() })));
        Ok(r.map_err(|e| self.status(e))?.into_inner())
    }
}

fn field<T: serde::de::DeserializeOwned>(doc: &Value, k: &str) -> Result<T, Failure> {
    serde_json::from_value(doc[k].clone())
        .map_err(|e| fail(1, format!("the promotion service's answer has no usable `{k}`: {e}")))
}

/// The admin's private key at `admin_key` and the admin name the service gives it (`info` from Resolve); `why`
/// ends the error (exit 2, nothing sent) when it is not an admin's key.
fn admin_signer(info: &ResolveModelResponse, admin_key: &Path, why: &str) -> Res<(SigningKey, String)> {
    let key = SigningKey::open(admin_key).map_err(PromoteError::from)?;
    let hint = key.public_key().hint();
    match info.admins.iter().find(|a| a.hint == hint) {
        Some(a) => Ok((key, a.name.clone())),
        None => {
            let names: Vec<&str> = info.admins.iter().map(|a| a.name.as_str()).collect();
            let m = format!(
                "{}: not an admin key (admins of the promotion service: {}); {why}",
                admin_key.display(),
                names.join(", ")
            );
            Err(fail(2, m).into())
        }
    }
}

/// Who a local-mode pull is audited as: `local:` and the login name (`$USER`, else `unknown`).
fn local_actor() -> String {
    format!("local:{}", std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "unknown".into()))
}

fn full_ref(model: &str, reference: Option<&str>) -> String {
    match reference {
        Some(r) => format!("{model}@{r}"),
        None => model.to_string(),
    }
}

impl Backend {
    /// `sovra model push`.
    pub(crate) fn push(&self, req: &PushRequest) -> Res<VersionRecord> {
        match self {
            Backend::Local(p) => Ok(p.push(req)?),
            Backend::Remote(r) => {
                let d = transfer::push(r, req)?;
                Ok(field(&d, "version")?)
            }
        }
    }

    /// `sovra model pull`. Local pulls are audited as `local:$USER`; the service audits its caller.
    pub(crate) fn pull(
        &self,
        model: &str,
        reference: Option<&str>,
        from: &PullFrom,
        dest: &Path,
        signature: &Path,
    ) -> Res<(VersionRecord, DataZone)> {
        match self {
            Backend::Local(p) => Ok(p.pull(model, reference, from, dest, signature, &local_actor())?),
            Backend::Remote(r) => transfer::pull(r, &full_ref(model, reference), from, dest, signature),
        }
    }

    /// `sovra model withdraw`: signed here with the admin's key, recorded by the service (or locally).
    pub(crate) fn withdraw(
        &self,
        model: &str,
        reference: Option<&str>,
        zone: &str,
        stage: Option<Stage>,
        reason: &str,
        admin_key: &Path,
    ) -> Res<SignedRecord> {
        let r = match self {
            Backend::Local(p) => return Ok(p.withdraw(model, reference, zone, stage, reason, admin_key)?),
            Backend::Remote(r) => r,
        };
        let info = r.resolve(&full_ref(model, reference))?;
        let (key, admin) = admin_signer(&info, admin_key, "a withdrawal is signed by an admin")?;
        let v = r
            .versions(Some(&info.model))?
            .into_iter()
            .find(|v| v.digest == info.digest)
            .ok_or_else(|| fail(1, format!("{}@{}: the service lists no such version", info.model, info.digest)))?;
        let dz = sovra_promotion::withdraw::withdrawal_zone(&v, zone, stage)?;
        let env = sovra_promotion::sign_withdrawal(&info.model, &info.digest, &dz, reason, &admin, &key, info.now)?;
        let json = serde_json::to_string(&env).unwrap_or_default();
        let mut c = r.client.clone();
        let d = r.doc(r.rt.block_on(c.withdraw(r.req(SignedGrant { envelope_json: json }))))?;
        Ok(serde_json::from_value(d).map_err(|e| fail(1, format!("the service's withdrawal record: {e}")))?)
    }

    /// The audit head after a write (local mode; the promotion service keeps its own log).
    pub(crate) fn audit_head(&self) -> Option<sovra_registry::AuditHead> {
        match self {
            Backend::Local(p) => p.registry.audit_head().ok(),
            Backend::Remote(_) => None,
        }
    }

    /// `sovra model status`.
    pub(crate) fn status(&self, model: &str, reference: Option<&str>) -> Res<Value> {
        match self {
            Backend::Local(p) => Ok(p.status(model, reference)?),
            Backend::Remote(r) => {
                let mut c = r.client.clone();
                r.doc(r.rt.block_on(c.status(r.req(ModelRef { model: full_ref(model, reference) }))))
            }
        }
    }

    /// `sovra model check`: re-verifies a stored version in every data zone it is in.
    pub(crate) fn check(&self, model: &str, reference: Option<&str>) -> Res<Value> {
        match self {
            Backend::Local(p) => {
                let v = p.registry.resolve(model, reference).map_err(PromoteError::from)?;
                Ok(p.verify_stored(&v))
            }
            Backend::Remote(r) => {
                let mut c = r.client.clone();
                r.doc(r.rt.block_on(c.verify(r.req(ModelRef { model: full_ref(model, reference) }))))
            }
        }
    }

    /// The approval envelope files as the service takes them (JSON text).
    fn approvals(files: &[PathBuf]) -> Result<Vec<String>, Failure> {
        files
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .map_err(|e| fail(2, format!("{}: cannot read the approval: {e}", f.display())))
            })
            .collect()
    }

    fn remote_promote(
        r: &Remote,
        model: &str,
        to: Stage,
        zone: Option<&str>,
        approvals: &[PathBuf],
        dry_run: bool,
        explain: bool,
    ) -> Res<Value> {
        let m = PromoteModelRequest {
            model: model.to_string(),
            to: to.as_str().to_string(),
            zone: zone.unwrap_or_default().to_string(),
            approvals_json: Self::approvals(approvals)?,
            dry_run,
            explain,
        };
        let mut c = r.client.clone();
        r.doc(r.rt.block_on(c.promote(r.req(m))))
    }

    /// `sovra model promote --dry-run`: the decision and the policy digest.
    pub(crate) fn evaluate(
        &self,
        model: &str,
        reference: Option<&str>,
        to: Stage,
        zone: Option<&str>,
        approvals: &[PathBuf],
        explain: bool,
    ) -> Res<(Decision, String)> {
        match self {
            Backend::Local(p) => Ok((p.evaluate(model, reference, to, zone, approvals)?, p.gates.digest().to_string())),
            Backend::Remote(r) => {
                let d = Self::remote_promote(r, &full_ref(model, reference), to, zone, approvals, true, explain)?;
                let decision = Decision {
                    version: field(&d, "version")?,
                    from: field(&d, "from")?,
                    to: field(&d, "to")?,
                    gates: field(&d, "gates")?,
                    under_exception: field(&d, "under_exception")?,
                    allowed: field(&d, "allowed")?,
                    input: d["input"].clone(),
                    exceptions: field(&d, "exceptions")?,
                    previous: field(&d, "previous")?,
                };
                Ok((decision, field(&d, "policy_digest")?))
            }
        }
    }

    /// `sovra model promote`.
    pub(crate) fn promote(
        &self,
        model: &str,
        reference: Option<&str>,
        to: Stage,
        zone: Option<&str>,
        approvals: &[PathBuf],
    ) -> Res<Promoted> {
        match self {
            Backend::Local(p) => Ok(p.promote(model, reference, to, zone, approvals)?),
            Backend::Remote(r) => {
                let d = Self::remote_promote(r, &full_ref(model, reference), to, zone, approvals, false, false)?;
                if d["status"] == "denied" {
                    return Err(BackendError::Promote(PromoteError::Denied {
                        subject: field(&d, "subject")?,
                        from: field(&d, "from")?,
                        to: field(&d, "to")?,
                        failed: field(&d, "failed")?,
                        gates: field(&d, "gates")?,
                    }));
                }
                Ok(Promoted {
                    version: field(&d, "version")?,
                    record: field(&d, "record")?,
                    from: field(&d, "from")?,
                    to: field(&d, "to")?,
                    gates: field(&d, "gates")?,
                    under_exception: field(&d, "under_exception")?,
                    audit_seq: field(&d, "audit_seq")?,
                })
            }
        }
    }

    /// `sovra model approve`: signed here with the approver's key; recorded by the service unless `record` is
    /// false.
    pub(crate) fn approve(
        &self,
        model: &str,
        reference: Option<&str>,
        to: Stage,
        key: &Path,
        ttl: Option<u64>,
        record: bool,
    ) -> Res<SignedRecord> {
        let r = match self {
            Backend::Local(p) => return Ok(p.approve(model, reference, to, key, ttl, record)?),
            Backend::Remote(r) => r,
        };
        let info = r.resolve(&full_ref(model, reference))?;
        sovra_promotion::grants::approval_from(to)?;
        let ttl = ttl.unwrap_or(info.approval_max_age_secs);
        if ttl > info.approval_max_age_secs {
            return Err(fail(
                2,
                format!(
                    "--ttl: {ttl} s exceeds approvals.max_age ({}) of the promotion service",
                    info.approval_max_age
                ),
            )
            .into());
        }
        let key = SigningKey::open(key).map_err(PromoteError::from)?;
        let hint = key.public_key().hint();
        let name = info.approvers.iter().find(|a| a.hint == hint).map_or("unknown", |a| a.name.as_str());
        let (env, fields) = sovra_promotion::sign_approval(&info.model, &info.digest, to, name, &key, info.now, ttl)?;
        let envelope = serde_json::to_value(&env).unwrap_or(Value::Null);
        if !record {
            return Ok(SignedRecord {
                id: 0,
                kind: "approval".into(),
                model: info.model,
                digest: info.digest,
                recorded_at: info.now,
                fields,
                envelope,
            });
        }
        let mut c = r.client.clone();
        let d = r.doc(r.rt.block_on(c.approve(r.req(SignedGrant { envelope_json: envelope.to_string() }))))?;
        Ok(serde_json::from_value(d).map_err(|e| fail(1, format!("the service's approval record: {e}")))?)
    }

    /// `sovra exception grant`: signed here with the admin's key, recorded by the service.
    pub(crate) fn grant_exception(
        &self,
        model: &str,
        reference: Option<&str>,
        gate: &str,
        ttl: u64,
        reason: &str,
        admin_key: &Path,
    ) -> Res<SignedRecord> {
        let r = match self {
            Backend::Local(p) => return Ok(p.grant_exception(model, reference, gate, ttl, reason, admin_key)?),
            Backend::Remote(r) => r,
        };
        let info = r.resolve(&full_ref(model, reference))?;
        let (key, admin) = admin_signer(&info, admin_key, "only an admin may grant an exception")?;
        if sovra_promotion::gates::is_built_in(gate) {
            return Err(fail(
                2,
                format!(
                    "--gate `{gate}`: the {gate} check is built into the promotion service and no exception waives it"
                ),
            )
            .into());
        }
        if !info.gates.iter().any(|g| g == gate) {
            return Err(fail(2, format!("--gate `{gate}` is not a gate (gates: {})", info.gates.join(", "))).into());
        }
        if reason.trim().is_empty() {
            return Err(fail(2, "--reason: give the reason for the exception (it is audited)").into());
        }
        if ttl > info.exception_max_ttl_secs {
            return Err(fail(
                2,
                format!(
                    "--ttl: {ttl} s is longer than exceptions.max_ttl ({}, {} s) of the promotion service",
                    info.exception_max_ttl, info.exception_max_ttl_secs
                ),
            )
            .into());
        }
        let (env, _) =
            sovra_promotion::sign_exception(&info.model, &info.digest, gate, reason, &admin, &key, info.now, ttl)?;
        let json = serde_json::to_string(&env).unwrap_or_default();
        let mut c = r.client.clone();
        let d = r.doc(r.rt.block_on(c.grant_exception(r.req(SignedGrant { envelope_json: json }))))?;
        Ok(serde_json::from_value(d).map_err(|e| fail(1, format!("the service's exception record: {e}")))?)
    }
}

impl Remote {
    /// `sovra model list`.
    pub(crate) fn versions(&self, name: Option<&str>) -> Result<Vec<VersionRecord>, Failure> {
        let mut c = self.client.clone();
        let m = ListModelsRequest { name: name.unwrap_or_default().to_string() };
        let d = self.doc(self.rt.block_on(c.list(self.req(m)))).map_err(Failure::from)?;
        serde_json::from_value(d).map_err(|e| fail(1, format!("the service's version list: {e}")))
    }

    /// `sovra audit verify`: the report document (as `-o json` prints it).
    pub(crate) fn audit_verify(&self, expect_head: Option<&str>) -> Result<Value, Failure> {
        let mut c = self.client.clone();
        let m = AuditVerifyRequest { expect_head: expect_head.unwrap_or_default().to_string() };
        self.doc(self.rt.block_on(c.audit_verify(self.req(m)))).map_err(Failure::from)
    }

    /// `sovra audit log` / export: every entry, in order.
    pub(crate) fn audit_export(&self) -> Result<Vec<Value>, Failure> {
        let mut c = self.client.clone();
        let req = self.req(AuditExportRequest {});
        self.rt.block_on(async {
            let mut s = c.audit_export(req).await.map_err(|e| self.status(e))?.into_inner();
            let mut out = Vec::new();
            while let Some(e) = s.message().await.map_err(|e| self.status(e))? {
                out.push(
                    serde_json::from_str(&e.json)
                        .map_err(|e| fail(1, format!("the service sent an audit entry that is not JSON: {e}")))?,
                );
            }
            Ok(out)
        })
    }
}
