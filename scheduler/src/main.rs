//! `sovra-scheduler`: the scheduler service.
//!
//! `sovra-scheduler serve --config cluster.yaml [--listen 127.0.0.1:7070] [--data DIR] [--token T]` — without
//! `--data` the state lives only in memory; without `--token` one is generated and printed. Exit codes: 0 after a
//! clean shutdown (Ctrl-C), 2 bad input (config, flags), 1 the server failed.

use clap::{Parser, Subcommand};
use sovra_domain::ClusterConfig;
use sovra_scheduler::service::{Scheduler, serve};
use sovra_scheduler::store::Store;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sovra-scheduler", version, about = "The Sovra scheduler service.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API.
    Serve {
        /// Cluster file (zones, pools, residency classes, nodes, queues).
        #[arg(long, short = 'c')]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// State directory (sled); without it, state is lost when the process ends.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Bearer token clients must present (default: a random one, printed).
        #[arg(long, env = "SOVRA_TOKEN")]
        token: Option<String>,
        /// Scorers and weights (default: the cluster's scheduling.policy, else best-fit,topology).
        #[arg(long)]
        policy: Option<String>,
        /// Seed of the tie-breaking node order.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn random_token() -> Result<String, String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

async fn run(cli: Cli) -> Result<(), (u8, String)> {
    let Command::Serve { config, listen, data, token, policy, seed } = cli.command;
    let bad = |m: String| (2u8, m);
    let cluster = ClusterConfig::load(&config).map_err(|e| bad(e.to_string()))?;
    let policy = match policy {
        Some(p) => p.parse().map_err(|e| bad(format!("--policy: {e}")))?,
        None => cluster.scheduling.policy.clone().unwrap_or_default(),
    };
    let store = data.as_ref().map(|d| Store::open(d)).transpose().map_err(bad)?;
    let scheduler = Scheduler::new(cluster, policy, seed, store).map_err(bad)?;
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| bad(format!("--listen {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| (1, e.to_string()))?;
    let token = match token {
        Some(t) if !t.is_empty() => t,
        _ => random_token().map_err(|m| (1, m))?,
    };
    println!("sovra-scheduler listening on http://{addr}");
    println!("token: {token}");
    println!("try:   SOVRA_SERVER=http://{addr} SOVRA_TOKEN={token} sovra submit examples/job.yaml");
    serve(listener, scheduler, token, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|m| (1, m))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
