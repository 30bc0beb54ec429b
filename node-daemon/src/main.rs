//! `sovra-node-daemon`: reads this node's GPUs (NVML, or the fake backend) and reports them.
//!
//! - `inventory`: print the inventory once (JSON);
//! - `watch`: print the inventory, health changes and heartbeats as JSON lines;
//! - `run`: report to the scheduler over mutual TLS (see `sovra_node_daemon::report`), with optional Prometheus
//!   `/metrics` on `--metrics-listen`.
//!
//! Exit codes: 0 ok (also when NVML is unavailable: the report says so), 2 bad input (config, fixture, flags,
//! certificates).

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use sovra_node_daemon::fake::FakeBackend;
use sovra_node_daemon::nvml::apply_events;
use sovra_node_daemon::report::{DaemonMetrics, METRICS_CONTENT_TYPE, Reporter, sources};
use sovra_node_daemon::run::RunnerConfig;
use sovra_node_daemon::tls_check;
use sovra_node_daemon::{HealthPolicy, Inventory};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sovra-node-daemon", version, about = "Report this node's GPU inventory and health.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    opts: Opts,
}

#[derive(clap::Args, Clone)]
struct Opts {
    /// Config file (YAML): backend, fixture, nvml_lib, ignore_xids, report_interval_ms. Flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// GPU backend.
    #[arg(long, global = true, value_enum)]
    backend: Option<Backend>,
    /// Fixture file of the fake backend.
    #[arg(long, global = true)]
    fixture: Option<PathBuf>,
    /// NVML library to load instead of the system's libnvidia-ml.so.1.
    #[arg(long, global = true)]
    nvml_lib: Option<PathBuf>,
    /// XIDs that leave a GPU healthy, comma-separated (default: 13,31,43,45,68,109).
    #[arg(long, global = true, value_delimiter = ',')]
    ignore_xid: Option<Vec<u64>>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    /// NVIDIA's NVML.
    Nvml,
    /// The fake backend (a fixture file; for machines without GPUs).
    Fake,
}

#[derive(Subcommand)]
enum Command {
    /// Print the inventory once, as JSON.
    Inventory,
    /// Print the inventory, then health changes and heartbeats as JSON lines.
    Watch {
        /// Heartbeat interval in milliseconds (default: the config's report_interval_ms, else 1000).
        #[arg(long)]
        interval_ms: Option<u64>,
        /// Stop after this many seconds, 0 to 31536000 (default: run until killed).
        #[arg(long, value_parser = seconds)]
        duration_s: Option<f64>,
    },
    /// Report to the scheduler until killed: inventory on connect, health changes, heartbeats; with a state
    /// directory, also run the replicas the scheduler assigns to this node.
    Run(Box<RunArgs>),
    /// Supervise one replica run (started by `run`; not for people).
    #[command(hide = true)]
    Shim {
        /// The replica's directory.
        dir: PathBuf,
    },
}

/// `--duration-s`: a finite number of seconds from 0 to a year (a negative or NaN one used to panic).
fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && (0.0..=31_536_000.0).contains(&v)) {
        return Err(format!("{s} is out of range: use 0 to 31536000 seconds"));
    }
    Ok(v)
}

