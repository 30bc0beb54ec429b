//! `sovra-promotion serve --registry DIR --promotion-config FILE [--listen ADDR] [--audit-witness FILE]`: the
//! promotion service over gRPC and TLS (docs/promotion-service.md). `sovra-promotion token` prints a new bearer
//! token and the `token_sha256` line for the config.
//!
//! Exit codes: 0 stopped cleanly; 1 the service failed (cannot listen, TLS, the registry is damaged); 2 bad input
//! (the config, a missing `service:` section or key).

use clap::{Parser, Subcommand};
use sovra_domain::ClusterConfig;
use sovra_promotion::{Promoter, PromotionConfig};
use sovra_promotion_server::{ServeOptions, serve};
use sovra_registry::{OpenOptions, Registry};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "sovra-promotion", version, about = "The Sovra promotion service (gRPC over TLS)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry and gated promotion; the only process that opens the registry and holds the service key.
    Serve {
        /// Registry directory (created on first use).
        #[arg(long, env = "SOVRA_REGISTRY", hide_env_values = true, default_value = "sovra-registry")]
        registry: PathBuf,
        /// Promotion config, with its `service:` section (TLS files, clients and roles).
        #[arg(long, env = "SOVRA_PROMOTION_CONFIG", hide_env_values = true, default_value = "promotion.yaml")]
        promotion_config: PathBuf,
        /// Address to listen on (default: `service.listen`, else 127.0.0.1:7443). Port 0 picks a free port.
        #[arg(long)]
        listen: Option<String>,
        /// A second file that keeps the audit head (see docs/registry.md).
        #[arg(long, env = "SOVRA_AUDIT_WITNESS", hide_env_values = true, value_name = "FILE")]
        audit_witness: Option<PathBuf>,
        /// Serve Prometheus metrics (`/metrics`: `sovra_promotion_refusals_total{attempt}`, every refused attempt
        /// to move a model across a border; alert on any increase) over plain HTTP on this address.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Print a new random bearer token and its SHA-256 for `service.clients[].token_sha256`.
    Token,
}

fn fail(code: u8, m: impl Into<String>) -> (u8, String) {
    (code, m.into())
}

fn random_token() -> Result<String, String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn run(cli: Cli) -> Result<(), (u8, String)> {
    let (registry, promotion_config, listen, audit_witness, metrics_listen) = match cli.command {
        Command::Token => {
            let t = random_token().map_err(|m| fail(1, m))?;
            println!("token: {t}");
            println!("token_sha256: {}", sovra_promotion_server::auth::token_hash(&t));
            return Ok(());
        }
        Command::Serve { registry, promotion_config, listen, audit_witness, metrics_listen } => {
            (registry, promotion_config, listen, audit_witness, metrics_listen)
        }
    };
    let config = PromotionConfig::load(&promotion_config).map_err(|m| fail(2, m))?;
    let Some(section) = config.service.clone() else {
        return Err(fail(
            2,
            format!(
                "{}: field `service`: missing; the service needs its TLS files and clients (docs/promotion-service.md)",
                config.path.display()
            ),
        ));
    };
    // The service signs every promotion statement: refuse to start without a usable key.
    config.service_signer().map_err(|m| fail(2, m))?;
    let cluster = match &config.cluster {
        Some(p) => ClusterConfig::load(p).map_err(|e| fail(2, e.to_string()))?,
        None => {
            return Err(fail(
                2,
                format!("{}: field `cluster`: the service needs the cluster file", config.path.display()),
            ));
        }
    };
    let reg = Registry::open_opts(&registry, &OpenOptions { witness: audit_witness, inspect: false })
        .map_err(|e| fail(if e.is_damage() { 1 } else { 2 }, e.to_string()))?;
    // Built outside the async runtime: the registry's blob store owns a runtime of its own, which must be neither
    // created nor dropped on an async worker.
    let promoter = Arc::new(Promoter::new(reg, config, cluster).map_err(|e| fail(2, e.to_string()))?);
    for w in promoter.gates.warnings() {
        eprintln!("warning: {w}");
    }
    let listen = listen.unwrap_or_else(|| section.listen.clone());
    let staging = section.staging.clone().unwrap_or_else(std::env::temp_dir);
    let opts = ServeOptions {
        cert: section.tls.cert.clone(),
        key: section.tls.key.clone(),
        client_ca: section.tls.client_ca.clone(),
        staging,
        max_upload: section.max_upload_bytes,
        clients: section.clients.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(1, format!("cannot start the runtime: {e}")))?;
    let p = promoter.clone();
    let result = rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(&listen).await.map_err(|e| fail(2, format!("--listen {listen}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| fail(1, e.to_string()))?;
        println!("sovra-promotion listening on https://{addr}");
        if let Some(m) = metrics_listen {
            let l =
                tokio::net::TcpListener::bind(&m).await.map_err(|e| fail(2, format!("--metrics-listen {m}: {e}")))?;
            let maddr = l.local_addr().map_err(|e| fail(1, e.to_string()))?;
            println!("metrics on http://{maddr}/metrics");
            let refusals = p.refusals.clone();
            tokio::spawn(sovra_promotion_server::server::serve_metrics(l, refusals));
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        serve(listener, p, opts, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|m| fail(1, m))
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    drop(promoter);
    result
}

fn main() -> ExitCode {
    sovra_cli_util::exit_quietly_on_broken_pipe();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
