//! Serving: the gRPC API (with TLS) and the metrics endpoint. The liveness check runs in the writer.

use super::Scheduler;
use sovra_api::v1::admin_server::AdminServer;
use sovra_api::v1::cluster_server::ClusterServer;
use sovra_api::v1::jobs_server::JobsServer;
use sovra_api::v1::nodes_server::NodesServer;

/// Serves the API over plain HTTP/2 on `listener` until `shutdown` completes (no node API: it needs TLS).
pub async fn serve(
    listener: tokio::net::TcpListener,
    scheduler: Scheduler,
    token: String,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    serve_with(listener, scheduler, token, None, shutdown).await
}

/// Serves the API on `listener` until `shutdown` completes, with TLS when `tls` is given.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    scheduler: Scheduler,
    token: String,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let check = Scheduler::token_check(token);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| format!("TLS settings: {e}"))?;
    }
    builder
        .add_service(JobsServer::with_interceptor(scheduler.clone(), check.clone()))
        .add_service(ClusterServer::with_interceptor(scheduler.clone(), check.clone()))
        .add_service(AdminServer::with_interceptor(scheduler.clone(), check))
        .add_service(NodesServer::new(scheduler))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
        .map_err(|e| format!("the gRPC server stopped: {e}"))
}

/// The accepted connections, with Nagle's algorithm off: answers of a few kilobytes (a page of nodes) otherwise
/// wait for the client's delayed ACK — ~40 ms on Linux, the p99 of every read before this was set.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Serves `/metrics` (Prometheus text format) and `/healthz` on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    scheduler: Scheduler,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    use axum::http::{StatusCode, header};
    let s = scheduler.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let s = s.clone();
                async move {
                    match s.metrics_text() {
                        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body),
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], e),
                    }
                }
            }),
        )
        .route(
            "/healthz",
            axum::routing::get(move || {
                let s = scheduler.clone();
                async move {
                    match &s.snapshot().stopped {
                        None => (StatusCode::OK, "ok\n".to_string()),
                        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("the metrics server stopped: {e}"))
}
