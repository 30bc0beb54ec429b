//! `sovra-device-plugin`: the kubelet device plugin for `sovra.io/gpu-milli` (see docs/kubernetes.md, "GPU shares
//! on the node").

use clap::Parser;
use sovra_device_plugin::kube_pods::KubePods;
use sovra_device_plugin::kubelet::{self, DEFAULT_SOCKET_DIR, Options};
use sovra_device_plugin::plugin::{Cdi, Plugin};
use sovra_device_plugin::{devices, inventory};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sovra-device-plugin",
    version,
    about = "Kubelet device plugin for sovra.io/gpu-milli: advertises GPU shares, hands each container the GPU Sovra chose"
)]
struct Cli {
    /// The node daemon inventory (the JSON `sovra-node-daemon inventory` prints), read again every
    /// --inventory-poll-ms.
    #[arg(long)]
    inventory: PathBuf,
    /// This node's name (its pods are listed with fieldSelector spec.nodeName=<node>).
    #[arg(long, env = "NODE_NAME", hide_env_values = true)]
    node: String,
    /// The kubelet's device-plugins directory (holds kubelet.sock).
    #[arg(long, default_value = DEFAULT_SOCKET_DIR)]
    socket_dir: PathBuf,
    /// The plugin's socket file name in --socket-dir.
    #[arg(long, default_value = "sovra-gpu-milli.sock")]
    socket_name: String,
    /// Also name the GPU as a CDI device: `uuid` (nvidia.com/gpu=<UUID>) or `index` (nvidia.com/gpu=<index>).
    #[arg(long, value_enum, default_value_t = Cdi::Off)]
    cdi: Cdi,
    /// How often to check for a kubelet restart, milliseconds (50..=60000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    watch_ms: u64,
    /// How often to read the inventory again, milliseconds (50..=600000).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    inventory_poll_ms: u64,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
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

async fn run(cli: Cli) -> Result<(), String> {
    if cli.node.trim().is_empty() {
        return Err("--node (or NODE_NAME) is empty; give this node's name (downward API spec.nodeName)".into());
    }
    let inv = inventory::load(&cli.inventory).map_err(|e| e.to_string())?;
    kubelet::check_dir(&cli.socket_dir).map_err(|e| e.to_string())?;
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("cannot reach the Kubernetes API (kubeconfig or in-cluster service account), needed to find the pod at Allocate: {e}")
    })?;
    let plugin = Plugin::new(&cli.node, KubePods::new(client, &cli.node), inv, cli.cdi);
    let list = plugin.devices();
    let healthy = list.iter().filter(|d| d.health == devices::HEALTHY).count();
    tracing::info!(node = %cli.node, devices = list.len(), healthy, "advertising sovra.io/gpu-milli (1 device = 1 milli-GPU)");
    let opts = Options {
        socket_dir: cli.socket_dir,
        socket_name: cli.socket_name,
        inventory: cli.inventory,
        watch: Duration::from_millis(cli.watch_ms),
        inventory_poll: Duration::from_millis(cli.inventory_poll_ms),
    };
    let shutdown = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        tracing::info!("stopping");
    };
    kubelet::run(plugin, opts, shutdown).await.map_err(|e| e.to_string())
}
