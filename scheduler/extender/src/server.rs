//! The HTTP(S) server: `POST {prefix}/filter`, `/prioritize`, `/preempt`, `/bind`, plus `GET /healthz`,
//! `GET /readyz` (503 until the watches have synced) and `GET /metrics`. Plain HTTP or TLS (rustls), with optional client-certificate verification (mTLS).
//!
//! Malformed bodies get HTTP 400 with a message naming the verb and where the JSON broke; bodies over the limit get
//! 413. kube-scheduler does not read non-200 bodies, but people debugging with curl do.

use crate::extender::Extender;
use crate::wire;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Default request body limit: 64 MiB (a `nodeCacheCapable: false` request carries every candidate Node object).
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the response: {e}")).into_response(),
    }
}

fn bad_request(ext: &Extender, e: wire::DecodeError) -> Response {
    ext.metrics.bad_requests.inc();
    tracing::debug!(error = %e, "bad request");
    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
}

async fn filter(State(ext): State<Arc<Extender>>, body: Bytes) -> Response {
    match wire::decode_args("filter", &body) {
        Ok(args) => {
            let body = wire::encode_filter_result(&ext.filter(&args));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => bad_request(&ext, e),
    }
}

async fn prioritize(State(ext): State<Arc<Extender>>, body: Bytes) -> Response {
    if let Some(why) = ext.cache().readiness().not_ready() {
        // kube-scheduler drops an erring extender's scores for the pod; filter has refused every node anyway.
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    }
    match wire::decode_args("prioritize", &body) {
        Ok(args) => json(&ext.prioritize(&args)),
        Err(e) => bad_request(&ext, e),
    }
}

async fn preempt(State(ext): State<Arc<Extender>>, body: Bytes) -> Response {
    match wire::decode_preemption(&body) {
        Ok(args) => json(&ext.preempt(&args)),
        Err(e) => bad_request(&ext, e),
    }
}

/// Asks the connection a request came on to close once its answers are sent (HTTP/1.1 `Connection: close`
/// semantics, an HTTP/2 GOAWAY), so that the client's next request dials again.
#[derive(Clone, Default)]
pub struct CloseConnection(Arc<tokio::sync::Notify>);

async fn bind(
    State(ext): State<Arc<Extender>>,
    close: Option<axum::Extension<CloseConnection>>,
    body: Bytes,
) -> Response {
    match wire::decode_binding(&body) {
        Ok(args) => {
            let result = ext.bind(&args).await;
            // A follower refused: kube-scheduler keeps one connection to the Service, which would keep reaching
            // this replica. Closing it makes the retry dial again, and the Service may then reach the leader.
            if !result.error.is_empty()
                && !ext.leads()
                && let Some(axum::Extension(c)) = close
            {
                c.0.notify_one();
            }
            json(&result)
        }
        Err(e) => bad_request(&ext, e),
    }
}

/// `GET /readyz`: 200 `ok` once the cache is synced (at once without `--kube`), else 503 with the reason.
async fn readyz(State(ext): State<Arc<Extender>>) -> Response {
    match ext.cache().readiness().not_ready() {
        None => "ok\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(ext): State<Arc<Extender>>) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], ext.metrics.render()).into_response()
}

/// The routes under `prefix` (e.g. `""` or `/sovra`; a trailing `/` is ignored, as kube-scheduler strips it from
/// `urlPrefix`), with a body limit of `max_body` bytes.
pub fn router(ext: Arc<Extender>, prefix: &str, max_body: usize) -> Router {
    let p = prefix.trim_end_matches('/');
    let p = if p.is_empty() || p.starts_with('/') { p.to_string() } else { format!("/{p}") };
    Router::new()
        .route(&format!("{p}/filter"), post(filter))
        .route(&format!("{p}/prioritize"), post(prioritize))
        .route(&format!("{p}/preempt"), post(preempt))
        .route(&format!("{p}/bind"), post(bind))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(ext)
}

/// Only `GET /healthz` and `GET /readyz`, for a plain-HTTP probe port (`--probe-listen`): kubelet's probes carry
/// no client certificate, so with mTLS on the main port they could not reach it.
pub fn probe_router(ext: Arc<Extender>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(readyz)).with_state(ext)
}

/// Loads a TLS server configuration: the certificate chain and key (PEM), and, when `client_ca` is given, a
/// requirement that clients present a certificate signed by it (mTLS, for kube-scheduler's `tlsConfig.certFile`).
pub fn tls_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}; give a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("--tls-cert {}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}; give a PEM private key (PKCS#8, PKCS#1 or SEC1)", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))? {
                let c = c.map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
                roots.add(c).map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A running server.
pub struct Running {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the server stops (it runs until the task is aborted or the process ends).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Runs a connection until it ends, or shuts it down gracefully (answers in flight are sent) when asked to.
async fn serve_until_closed<I, S>(
    conn: auto::Connection<'_, I, S, TokioExecutor>,
    close: &CloseConnection,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = close.0.notified() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is given. Each connection runs on its own task; a TLS handshake
/// that takes more than 10 s is dropped.
pub fn serve(listener: TcpListener, app: Router, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Running> {
    let local_addr = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let close = CloseConnection::default();
            let service = TowerToHyperService::new(app.clone().layer(axum::Extension(close.clone())));
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let result = match acceptor {
                    None => serve_until_closed(builder.serve_connection(TokioIo::new(stream), service), &close).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                serve_until_closed(builder.serve_connection(TokioIo::new(tls), service), &close).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
    Ok(Running { local_addr, task })
}
