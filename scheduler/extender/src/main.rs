//! `sovra-extender`: Sovra as a Kubernetes scheduler extender (see docs/kubernetes.md).

use clap::{Parser, Subcommand};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, k8s, leader, server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "sovra-extender", version, about = "Sovra as a Kubernetes scheduler extender")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve filter, prioritize, preempt and bind to kube-scheduler.
    Serve(Box<ServeArgs>),
    /// Print the node labels (GPU feature discovery keys) for a node daemon inventory (JSON from
    /// `sovra-node-daemon inventory`).
    Labels {
        /// The inventory file.
        #[arg(long)]
        inventory: PathBuf,
    },
    /// Publish the labels for a node daemon inventory on a Node (needs a kubeconfig or in-cluster credentials).
    LabelNode {
        /// The Node's name.
        #[arg(long, env = "NODE_NAME", hide_env_values = true)]
        node: String,
        /// The inventory file.
        #[arg(long)]
        inventory: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The Sovra cluster file (required): zones, pools and residency classes, and nodes. With --kube the file is
    /// still required (zones, pools and classes come only from it), but its `nodes:` list may be empty: nodes then
    /// come from the Kubernetes API.
    #[arg(long, short, required = true)]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8888")]
    listen: SocketAddr,
    /// Path prefix of the verbs (the path part of kube-scheduler's `urlPrefix`).
    #[arg(long, default_value = "")]
    prefix: String,
    /// TLS certificate chain (PEM); serve HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mTLS with kube-scheduler's `tlsConfig`.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Watch Nodes and Pods and bind through the Kubernetes API (kubeconfig or in-cluster credentials). Not ready
    /// (`/readyz` 503, every verb refused) until both watches have listed. Without it, the nodes are the config's
    /// and bind is refused, unless --dry-run-bind.
    #[arg(long)]
    kube: bool,
    /// Without --kube: let bind record the placement in Sovra's cache and bind nothing (benchmarks, dry runs).
    /// Never for a real kube-scheduler's bindVerb: it would believe pods bound that are not.
    #[arg(long, conflicts_with = "kube")]
    dry_run_bind: bool,
    /// Also serve `GET /healthz` and `GET /readyz` over plain HTTP on this address (kubelet probes carry no client
    /// certificate, so they cannot pass the main port's mTLS).
    #[arg(long)]
    probe_listen: Option<SocketAddr>,
    /// Scoring policy (default: the config's `scheduling.policy`, else `best-fit,topology`).
    #[arg(long)]
    policy: Option<PolicySpec>,
    /// Seed of the tie-break node order (the scheduler service's and `sovra place`'s default too).
    #[arg(long, default_value_t = sovra_placement::DEFAULT_SEED)]
    seed: u64,
    /// Largest request body, MiB.
    #[arg(long, default_value_t = 64)]
    max_body_mib: usize,
    /// How long a gang's reserved devices wait for its members' binds before they are released (the gang then
    /// starts over): `ms`, `s` or `m`.
    #[arg(long, default_value = "60s", value_parser = leader::parse_duration)]
    gang_reservation_timeout: Duration,
    /// Run as one of several replicas: elect a leader through a coordination.k8s.io/v1 Lease; only the leader
    /// binds, every replica answers filter, prioritize and preempt. Needs --kube.
    #[arg(long, requires = "kube")]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "sovra-extender")]
    lease_name: String,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", hide_env_values = true, default_value = "sovra-system")]
    lease_namespace: String,
    /// This replica's identity in the Lease (default: POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME", hide_env_values = true)]
    lease_identity: Option<String>,
    /// How long a lease stays valid after its last renewal (whole seconds).
    #[arg(long, default_value = "15s", value_parser = leader::parse_duration)]
    lease_duration: Duration,
    /// How long the leader keeps leading (and binding) without a successful renewal; less than --lease-duration.
    #[arg(long, default_value = "10s", value_parser = leader::parse_duration)]
    renew_deadline: Duration,
    /// How often to try to acquire or renew the lease; less than --renew-deadline.
    #[arg(long, default_value = "2s", value_parser = leader::parse_duration)]
    retry_period: Duration,
}

