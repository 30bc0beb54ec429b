//! `sovra console`: the read-only web console (docs/console.md).
//!
//! One process reads the scheduler's and the promotion service's gRPC APIs (the CLI's own clients and
//! credentials) into an in-memory [`snapshot::Snapshot`], refreshed in the background, and serves HTML pages
//! rendered on the server from it (`maud`, CSS embedded; no JavaScript, no asset from the internet) on a loopback
//! address. It has no mutating endpoint: every method but GET and HEAD is refused with 405, and every request
//! needs the console's login ([`auth::Login`]).

pub(crate) mod auth;
pub(crate) mod bench;
mod http;
mod pages;
mod pages_jobs;
mod pages_models;
pub(crate) mod snapshot;

use crate::Failure;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// `sovra console` options.
#[derive(clap::Args, Clone)]
pub struct ConsoleArgs {
    /// Address to serve the console on (loopback unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub listen: String,
    /// Serve on a non-loopback address too (put TLS in front of it: the console itself speaks plain HTTP).
    #[arg(long)]
    pub allow_remote: bool,
    /// The token users log in with (at least 16 characters).
    #[arg(long, env = "SOVRA_CONSOLE_TOKEN", hide_env_values = true)]
    pub console_token: Option<String>,
    /// The scheduler's address.
    #[arg(long, env = "SOVRA_SERVER", default_value = "http://127.0.0.1:7070", hide_env_values = true)]
    pub scheduler: String,
    /// The scheduler's bearer token.
    #[arg(long, env = "SOVRA_TOKEN", default_value = "", hide_env_values = true)]
    pub scheduler_token: String,
    /// The CA of an `https://` scheduler.
    #[arg(long, env = "SOVRA_CA", hide_env_values = true)]
    pub scheduler_ca: Option<PathBuf>,
    /// The promotion service (`https://HOST:PORT`); without it the models and audit pages say so.
    #[arg(long, env = "SOVRA_PROMOTION_SERVER", hide_env_values = true)]
    pub promotion_server: Option<String>,
    /// The promotion service's CA.
    #[arg(long, env = "SOVRA_PROMOTION_CA", hide_env_values = true)]
    pub promotion_ca: Option<PathBuf>,
    /// A bearer token the promotion service knows (roles viewer and auditor).
    #[arg(long, env = "SOVRA_PROMOTION_TOKEN", hide_env_values = true)]
    pub promotion_token: Option<String>,
    /// A directory of simulator plots (the `--out` of `sovra simulate | replay | plan`): its `*.svg` are shown.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// How often the snapshot is re-read, milliseconds (100 to 3600000).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub refresh_ms: u64,
}

/// The shared state of the HTTP handlers.
pub(crate) struct State {
    /// The latest snapshot.
    pub snapshot: RwLock<Arc<snapshot::Snapshot>>,
    /// Who may read.
    pub login: auth::Login,
}

/// Binds `listen`, refusing a non-loopback address unless `allow_remote`.
pub(crate) async fn bind(listen: &str, allow_remote: bool) -> Result<tokio::net::TcpListener, Failure> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| Failure { code: 2, message: format!("--listen {listen}: not an IP:PORT address ({e})") })?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(Failure {
            code: 2,
            message: format!(
                "--listen {listen}: not a loopback address; the console speaks plain HTTP, so pass --allow-remote \
                 only behind a TLS proxy"
            ),
        });
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure { code: 2, message: format!("--listen {listen}: {e}") })
}

/// Starts the background refresh (a thread of its own: the clients block, so it may be called from async code) and
/// returns the state; until the first snapshot is read the pages say so.
pub(crate) fn start_refresh(source: snapshot::Source, login: auth::Login, every: Duration) -> Arc<State> {
    let first = snapshot::Snapshot {
        errors: vec!["the first snapshot is still being read; reload in a moment".into()],
        ..snapshot::Snapshot::default()
    };
    let state = Arc::new(State { snapshot: RwLock::new(Arc::new(first)), login });
    let weak = Arc::downgrade(&state);
    std::thread::spawn(move || {
        loop {
            let next = Arc::new(source.fetch());
            let Some(s) = weak.upgrade() else { return };
            if let Ok(mut w) = s.snapshot.write() {
                *w = next;
            }
            drop(s);
            std::thread::sleep(every);
        }
    });
    state
}

/// Serves the console for `sovra dev`: binds `listen`, starts the refresh and the server on the current runtime,
/// and returns the address.
pub(crate) async fn spawn_dev(
    listen: &str,
    token: &str,
    scheduler: crate::remote::Remote,
    promotion: String,
    ca: PathBuf,
) -> Result<SocketAddr, Failure> {
    let login = auth::Login::new(token)?;
    let listener = bind(listen, false).await?;
    let addr = listener.local_addr().map_err(|e| Failure { code: 1, message: e.to_string() })?;
    let source = snapshot::Source::dev(scheduler, promotion, ca, token.to_string());
    let state = start_refresh(source, login, Duration::from_secs(2));
    tokio::spawn(async move {
        if let Err(f) = http::serve(listener, state).await {
            eprintln!("error: {}", f.message);
        }
    });
    Ok(addr)
}

/// Runs `sovra console` until Ctrl-C.
pub fn run(args: ConsoleArgs) -> Result<u8, Failure> {
    let login = auth::Login::new(args.console_token.as_deref().unwrap_or(""))?;
    let source = snapshot::Source::from_args(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure { code: 1, message: format!("cannot start the runtime: {e}") })?;
    rt.block_on(async move {
        let listener = bind(&args.listen, args.allow_remote).await?;
        let state = start_refresh(source, login, Duration::from_millis(args.refresh_ms));
        let addr = listener.local_addr().map_err(|e| Failure { code: 1, message: e.to_string() })?;
        println!("Sovra console on http://{addr}/ (read-only; log in with the console token)");
        tokio::select! {
            r = http::serve(listener, state) => r,
            _ = tokio::signal::ctrl_c() => Ok(0),
        }
    })
}
