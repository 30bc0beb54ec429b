//! `sovra-scheduler`: the scheduler service.
//!
//! `sovra-scheduler serve --config cluster.yaml [--listen 127.0.0.1:7070] [--data DIR] [--token T] [--tls-dir D]
//! [--metrics-listen ADDR] [--heartbeat-ms N] [--require-daemons] [--recover]` — without `--data` the state lives
//! only in memory; without `--token` one is generated and printed; without `--tls-dir` the API is plain HTTP/2 and
//! node daemons cannot report (they need mutual TLS). A damaged `--data` directory is refused (see
//! `sovra_scheduler::store`); `--recover` starts on it anyway and prints each job that was lost.
//!
//! `sovra-scheduler certs --dir D --node NAME …` creates a CA, the scheduler's certificate and one client
//! certificate per node (see `sovra_scheduler::tls`).
//!
//! Exit codes: 0 after a clean shutdown (Ctrl-C), 2 bad input (config, flags), 1 the server failed or its state
//! directory is damaged.

use clap::{Parser, Subcommand};
use sovra_domain::ClusterConfig;
use sovra_scheduler::service::{Options, Scheduler, serve_metrics, serve_with};
use sovra_scheduler::store::{SledStore, Store};
use sovra_scheduler::tls::TlsDir;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "sovra-scheduler", version, about = "The Sovra scheduler service.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API.
    Serve(Box<ServeArgs>),
    /// Create a CA, the scheduler's server certificate and node client certificates in a directory (an existing CA
    /// there is reused).
    Certs {
        /// The directory.
        #[arg(long)]
        dir: PathBuf,
        /// Host names or IP addresses of the scheduler (default: localhost, 127.0.0.1).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Node names to issue client certificates for (CN = the node name, as in the cluster file).
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Write a consistent, checksummed backup of the etcd store (docs/etcd.md).
    Backup {
        /// The etcd store.
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The backup file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty etcd store (every replica stopped).
    Restore {
        /// The etcd store.
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Replace a store that is not empty.
        #[arg(long)]
        force: bool,
    },
}

/// Where the etcd store is (`backup`, `restore`).
#[derive(clap::Args)]
struct EtcdArgs {
    /// The etcd cluster's client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "URL,…", required = true)]
    etcd_endpoints: Vec<String>,
    /// The key prefix of the scheduler's state.
    #[arg(long, default_value = sovra_scheduler::store::etcd_backend::DEFAULT_PREFIX)]
    etcd_prefix: String,
}

/// `sovra-scheduler serve`.
#[derive(clap::Args)]
struct ServeArgs {
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
    #[arg(long, env = "SOVRA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Scorers and weights (default: the cluster's scheduling.policy, else best-fit,topology).
    #[arg(long)]
    policy: Option<String>,
    /// Seed of the tie-breaking node order.
    #[arg(long, default_value_t = sovra_placement::DEFAULT_SEED)]
    seed: u64,
    /// TLS directory (`sovra-scheduler certs`): serve over TLS and accept node daemons with client certificates.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Serve Prometheus `/metrics` and `/healthz` over HTTP on this address.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Heartbeat interval node daemons must keep, milliseconds, 100 to 60000 (NotReady after 1.5 intervals of
    /// silence).
    #[arg(long, default_value_t = 2000, value_parser = sovra_scheduler::service::parse_heartbeat_ms)]
    heartbeat_ms: u64,
    /// Nodes are NotReady until their daemon registers (default: nodes without a daemon are used as the
    /// cluster file describes them).
    #[arg(long)]
    require_daemons: bool,
    /// Start even though the `--data` directory is damaged: prints every job that was lost (missing, or a
    /// record failing its checksum), keeps damaged records aside and never reuses their ids. Without it a
    /// damaged directory is refused.
    #[arg(long, requires = "data")]
    recover: bool,
    /// How long finished jobs (succeeded, failed, cancelled, refused) stay listed before they are archived in
    /// the store (`sovra job ID` still finds them): e.g. `90s`, `30m`, `24h`, `7d` (default: forever).
    #[arg(long, value_name = "DURATION", value_parser = sovra_scheduler::service::parse_retention)]
    retain_finished: Option<Duration>,
    /// The P-256 private key (PEM) placement receipts are signed with (docs/receipts.md). Default: DATA/receipt-key.pem,
    /// created on first start with its public half beside it (receipt-key.pub.pem, for the promotion service's
    /// `provenance.scheduler_keys`); without `--data`, a key for this process only.
    #[arg(long, value_name = "FILE")]
    receipt_key: Option<PathBuf>,
    /// The promotion service (`https://host:port`) that says where model versions are available: jobs naming a
    /// `model:` are placed only in zones whose inference data zone holds it. Without it they wait (fail closed).
    #[arg(long, value_name = "URL")]
    promotion_server: Option<String>,
    /// The CA of the promotion service's certificate.
    #[arg(long, value_name = "FILE", requires = "promotion_server")]
    promotion_ca: Option<PathBuf>,
    /// A bearer token of a promotion service client with the viewer role.
    #[arg(long, env = "SOVRA_PROMOTION_TOKEN", hide_env_values = true, default_value = "")]
    promotion_token: String,
    /// How often to ask the promotion service where models are, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    models_poll_ms: u64,
    /// Who may grant placement exceptions (break-glass): a YAML file naming the approvers (`name`, `public_key`
    /// PEM path), how many must sign one exception (`required`, N of M, at least 2) and the longest window
    /// (`max_hours`, default 72). Without it every exception is refused (docs/receipts.md).
    #[arg(long, value_name = "FILE")]
    break_glass: Option<PathBuf>,
    // High availability on etcd (docs/etcd.md).
    /// Where the state lives: `sled` (embedded, `--data DIR`; without `--data`, memory) or `etcd` (an etcd v3
    /// cluster, `--etcd-endpoints`; replicas elect a leader, the others stand by).
    #[arg(long, value_enum, default_value_t = StoreKind::Sled)]
    store: StoreKind,
    /// The etcd cluster's client URLs, comma-separated (`--store etcd`).
    #[arg(long, value_delimiter = ',', value_name = "URL,…")]
    etcd_endpoints: Vec<String>,
    /// The key prefix of this scheduler's state in etcd (one prefix per Sovra cluster).
    #[arg(long, default_value = sovra_scheduler::store::etcd_backend::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// The leader's etcd lease, milliseconds (rounded up to whole seconds): a standby takes over this long after
    /// the leader stopped renewing it.
    #[arg(long, default_value_t = sovra_scheduler::leadership::DEFAULT_TTL_MS,
          value_parser = clap::value_parser!(u64).range(1000..=60_000))]
    lease_ttl_ms: u64,
    /// The address clients reach this replica on, recorded in etcd while it leads (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
}