/// Where and as whom to report (flags override the config file's `server`, `node`, `tls_dir`, … keys).
#[derive(clap::Args, Clone, Default)]
struct RunArgs {
    /// Scheduler address, e.g. `https://scheduler:7070`.
    #[arg(long)]
    server: Option<String>,
    /// This node's name, as in the scheduler's cluster file and the certificate's CN.
    #[arg(long)]
    node: Option<String>,
    /// TLS directory as `sovra-scheduler certs` writes it: uses `ca.pem` and `nodes/<node>.pem`, `-key.pem`.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// The scheduler's CA certificate (instead of --tls-dir).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// This node's client certificate (instead of --tls-dir).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Its private key (instead of --tls-dir).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The zone this node should be in: the scheduler refuses the registration if its enrolment differs.
    #[arg(long)]
    claim_zone: Option<String>,
    /// The pool this node should be in (cross-check, as --claim-zone).
    #[arg(long)]
    claim_pool: Option<String>,
    /// Serve Prometheus `/metrics` on this address.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Run the jobs the scheduler assigns here, keeping their state and output in this directory (without it the
    /// daemon only reports).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The user jobs run as when they name none (a daemon running as root; default `nobody`).
    #[arg(long)]
    default_user: Option<String>,
    /// Let jobs run as root.
    #[arg(long)]
    allow_root: bool,
    /// The cgroup v2 directory replicas get their cgroups under (default /sys/fs/cgroup/sovra).
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// Rotate a replica's output file at this many bytes (default 16 MiB).
    #[arg(long)]
    log_max_bytes: Option<u64>,
    /// Rotated output files kept per replica (default 3).
    #[arg(long)]
    log_keep: Option<u32>,
    /// The address gang peers reach this node at (MASTER_ADDR); default: what the scheduler sees.
    #[arg(long)]
    address: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    backend: Option<Backend>,
    fixture: Option<PathBuf>,
    nvml_lib: Option<PathBuf>,
    ignore_xids: Option<Vec<u64>>,
    report_interval_ms: Option<u64>,
    server: Option<String>,
    node: Option<String>,
    tls_dir: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    claim_zone: Option<String>,
    claim_pool: Option<String>,
    metrics_listen: Option<String>,
    state_dir: Option<PathBuf>,
    default_user: Option<String>,
    allow_root: Option<bool>,
    cgroup_root: Option<PathBuf>,
    log_max_bytes: Option<u64>,
    log_keep: Option<u32>,
    address: Option<String>,
}

/// Settings after merging the config file and the flags.
struct Settings {
    backend: Backend,
    fixture: Option<PathBuf>,
    nvml_lib: Option<PathBuf>,
    policy: HealthPolicy,
    interval_ms: u64,
    /// The config file's reporting keys.
    run: RunArgs,
}

fn settings(opts: &Opts) -> Result<Settings, String> {
    let cfg: Config = match &opts.config {
        Some(p) => {
            let file = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| format!("{file}: cannot read the file: {e}"))?;
            sovra_domain::parse_yaml_file(&file, &text).map_err(|e| e.to_string())?
        }
        None => Config::default(),
    };
    let backend = opts.backend.or(cfg.backend).unwrap_or(Backend::Nvml);
    let fixture = opts.fixture.clone().or(cfg.fixture);
    if backend == Backend::Fake && fixture.is_none() {
        return Err("--backend fake needs --fixture FILE (or fixture: in the config)".into());
    }
    let interval_ms = cfg.report_interval_ms.unwrap_or(1000);
    if interval_ms == 0 {
        return Err("report_interval_ms: must be at least 1".into());
    }
    Ok(Settings {
        backend,
        fixture,
        nvml_lib: opts.nvml_lib.clone().or(cfg.nvml_lib),
        policy: match opts.ignore_xid.clone().or(cfg.ignore_xids) {
            Some(list) => HealthPolicy::ignoring(list),
            None => HealthPolicy::default(),
        },
        interval_ms,
        run: RunArgs {
            server: cfg.server,
            node: cfg.node,
            tls_dir: cfg.tls_dir,
            ca: cfg.ca,
            cert: cfg.cert,
            key: cfg.key,
            claim_zone: cfg.claim_zone,
            claim_pool: cfg.claim_pool,
            metrics_listen: cfg.metrics_listen,
            state_dir: cfg.state_dir,
            default_user: cfg.default_user,
            allow_root: cfg.allow_root.unwrap_or(false),
            cgroup_root: cfg.cgroup_root,
            log_max_bytes: cfg.log_max_bytes,
            log_keep: cfg.log_keep,
            address: cfg.address,
        },
    })
}

