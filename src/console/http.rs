//! The console's HTTP side: the routes (GET only), the login check before every one of them, and the headers that
//! keep a page from loading anything but its own stylesheet and plots.

use super::State;
use super::auth::Presented;
use super::pages::{self, Query};
use crate::Failure;
use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The console's stylesheet (embedded: nothing comes from the internet).
const CSS: &str = include_str!("console.css");

/// The router over `state`.
pub(crate) fn router(state: Arc<State>) -> Router {
    let page = |f: fn(&super::snapshot::Snapshot, &Query) -> String| {
        move |axum::extract::State(s): axum::extract::State<Arc<State>>,
              axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>| async move {
            let snap = s.snapshot.read().map(|g| g.clone()).unwrap_or_default();
            Html(f(&snap, &Query(q)))
        }
    };
    Router::new()
        .route("/", get(page(pages::zones)))
        .route("/zones", get(page(pages::zones)))
        .route("/nodes", get(page(pages::nodes)))
        .route("/jobs", get(page(pages::jobs)))
        .route("/models", get(page(super::pages_models::models)))
        .route("/audit", get(page(super::pages_models::audit)))
        .route("/plots", get(page(super::pages_models::plots)))
        .route("/plots/{name}", get(plot))
        .route("/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }))
        .fallback(|| async { (StatusCode::NOT_FOUND, Html(pages::not_found())) })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// A plot's SVG, served as an image (an `<img>` runs no script in it).
async fn plot(axum::extract::State(s): axum::extract::State<Arc<State>>, Path(name): Path<String>) -> Response {
    let snap = s.snapshot.read().map(|g| g.clone()).unwrap_or_default();
    match snap.plots.iter().find(|(n, _)| *n == name) {
        Some((_, svg)) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, Html(pages::not_found())).into_response(),
    }
}

/// Before every route: the login (401 without it), then GET or HEAD only (405: the console changes nothing), then
/// the security headers on the answer.
async fn guard(axum::extract::State(s): axum::extract::State<Arc<State>>, req: Request, next: Next) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let mut resp = if !s.login.permits(&Presented { authorization }) {
        let mut r =
            (StatusCode::UNAUTHORIZED, "401: log in with the console token (user name: any).\n").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Sovra console\", charset=\"UTF-8\""),
        );
        r
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r =
            (StatusCode::METHOD_NOT_ALLOWED, "405: the console is read-only; change things with the `sovra` CLI.\n")
                .into_response();
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Serves the console on `listener` until the process ends.
pub(crate) async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) -> Result<u8, Failure> {
    axum::serve(listener, router(state))
        .await
        .map(|_| 0)
        .map_err(|e| Failure { code: 1, message: format!("the console's HTTP server: {e}") })
}