/// SIGINT, or SIGTERM (what Kubernetes sends a pod it stops).
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the server cleanly"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// This host's name (the identity of a replica without POD_NAME).
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    // `sovra-extender labels … | head` closing the pipe early ends quietly (see sovra_cli_util for why not SIGPIPE).
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn read_inventory(path: &PathBuf) -> Result<k8s::Inventory, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--inventory {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!("--inventory {}: {e}; give the JSON that `sovra-node-daemon inventory` prints", path.display())
    })
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Labels { inventory } => {
            let (labels, annotations) = k8s::inventory_labels(&read_inventory(&inventory)?);
            let out = serde_json::json!({"labels": labels, "annotations": annotations});
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
        Command::LabelNode { node, inventory } => {
            let (labels, annotations) = k8s::inventory_labels(&read_inventory(&inventory)?);
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("cannot reach the Kubernetes API (kubeconfig or in-cluster): {e}"))?;
            k8s::publish_labels(&client, &node, &labels, &annotations).await?;
            eprintln!("labelled node {node} with {} label(s)", labels.len());
            Ok(())
        }
        Command::Serve(a) => serve(*a).await,
    }
}

async fn serve(a: ServeArgs) -> Result<(), String> {
    let config = ClusterConfig::load(&a.config).map_err(|e| e.to_string())?;
    let policy = a.policy.clone().or_else(|| config.scheduling.policy.clone()).unwrap_or_default();
    if a.gang_reservation_timeout.is_zero() {
        return Err("--gang-reservation-timeout is 0; give a positive duration such as 60s".into());
    }
    let cache = Arc::new(Cache::new(config).map_err(|e| e.to_string())?);
    let mut elector = None;
    let binder = if a.kube {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("--kube: cannot reach the Kubernetes API (kubeconfig or in-cluster): {e}"))?;
        if a.leader_elect {
            let settings = leader::LeaseSettings {
                namespace: a.lease_namespace.clone(),
                name: a.lease_name.clone(),
                identity: a.lease_identity.clone().filter(|i| !i.trim().is_empty()).unwrap_or_else(host_name),
                lease_duration: a.lease_duration,
                renew_deadline: a.renew_deadline,
                retry_period: a.retry_period,
            };
            elector = Some(leader::Elector::new(client.clone(), settings).map_err(|e| e.to_string())?);
        }
        tokio::spawn(k8s::watch(client.clone(), cache.clone()));
        Binder::Kube(client)
    } else if a.dry_run_bind {
        tracing::warn!(
            "--dry-run-bind: bind records placements in the cache and binds nothing; never for a real kube-scheduler"
        );
        Binder::DryRun
    } else {
        tracing::warn!("without --kube, nodes come from the config only and every bind is refused");
        Binder::NoClient
    };
    let ext =
        Extender::new(cache, policy.clone(), a.seed, binder).with_gang_reservation_timeout(a.gang_reservation_timeout);
    let (ext, elector) = match elector {
        None => (ext, None),
        Some((elector, leadership)) => {
            tracing::info!(identity = %leadership.identity(), lease = %format!("{}/{}", a.lease_namespace, a.lease_name),
                "leader election on: only the leader binds");
            let elector = Arc::new(elector);
            let task = tokio::spawn({
                let elector = elector.clone();
                async move { elector.run().await }
            });
            (ext.with_leadership(leadership), Some((elector, task)))
        }
    };
    let ext = Arc::new(ext);
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(server::tls_config(c, k, a.tls_client_ca.as_deref())?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(a.listen).await.map_err(|e| format!("--listen {}: {e}", a.listen))?;
    let _probes = match a.probe_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("--probe-listen {addr}: {e}"))?;
            Some(server::serve(l, server::probe_router(ext.clone()), None).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let app = server::router(ext, &a.prefix, a.max_body_mib.saturating_mul(1 << 20));
    let running = server::serve(listener, app, tls.clone()).map_err(|e| e.to_string())?;
    tracing::info!(
        addr = %running.local_addr,
        tls = tls.is_some(),
        mtls = a.tls_client_ca.is_some(),
        %policy,
        "sovra-extender listening"
    );
    tokio::select! {
        _ = running.wait() => Ok(()),
        _ = shutdown() => {
            tracing::info!("interrupted; stopping");
            if let Some((elector, task)) = elector {
                // Stop renewing, then hand the lease over at once instead of after its duration.
                task.abort();
                if let Err(e) = elector.release().await {
                    tracing::warn!(error = %e, "could not release the lease; another replica takes over when it expires");
                }
            }
            Ok(())
        }
    }
}