/// The job runner's settings (flags over the config file), when the daemon runs jobs (`state_dir`).
fn runner_config(node: &str, flags: &RunArgs, file: &RunArgs) -> Result<Option<RunnerConfig>, String> {
    let Some(state_dir) = flags.state_dir.clone().or(file.state_dir.clone()) else { return Ok(None) };
    let shim = std::env::current_exe().map_err(|e| format!("cannot find this program to start shims: {e}"))?;
    let log_max_bytes = flags.log_max_bytes.or(file.log_max_bytes).unwrap_or(16 << 20);
    if log_max_bytes < 4096 {
        return Err(format!("log_max_bytes: {log_max_bytes} is too small; use at least 4096"));
    }
    Ok(Some(RunnerConfig {
        node: node.to_string(),
        state_dir,
        default_user: flags.default_user.clone().or(file.default_user.clone()).unwrap_or_else(|| "nobody".into()),
        allow_root: flags.allow_root || file.allow_root,
        log_max_bytes,
        log_keep: flags.log_keep.or(file.log_keep).unwrap_or(3).min(64),
        cgroup_root: flags
            .cgroup_root
            .clone()
            .or(file.cgroup_root.clone())
            .unwrap_or_else(|| "/sys/fs/cgroup/sovra".into()),
        shim,
        tick: Duration::from_millis(100),
    }))
}

/// The reporter from the flags over the config file; every missing or unreadable piece is named.
fn reporter(flags: RunArgs, file: RunArgs) -> Result<(Reporter, Option<String>, Option<RunnerConfig>), String> {
    let address = flags.address.clone().or(file.address.clone()).unwrap_or_default();
    let server =
        flags.server.clone().or(file.server.clone()).ok_or("run: --server (or server: in the config) is required")?;
    let node = flags.node.clone().or(file.node.clone()).ok_or("run: --node (or node: in the config) is required")?;
    let runner = runner_config(&node, &flags, &file)?;
    let tls_dir = flags.tls_dir.or(file.tls_dir);
    let pick = |flag: Option<PathBuf>, key: Option<PathBuf>, name: &str, in_dir: Option<PathBuf>| {
        flag.or(key)
            .or(in_dir)
            .ok_or_else(|| format!("run: --{name} (or --tls-dir) is required: node reports use mutual TLS"))
    };
    let ca = pick(flags.ca, file.ca, "ca", tls_dir.as_ref().map(|d| d.join("ca.pem")))?;
    let cert =
        pick(flags.cert, file.cert, "cert", tls_dir.as_ref().map(|d| d.join("nodes").join(format!("{node}.pem"))))?;
    let key =
        pick(flags.key, file.key, "key", tls_dir.as_ref().map(|d| d.join("nodes").join(format!("{node}-key.pem"))))?;
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: cannot read the file: {e}", p.display()));
    let (ca_pem, cert_pem, key_pem) = (read(&ca)?, read(&cert)?, read(&key)?);
    // The files are checked here, where they can be named: a bad one is a configuration error (exit 2), not a
    // connection to retry forever.
    let name = |p: &PathBuf| p.display().to_string();
    tls_check::check_ca(&ca_pem, &name(&ca)).map_err(|e| e.to_string())?;
    tls_check::check_identity(&cert_pem, &key_pem, &name(&cert), &name(&key)).map_err(|e| e.to_string())?;
    let r = Reporter {
        server,
        node,
        ca_pem,
        cert_pem,
        key_pem,
        claim_zone: flags.claim_zone.or(file.claim_zone),
        claim_pool: flags.claim_pool.or(file.claim_pool),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(30),
        runner: None,
        address,
    };
    Ok((r, flags.metrics_listen.or(file.metrics_listen), runner))
}