/// `--store`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// sled (embedded).
    Sled,
    /// etcd v3.
    Etcd,
}

async fn run(cli: Cli) -> Result<(), (u8, String)> {
    let bad = |m: String| (2u8, m);
    let a = match cli.command {
        Command::Certs { dir, hosts, nodes } => {
            let tls = sovra_scheduler::tls::generate(&dir, &hosts, &nodes).map_err(bad)?;
            println!("CA:        {}", tls.ca().display());
            println!("server:    {}", tls.server().0.display());
            for n in &nodes {
                println!("node {n}: {}", tls.node(n).0.display());
            }
            return Ok(());
        }
        Command::Backup { etcd, out } => {
            let s = sovra_scheduler::store::EtcdStore::open(&etcd.etcd_endpoints, &etcd.etcd_prefix).map_err(bad)?;
            let h = sovra_scheduler::store::etcd_backend::backup::backup(&s, &out).map_err(|m| (1, m))?;
            println!(
                "backup: {} keys at etcd revision {} -> {} (sha256 {})",
                h.keys,
                h.revision,
                out.display(),
                h.sha256
            );
            return Ok(());
        }
        Command::Restore { etcd, from, force } => {
            let s = sovra_scheduler::store::EtcdStore::open(&etcd.etcd_endpoints, &etcd.etcd_prefix).map_err(bad)?;
            let h = sovra_scheduler::store::etcd_backend::backup::restore(&s, &from, force).map_err(bad)?;
            let m = s.manifest();
            println!(
                "restore: {} keys from revision {} of etcd cluster {:x}: {} jobs, last id {}",
                h.keys, h.revision, h.cluster_id, m.jobs, m.last_id
            );
            return Ok(());
        }
        Command::Serve(a) => *a,
    };
    let ServeArgs {
        config,
        listen,
        data,
        token,
        policy,
        seed,
        tls_dir,
        metrics_listen,
        heartbeat_ms,
        require_daemons,
        recover,
        retain_finished,
        receipt_key,
        promotion_server,
        promotion_ca,
        promotion_token,
        models_poll_ms,
        break_glass,
        store: store_kind,
        etcd_endpoints,
        etcd_prefix,
        lease_ttl_ms,
        advertise,
    } = a;
    let break_glass = break_glass
        .map(|p| sovra_scheduler::service::exceptions::BreakGlass::load(&p).map(std::sync::Arc::new))
        .transpose()
        .map_err(bad)?;
    if store_kind == StoreKind::Etcd && (data.is_some() || recover) {
        return Err(bad("--store etcd keeps the state in etcd: drop --data and --recover".into()));
    }
    if store_kind == StoreKind::Sled && !etcd_endpoints.is_empty() {
        return Err(bad("--etcd-endpoints needs --store etcd".into()));
    }
    if let Some(p) = &promotion_server
        && !(p.starts_with("https://") || p.starts_with("http://"))
    {
        return Err(bad(format!("--promotion-server {p}: give an https:// address")));
    }
    let models = promotion_server.map(|endpoint| sovra_scheduler::service::models::ModelSource {
        endpoint,
        ca: promotion_ca,
        token: promotion_token,
        poll: Duration::from_millis(models_poll_ms),
        domain: None,
    });
    let cluster = ClusterConfig::load(&config).map_err(|e| bad(e.to_string()))?;
    let policy = match policy {
        Some(p) => p.parse().map_err(|e| bad(format!("--policy: {e}")))?,
        None => cluster.scheduling.policy.clone().unwrap_or_default(),
    };
    let ca = tls_dir.as_ref().map(|d| TlsDir(d.clone()).ca());
    let tls = tls_dir.map(|d| TlsDir(d).server_config()).transpose().map_err(bad)?;
    // The listener first: a replica that cannot listen never campaigns.
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| bad(format!("--listen {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| (1, e.to_string()))?;
    let mut etcd = None;
    let store = match &data {
        None if store_kind == StoreKind::Etcd => {
            let s = std::sync::Arc::new(
                sovra_scheduler::store::EtcdStore::open(&etcd_endpoints, &etcd_prefix).map_err(bad)?,
            );
            let me = advertise.clone().unwrap_or_else(|| addr.to_string());
            let won = sovra_scheduler::leadership::campaign(&s, &me, Duration::from_millis(lease_ttl_ms))
                .await
                .map_err(|m| (1, m))?;
            etcd = Some((s.clone(), won));
            Some(Box::new(s) as Box<dyn Store>)
        }
        None => None,
        Some(d) if recover => {
            let (store, damage) = SledStore::open_recover(d).map_err(|m| (1, m))?;
            if damage.is_empty() {
                println!("recover: {} is intact; nothing was lost", d.display());
            } else {
                println!("recover: {}: {}", d.display(), damage.describe());
                for id in damage.lost_jobs() {
                    println!("recover: job {id} lost");
                }
                let lost = damage.lost_jobs().len();
                println!("recover: {lost} job(s) lost; new jobs get ids after {}", store.manifest().last_id);
            }
            Some(Box::new(store) as Box<dyn Store>)
        }
        Some(d) => Some(Box::new(SledStore::open(d).map_err(|m| (1, m))?) as Box<dyn Store>),
    };
    let opts = Options {
        heartbeat: Duration::from_millis(heartbeat_ms),
        require_daemons,
        config_path: Some(config),
        retain_finished,
        receipt_key: sovra_scheduler::service::receipts::load_key(receipt_key.as_deref(), data.as_deref())
            .map_err(bad)?,
        models,
        break_glass,
    };
    let scheduler = Scheduler::with_options(cluster, policy, seed, store, opts).map_err(bad)?;
    if let Some((s, won)) = etcd {
        tokio::spawn(async move {
            let why = sovra_scheduler::leadership::hold(&s, &won).await;
            sovra_scheduler::leadership::step_down(&s, &why);
        });
    }
    let token = match token {
        Some(t) if !t.is_empty() => t,
        _ => sovra_scheduler::service::random_token().map_err(|m| (1, m))?,
    };
    if let Some(m) = metrics_listen {
        let l = tokio::net::TcpListener::bind(&m).await.map_err(|e| bad(format!("--metrics-listen {m}: {e}")))?;
        let a = l.local_addr().map_err(|e| (1, e.to_string()))?;
        println!("metrics on http://{a}/metrics, health on http://{a}/healthz");
        let s = scheduler.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_metrics(l, s, std::future::pending()).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("sovra-scheduler listening on {scheme}://{addr}");
    println!("token: {token}");
    // The CA's path as an absolute one, so that the line works when pasted in another directory.
    let ca = ca.map(|p| std::path::absolute(&p).unwrap_or(p)).map(|p| format!(" SOVRA_CA={}", p.display()));
    println!(
        "try:   SOVRA_SERVER={scheme}://{addr} SOVRA_TOKEN={token}{} sovra submit examples/job.yaml",
        ca.unwrap_or_default()
    );
    serve_with(listener, scheduler, token, tls, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|m| (1, m))
}

#[tokio::main]
async fn main() -> ExitCode {
    sovra_cli_util::exit_quietly_on_broken_pipe();
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
