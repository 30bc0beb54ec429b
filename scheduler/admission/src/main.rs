//! `sovra-admission`: Sovra's fail-closed admission webhook (see docs/kubernetes.md, "Admission webhook").

use clap::{Parser, Subcommand};
use sovra_admission::http::{Source, Webhook, router};
use sovra_admission::lookup::KubeLookup;
use sovra_admission::{Identity, Policy, cert};
use sovra_domain::ClusterConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "sovra-admission", version, about = "Sovra's fail-closed Kubernetes admission webhook")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mutating and validating webhooks over HTTPS.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The Sovra cluster file: zones, pools and residency classes.
    #[arg(long, short)]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Serving certificate (PEM), for the webhook Service's DNS name. Required: kube-apiserver calls webhooks over
    /// HTTPS only.
    #[arg(long)]
    tls_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    tls_key: PathBuf,
    /// The scheduler profile regulated pods are given (`spec.schedulerName`).
    #[arg(long, default_value = "sovra-scheduler")]
    scheduler_name: String,
    /// Who may set, change or remove a node's pool label or a namespace's residency label: `user:NAME` or
    /// `group:NAME`, repeatable. None: nobody may.
    #[arg(long = "admin")]
    admins: Vec<Identity>,
    /// Largest review body, MiB.
    #[arg(long, default_value_t = 8)]
    max_body_mib: usize,
}

fn main() -> ExitCode {
    sovra_cli_util::exit_quietly_on_broken_pipe();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let Command::Serve(a) = cli.command;
    match runtime.block_on(serve(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(a: ServeArgs) -> Result<(), String> {
    let config = ClusterConfig::load(&a.config).map_err(|e| e.to_string())?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let expires = cert::check(&a.tls_cert, now).map_err(|e| e.to_string())?;
    if expires - now < 7 * 86_400 {
        tracing::warn!(days = (expires - now) / 86_400, "the serving certificate expires within a week");
    }
    let tls = sovra_extender::server::tls_config(&a.tls_cert, &a.tls_key, None)?;
    if a.admins.is_empty() {
        tracing::warn!("no --admin: nobody may set or change pool labels on nodes or residency labels on namespaces");
    }
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the Kubernetes API (kubeconfig or in-cluster): {e}"))?;
    let policy = Policy::new(config, &a.scheduler_name, a.admins.clone());
    let hook = Arc::new(Webhook::new(policy, Source::Kube(KubeLookup::start(client))));
    let listener = tokio::net::TcpListener::bind(a.listen).await.map_err(|e| format!("--listen {}: {e}", a.listen))?;
    let running =
        sovra_extender::server::serve(listener, router(hook, a.max_body_mib.saturating_mul(1 << 20)), Some(tls))
            .map_err(|e| e.to_string())?;
    tracing::info!(addr = %running.local_addr, scheduler = %a.scheduler_name, admins = a.admins.len(), "sovra-admission listening");
    tokio::select! {
        _ = running.wait() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