/// `run`: report until killed.
async fn run_reporter(s: Settings, args: RunArgs) -> Result<(), String> {
    let (mut reporter, metrics_listen, runner) = reporter(args, s.run.clone())?;
    let poll = Duration::from_millis(s.interval_ms);
    let (inventory, updates) = match s.backend {
        Backend::Fake => {
            let fixture = s.fixture.as_ref().expect("checked in settings");
            let fake = FakeBackend::load(fixture)?;
            tracing::warn!(fixture = %fixture.display(), "using the FAKE GPU backend: these GPUs do not exist");
            sources::fake(fake, s.policy.clone(), poll)
        }
        Backend::Nvml => sources::nvml(s.nvml_lib.map(|p| p.into_os_string()), s.policy.clone(), poll)?,
    };
    let updates = match runner {
        None => updates,
        // GPU updates and replica statuses go to the scheduler on one channel.
        Some(cfg) => sovra_node_daemon::run::attach(&mut reporter, cfg, updates)?,
    };
    let metrics = Arc::new(DaemonMetrics::default());
    if let Some(addr) = metrics_listen {
        let l = tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
        let m = metrics.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = m.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], m.render()) }
            }),
        );
        tracing::info!(addr = %addr, "metrics on /metrics");
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
    }
    tokio::select! {
        r = reporter.run(inventory, updates, metrics) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

fn emit(kind: &str, value: serde_json::Value) {
    let mut doc = serde_json::json!({"type": kind});
    if let (Some(d), serde_json::Value::Object(v)) = (doc.as_object_mut(), value) {
        d.extend(v);
    }
    println!("{doc}");
}

fn run(cli: Cli) -> Result<(), String> {
    if let Command::Shim { dir } = &cli.command {
        std::process::exit(sovra_node_daemon::run::shim::main(dir));
    }
    let s = settings(&cli.opts)?;
    let (interval_ms, duration) = match cli.command {
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            return rt.block_on(run_reporter(s, *args));
        }
        Command::Inventory | Command::Shim { .. } => (None, None),
        Command::Watch { interval_ms, duration_s } => {
            (Some(interval_ms.unwrap_or(s.interval_ms).max(1)), duration_s.map(Duration::from_secs_f64))
        }
    };
    let started = Instant::now();
    let expired = |d: Option<Duration>| d.is_some_and(|d| started.elapsed() >= d);
    match s.backend {
        Backend::Fake => {
            let fixture = s.fixture.as_ref().expect("checked in settings");
            let mut fake = FakeBackend::load(fixture)?;
            tracing::warn!(fixture = %fixture.display(), "using the FAKE GPU backend: these GPUs do not exist");
            let mut inv = fake.inventory();
            let Some(interval) = interval_ms else {
                println!("{}", serde_json::to_string_pretty(&inv).expect("inventory serialises"));
                return Ok(());
            };
            emit("inventory", serde_json::to_value(&inv).expect("inventory serialises"));
            while !expired(duration) {
                std::thread::sleep(Duration::from_millis(interval));
                let events = fake.poll(started.elapsed().as_secs_f64());
                report_events(&mut inv, &events, &s.policy);
                emit(
                    "heartbeat",
                    serde_json::json!({"backend": inv.backend, "elapsed_s": started.elapsed().as_secs_f64()}),
                );
            }
        }
        Backend::Nvml => {
            let nvml = sovra_node_daemon::nvml::open(s.nvml_lib.as_deref().map(|p| p.as_os_str()));
            if let Err(reason) = &nvml {
                tracing::warn!(%reason, "NVML unavailable: reporting no GPUs");
            }
            let mut inv: Inventory = sovra_node_daemon::nvml::inventory(nvml.as_ref());
            let Some(interval) = interval_ms else {
                println!("{}", serde_json::to_string_pretty(&inv).expect("inventory serialises"));
                return Ok(());
            };
            emit("inventory", serde_json::to_value(&inv).expect("inventory serialises"));
            let mut watch = sovra_node_daemon::nvml::watch_events(nvml.as_ref(), &inv);
            while !expired(duration) {
                let events = match watch.as_mut() {
                    Some(w) => w.poll(interval.min(u64::from(u32::MAX)) as u32),
                    None => {
                        std::thread::sleep(Duration::from_millis(interval));
                        vec![]
                    }
                };
                report_events(&mut inv, &events, &s.policy);
                emit(
                    "heartbeat",
                    serde_json::json!({"backend": inv.backend, "elapsed_s": started.elapsed().as_secs_f64()}),
                );
            }
        }
    }
    Ok(())
}

fn report_events(inv: &mut Inventory, events: &[sovra_node_daemon::XidEvent], policy: &HealthPolicy) {
    for e in events {
        tracing::info!(gpu = e.gpu, xid = e.xid, "XID event");
    }
    for e in apply_events(inv, events, policy) {
        let gpu = inv.gpus.iter().find(|g| g.index == e.gpu).expect("apply_events only reports known GPUs");
        emit("health", serde_json::json!({"gpu": e.gpu, "uuid": gpu.uuid, "xid": e.xid, "health": gpu.health}));
    }
}

fn main() -> ExitCode {
    // `watch … | head` closing the pipe early ends quietly (see sovra_cli_util for why not SIGPIPE).
    sovra_cli_util::exit_quietly_on_broken_pipe();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
