//! `sovra dev`: the all-in-one local mode, like `nomad agent -dev`.
//!
//! One process runs the scheduler service (state in a sled directory, mutual TLS with certificates it generates)
//! and one node daemon per node of the cluster — the daemon's own reporting code over the real gRPC path, with the
//! **fake GPU backend**: each node's GPUs are written as a fixture file (from the cluster file's description of
//! the node) and reported as `fake (fixture …)`. A GPU the cluster file marks unhealthy gets a scripted XID 79 two
//! seconds after start, so the health path runs too. Nodes are NotReady until their daemon registers.
//!
//! `sovra dev --tour` runs a scripted walk through it (placement by residency class, a refusal at submit, a
//! pending job's explanation, a GPU failing, jobs that run — output, a cancel that needs SIGKILL, a preemption
//! (`dev_run`) — a daemon dying and its node leaving the pool within two heartbeat intervals, queues, metrics) and
//! exits; it is the README's first command. The daemons run the jobs they are given as real processes (under `<data>/runs`).

use crate::remote::{self, Action, Remote};
use crate::{EXAMPLE_CLUSTER, Failure, Output};
use sovra_api::v1::cluster_client::ClusterClient;
use sovra_api::v1::jobs_client::JobsClient;
use sovra_api::v1::{GetRequest, JobInfo, NodesRequest};
use sovra_domain::{ClusterConfig, Node, Purpose, satisfies};
use sovra_node_daemon::HealthPolicy;
use sovra_node_daemon::fake::FakeBackend;
use sovra_node_daemon::report::{DaemonMetrics, Reporter, sources};
use sovra_scheduler::service::{Options, Scheduler, serve_metrics, serve_with};
use sovra_scheduler::store::SledStore;
use sovra_scheduler::tls::{TlsDir, generate};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `sovra dev` options.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Cluster file. Default: the built-in example (examples/cluster.yaml).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Scheduler API address. Default: 127.0.0.1:7070 (a free port with --tour).
    #[arg(long)]
    listen: Option<String>,
    /// `/metrics` and `/healthz` address. Default: 127.0.0.1:9464 (a free port with --tour).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Directory for certificates, state and the fake GPU fixtures. Default: a new temporary directory. Given an
    /// existing one, the state in it is restored.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Heartbeat interval, milliseconds (100 to 60000).
    #[arg(long, default_value_t = 1000, value_parser = sovra_scheduler::service::parse_heartbeat_ms)]
    heartbeat_ms: u64,
    /// Run the scripted tour, then exit.
    #[arg(long)]
    tour: bool,
    /// The promotion service's address. Default: 127.0.0.1:7443 (a free port with --tour).
    #[arg(long)]
    promotion_listen: Option<String>,
    /// The web console's address (`sovra console`; log in with the token). Default: 127.0.0.1:7080 (a free port
    /// with --tour).
    #[arg(long)]
    console_listen: Option<String>,
    /// Token clients must present. Default: a random one (printed).
    #[arg(long, env = "SOVRA_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn fail(code: u8) -> impl Fn(String) -> Failure {
    move |message| Failure { code, message }
}

/// A fake-backend fixture for a node as the cluster file describes it: the GPUs of [`FakeBackend::of_node`], and
/// an XID 79 two seconds in for each GPU the file marks unhealthy.
fn fixture(node: &Node) -> serde_json::Value {
    let gpus = FakeBackend::of_node(node, "").inventory().gpus;
    let events: Vec<serde_json::Value> = node
        .gpus
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.health.is_healthy())
        .map(|(i, _)| serde_json::json!({"after_s": 2.0, "gpu": i, "xid": 79}))
        .collect();
    serde_json::json!({"driver_version": "fake", "cuda_driver_version": "12.4", "gpus": gpus, "events": events})
}

/// Everything `sovra dev` started.
pub(crate) struct Local {
    pub(crate) cluster: ClusterConfig,
    /// The cluster file `sovra reload` re-reads.
    pub(crate) config_path: PathBuf,
    pub(crate) remote: Remote,
    pub(crate) daemons: BTreeMap<String, tokio::task::JoinHandle<()>>,
    pub(crate) metrics_addr: std::net::SocketAddr,
    pub(crate) heartbeat: Duration,
    pub(crate) data: PathBuf,
}

/// The data directory and the cluster file of a run (the built-in example is written to the data directory once
/// when no --config is given: an edited copy is kept, so that `sovra reload` has a file to re-read).
fn locate(args: &DevArgs) -> Result<(PathBuf, PathBuf), Failure> {
    let bad = fail(2);
    let data = match &args.data {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("sovra-dev-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data).map_err(|e| bad(format!("--data {}: {e}", data.display())))?;
    let config_path = match &args.config {
        Some(p) => p.clone(),
        None => {
            let p = data.join("cluster.yaml");
            if !p.exists() {
                std::fs::write(&p, EXAMPLE_CLUSTER).map_err(|e| bad(format!("{}: cannot write: {e}", p.display())))?;
            }
            p
        }
    };
    Ok((data, config_path))
}

async fn start(
    args: &DevArgs,
    data: PathBuf,
    config_path: PathBuf,
    token: String,
    models: Option<sovra_scheduler::service::models::ModelSource>,
) -> Result<Local, Failure> {
    let bad = fail(2);
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| bad(format!("{}: cannot read the file: {e}", config_path.display())))?;
    let cluster =
        ClusterConfig::from_yaml(&config_path.display().to_string(), &text).map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let tls = generate(&data.join("tls"), &["localhost".into(), "127.0.0.1".into()], &names).map_err(&bad)?;
    let state = data.join("state");
    // `sovra dev` has no `--recover` of its own: name the scheduler command that recovers this directory.
    let store = SledStore::open(&state).map_err(|e| {
        bad(format!(
            "{e}\n(under `sovra dev` the state is {}: recover it with `sovra-scheduler serve --config {} --data {} \
             --recover`, or start `sovra dev` with another --data)",
            state.display(),
            config_path.display(),
            state.display()
        ))
    })?;
    let heartbeat = Duration::from_millis(args.heartbeat_ms);
    let receipt_key = sovra_scheduler::service::receipts::load_key(None, Some(&state)).map_err(&bad)?;
    let opts = Options {
        heartbeat,
        require_daemons: true,
        config_path: Some(config_path.clone()),
        receipt_key,
        models,
        ..Options::default()
    };
    let policy = cluster.scheduling.policy.clone().unwrap_or_default();
    let scheduler = Scheduler::with_options(cluster.clone(), policy, 42, Some(Box::new(store)), opts).map_err(&bad)?;

    let default_addr = |port: u16| if args.tour { "127.0.0.1:0".to_string() } else { format!("127.0.0.1:{port}") };
    let listen = args.listen.clone().unwrap_or_else(|| default_addr(7070));
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| bad(format!("--listen {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| fail(1)(e.to_string()))?;
    let mlisten = args.metrics_listen.clone().unwrap_or_else(|| default_addr(9464));
    let mlistener =
        tokio::net::TcpListener::bind(&mlisten).await.map_err(|e| bad(format!("--metrics-listen {mlisten}: {e}")))?;
    let metrics_addr = mlistener.local_addr().map_err(|e| fail(1)(e.to_string()))?;
    let server_tls = tls.server_config().map_err(&bad)?;
    let (s1, s2, t) = (scheduler.clone(), scheduler.clone(), token.clone());
    tokio::spawn(async move {
        if let Err(e) = serve_with(listener, s1, t, Some(server_tls), std::future::pending()).await {
            eprintln!("error: {e}");
        }
    });
    tokio::spawn(async move {
        let _ = serve_metrics(mlistener, s2, std::future::pending()).await;
    });

    let server = format!("https://127.0.0.1:{}", addr.port());
    let mut daemons = BTreeMap::new();
    for node in &cluster.nodes {
        let path = data.join("fixtures").join(format!("{}.json", node.name));
        write_fixture(&path, node).map_err(&bad)?;
        let fake = FakeBackend::load(&path).map_err(&bad)?;
        let (inventory, updates) = sources::fake(fake, HealthPolicy::default(), Duration::from_millis(100));
        let (cert, key) = TlsDir(tls.0.clone()).node(&node.name);
        let read = |p: &Path| std::fs::read(p).map_err(|e| bad(format!("{}: {e}", p.display())));
        let mut reporter = Reporter {
            server: server.clone(),
            node: node.name.clone(),
            ca_pem: read(&tls.ca())?,
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
            claim_zone: None,
            claim_pool: None,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            runner: None,
            address: "127.0.0.1".into(),
        };
        // Each daemon runs the jobs it is given (real processes, with the fake GPUs' UUIDs as their devices).
        let updates =
            sovra_node_daemon::run::attach(&mut reporter, runner_config(&data, &node.name)?, updates).map_err(&bad)?;
        let handle = tokio::spawn(async move {
            let _ = reporter.run(inventory, updates, Arc::new(DaemonMetrics::default())).await;
        });
        daemons.insert(node.name.clone(), handle);
    }
    let remote = Remote { server, token, ca: Some(tls.ca()) };
    // Wait until every daemon has registered.
    let started = Instant::now();
    let channel = remote::connect(&remote).await?;
    loop {
        let nodes = list_nodes(&channel, &remote).await?;
        if nodes.iter().all(|n| n.connected && n.ready) {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let missing: Vec<&str> = nodes.iter().filter(|n| !n.connected).map(|n| n.name.as_str()).collect();
            return Err(fail(1)(format!("node daemons did not register within 60 s: {missing:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Local { cluster, config_path, remote, daemons, metrics_addr, heartbeat, data })
}

/// The job runner of `node`'s in-process daemon: runs under `<data>/runs/<node>`, shims are this program
/// (`sovra shim`), jobs run as the user `sovra dev` runs as (as `nobody` when that is root).
fn runner_config(data: &Path, node: &str) -> Result<sovra_node_daemon::run::RunnerConfig, Failure> {
    let shim = std::env::current_exe().map_err(|e| fail(1)(format!("cannot find this program to start jobs: {e}")))?;
    // Jobs run as `nobody` under root: let them through to their work folders (traverse only).
    let runs = data.join("runs");
    std::fs::create_dir_all(&runs).map_err(|e| fail(2)(format!("{}: {e}", runs.display())))?;
    for d in [data, runs.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d).map(|m| m.permissions().mode()).unwrap_or(0o700);
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o111))
            .map_err(|e| fail(2)(format!("{}: {e}", d.display())))?;
    }
    Ok(sovra_node_daemon::run::RunnerConfig {
        node: node.to_string(),
        state_dir: data.join("runs").join(node),
        default_user: "nobody".into(),
        allow_root: false,
        log_max_bytes: 1 << 20,
        log_keep: 2,
        cgroup_root: "/sys/fs/cgroup/sovra-dev".into(),
        shim,
        tick: Duration::from_millis(100),
    })
}

fn write_fixture(path: &Path, node: &Node) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let text = serde_json::to_string_pretty(&fixture(node)).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `sovra dev`.
pub fn run(args: DevArgs) -> Result<u8, Failure> {
    let (data, config_path) = locate(&args)?;
    let token = match &args.token {
        Some(t) if !t.is_empty() => t.clone(),
        _ => sovra_scheduler::service::random_token().map_err(fail(1))?,
    };
    // Built here, outside the runtime, and dropped after it (see src/dev_promotion.rs).
    let promotion = crate::dev_promotion::prepare(&data, &config_path, &token).map_err(fail(2))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(1)(format!("cannot start the runtime: {e}")))?;
    let promo = &promotion;
    let code = rt.block_on(async move {
        let plisten = args
            .promotion_listen
            .clone()
            .unwrap_or_else(|| if args.tour { "127.0.0.1:0".to_string() } else { "127.0.0.1:7443".to_string() });
        let plistener = tokio::net::TcpListener::bind(&plisten)
            .await
            .map_err(|e| fail(2)(format!("--promotion-listen {plisten}: {e}")))?;
        let pport = plistener.local_addr().map_err(|e| fail(1)(e.to_string()))?.port();
        // The scheduler asks the dev promotion service where models are (jobs with `model:`).
        let models = sovra_scheduler::service::models::ModelSource {
            endpoint: format!("https://localhost:{pport}"),
            ca: Some(data.join("tls/ca.pem")),
            token: token.clone(),
            poll: Duration::from_secs(1),
            domain: None,
        };
        let local = start(&args, data, config_path, token, Some(models)).await?;
        let (cert, key) = TlsDir(local.data.join("tls")).server();
        promo.spawn(plistener, cert, key);
        let r = &local.remote;
        let ca = r.ca.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        println!(
            "Sovra local mode: the scheduler and {} node daemons with FAKE GPUs, over gRPC + mutual TLS.",
            local.daemons.len()
        );
        println!("  API:      {}   (token {}, CA {ca})", r.server, r.token);
        println!("  metrics:  http://{}/metrics   health: http://{}/healthz", local.metrics_addr, local.metrics_addr);
        println!("  state:    {}", local.data.display());
        println!("  cluster:  {}   (edit it, then `sovra reload`)", local.config_path.display());
        println!(
            "  models:   the promotion service on https://localhost:{pport} (registry, keys and promotion.yaml in {})",
            promo.dir.display()
        );
        let clisten = args
            .console_listen
            .clone()
            .unwrap_or_else(|| if args.tour { "127.0.0.1:0".to_string() } else { "127.0.0.1:7080".to_string() });
        let promo_url = format!("https://localhost:{pport}");
        match crate::console::spawn_dev(&clisten, &r.token, r.clone(), promo_url, data_ca(r)).await {
            Ok(addr) => println!("  console:  http://{addr}/   (read-only; log in with the token, any user name)"),
            Err(f) => println!("  console:  not started: {}", f.message),
        }
        if args.tour {
            let ca = local.remote.ca.clone().unwrap_or_default();
            let n = promo.list(pport, &ca).await?;
            println!("  ✓ the promotion service answers over TLS: {n} model version(s) in its registry");
            return tour(&local).await;
        }
        println!();
        println!("Paste into another shell:");
        println!("  export SOVRA_SERVER={} SOVRA_TOKEN={} SOVRA_CA={ca}", r.server, r.token);
        println!("  sovra submit examples/job.yaml && sovra jobs && sovra nodes && sovra queues");
        println!("  {}", promo.exports(pport, &r.ca.clone().unwrap_or_default()));
        println!(
            "  sovra model list   # sign with {0}/keys/trainer.pem, approve with {0}/keys/alice.pem",
            promo.dir.display()
        );
        println!("Ctrl-C stops everything.");
        let _ = tokio::signal::ctrl_c().await;
        Ok(0)
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(promotion);
    code
}

/// The CA file of the dev services.
fn data_ca(r: &Remote) -> PathBuf {
    r.ca.clone().unwrap_or_default()
}

const EU_JOB: &str = "name: eu-restricted-pretrain\nkind: training\nresidency: eu-restricted\nreplicas: 2\n\
resources: {gpus: 8, cpu_milli: 64000, memory_mib: 524288}\n";
const TOO_BIG: &str = "name: fr-health-giant\nkind: training\nresidency: fr-health\nreplicas: 8\n\
resources: {gpus: 8, gpu_models: [H100-80GB], cpu_milli: 64000, memory_mib: 524288}\n";
const WAITS: &str = "name: fr-health-wide\nkind: training\nresidency: fr-health\nreplicas: 4\n\
resources: {gpus: 8, gpu_models: [H100-80GB], cpu_milli: 64000, memory_mib: 524288}\n";

async fn step(local: &Local, title: &str, action: Action) -> Result<(), Failure> {
    println!("\n── {title}");
    match remote::run_async(local.remote.clone(), action, Output::Text).await {
        Ok(_) => Ok(()),
        Err(f) if f.code == 1 => {
            println!("  refused (exit 1): {}", f.message);
            Ok(())
        }
        Err(f) => Err(f),
    }
}

/// Job `id` as the scheduler shows it.
pub(crate) async fn job(local: &Local, id: u64) -> Result<JobInfo, Failure> {
    let ch = remote::connect(&local.remote).await?;
    let j = JobsClient::new(ch)
        .get(remote::authed(&local.remote, GetRequest { id })?)
        .await
        .map_err(|e| fail(1)(e.message().to_string()))?
        .into_inner();
    Ok(j)
}

/// What the tour asserts. Each check prints a line (✓, or FAILED); any failure makes the tour exit 1, so that a
/// tour which broke its own printed bound does not pass.
#[derive(Default)]
pub(crate) struct Checks {
    failed: Vec<String>,
}

impl Checks {
    /// Prints and records one check.
    pub(crate) fn check(&mut self, ok: bool, what: String) {
        if ok {
            println!("  ✓ {what}");
        } else {
            println!("  ✗ FAILED: {what}");
            self.failed.push(what);
        }
    }

    /// Every replica of a placed job sits in a zone that satisfies its residency class, in a pool of its kind.
    fn check_sovereign(&mut self, cluster: &ClusterConfig, j: &JobInfo, kind: Purpose) {
        let class = cluster.class(&j.residency);
        let ok = j.state == "placed"
            && !j.replicas.is_empty()
            && j.replicas.iter().all(|r| {
                let pool = cluster.pools.iter().find(|p| p.id == r.pool);
                let zone = pool.and_then(|p| cluster.zone(&p.zone));
                matches!((pool, zone, class), (Some(p), Some(z), Some(c)) if p.purpose == kind && satisfies(z, c))
            });
        let zones: Vec<&str> = j.replicas.iter().map(|r| r.zone.as_str()).collect();
        self.check(
            ok,
            format!(
                "job {} placed, only in zones that satisfy class {} (zones: {})",
                j.id,
                j.residency,
                zones.join(", ")
            ),
        );
    }
}

async fn tour(local: &Local) -> Result<u8, Failure> {
    let dir = local.data.join("tour");
    std::fs::create_dir_all(&dir).map_err(|e| fail(1)(e.to_string()))?;
    let file = |name: &str, text: &str| -> Result<PathBuf, Failure> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| fail(1)(format!("{}: {e}", p.display())))?;
        Ok(p)
    };
    let mut checks = Checks::default();
    step(local, "The estate: zones, and which zones satisfy each residency class", Action::Zones).await?;
    step(local, "Pools (GPUs reported by the node daemons)", Action::Pools).await?;
    let job_file = file("job.yaml", include_str!("../examples/job.yaml"))?;
    step(
        local,
        "Submit a French health-data fine-tune (class fr-health: FR, HDS + SecNumCloud) — examples/job.yaml",
        Action::Submit { file: job_file, request_id: Some("tour-1".into()) },
    )
    .await?;
    checks.check_sovereign(&local.cluster, &job(local, 1).await?, Purpose::Training);
    step(
        local,
        "Submit an eu-restricted job (EU jurisdiction, EU-owned operator: never the US-owned German region)",
        Action::Submit { file: file("eu.yaml", EU_JOB)?, request_id: Some("tour-2".into()) },
    )
    .await?;
    checks.check_sovereign(&local.cluster, &job(local, 2).await?, Purpose::Training);
    step(
        local,
        "Submit a job no permitted pool could ever hold: refused at submit, not queued forever",
        Action::Submit { file: file("giant.yaml", TOO_BIG)?, request_id: Some("tour-3".into()) },
    )
    .await?;
    let state = job(local, 3).await?.state;
    checks.check(state == "refused", format!("job 3 refused at submit (state {state})"));
    step(
        local,
        "Submit a job that fits only once GPUs free up: it waits, holding a reservation",
        Action::Submit { file: file("wide.yaml", WAITS)?, request_id: Some("tour-4".into()) },
    )
    .await?;
    let state = job(local, 4).await?.state;
    checks.check(state == "pending", format!("job 4 waits (state {state})"));
    step(local, "Why it waits (sovra job 4 --explain)", Action::Job { id: 4, explain: true }).await?;

    println!(
        "\n── A GPU fails: the fake daemons script XID 79 (fallen off the bus) on GPUs the cluster file marks unhealthy"
    );
    let marked = local.cluster.nodes.iter().any(|n| n.gpus.iter().any(|g| !g.health.is_healthy()));
    let ch = remote::connect(&local.remote).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = list_nodes(&ch, &local.remote).await?;
        let sick: Vec<_> = nodes.iter().filter(|n| !n.unhealthy.is_empty()).collect();
        if !sick.is_empty() || !marked || Instant::now() > deadline {
            for n in &sick {
                println!(
                    "  {}: {} of {} GPUs healthy; unhealthy: {} — no new work goes there",
                    n.name,
                    n.healthy_gpus,
                    n.gpus,
                    n.unhealthy.join("; ")
                );
            }
            if marked {
                checks.check(!sick.is_empty(), "the failed GPU is reported unhealthy within 10 s".into());
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    crate::dev_run::tour_runs(local, &mut checks, 5, &file).await?;
    crate::dev_run::tour_preemption(local, &mut checks, 7, &file).await?;

    let Some(victim) = job(local, 1).await?.replicas.first().map(|r| r.node.clone()) else {
        checks.check(false, "job 1 is placed, so that its node can be stopped".into());
        return finish(checks);
    };
    println!("\n── A node daemon dies: stopping the daemon of {victim} (where job 1 runs)");
    local.daemons[&victim].abort();
    let killed = Instant::now();
    let ch = remote::connect(&local.remote).await?;
    let not_ready = loop {
        let nodes = list_nodes(&ch, &local.remote).await?;
        if nodes.iter().any(|n| n.name == victim && !n.ready) {
            break Some(killed.elapsed());
        }
        if killed.elapsed() > local.heartbeat * 10 {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The scheduler's bound is two intervals; observing it here (a poll every 10 ms, one call each) adds a little,
    // allowed for explicitly rather than hidden in the bound.
    let observe = Duration::from_millis(100);
    let bound = local.heartbeat * 2;
    match not_ready {
        Some(after) => println!(
            "  {victim} NotReady {:.0} ms after its daemon stopped (heartbeat {} ms; the bound is 2 intervals)",
            after.as_secs_f64() * 1000.0,
            local.heartbeat.as_millis()
        ),
        None => println!("  {victim} still ready {} ms after its daemon stopped", (local.heartbeat * 10).as_millis()),
    }
    checks.check(
        not_ready.is_some_and(|t| t <= bound + observe),
        format!(
            "{victim} NotReady within 2 heartbeat intervals ({} ms, +{} ms to observe it)",
            bound.as_millis(),
            observe.as_millis()
        ),
    );
    let j1 = job(local, 1).await?;
    let nodes: Vec<&str> = j1.replicas.iter().map(|r| r.node.as_str()).collect();
    println!("  job 1 was lost with the node and requeued: now {} on {}", j1.state, nodes.join(", "));
    checks.check(
        !nodes.contains(&victim.as_str()),
        format!("job 1 no longer holds GPUs on {victim} (now {} on {})", j1.state, nodes.join(", ")),
    );
    step(local, "Jobs", Action::Jobs { queue: None, state: None }).await?;
    step(local, "Queues", Action::Queues).await?;
    let flapped: Vec<String> = list_nodes(&ch, &local.remote)
        .await?
        .into_iter()
        .filter(|n| n.name != victim && !n.ready)
        .map(|n| n.name)
        .collect();
    let others = if flapped.is_empty() { "none did".to_string() } else { flapped.join(", ") };
    checks.check(flapped.is_empty(), format!("no other node went NotReady ({others})"));
    println!("\n── A few metrics (http://{}/metrics)", local.metrics_addr);
    let text = http_get(local.metrics_addr, "/metrics").await.unwrap_or_default();
    for l in text.lines().filter(|l| {
        l.starts_with("sovra_placements_total")
            || l.starts_with("sovra_nodes{")
            || l.starts_with("sovra_decision_seconds_count")
            || l.starts_with("sovra_zone_gpu_milli{zone=\"fr-par-secnum\"")
    }) {
        println!("  {l}");
    }
    // Jobs 1, 2 and 4 to 8 were accepted; each is placed at most twice (once, and once more after a lost node or a
    // preemption).
    let placements = text
        .lines()
        .find(|l| l.starts_with("sovra_placements_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    checks.check(
        placements.is_some_and(|p| p <= 14.0),
        format!(
            "at most 14 placements for the 7 accepted jobs (sovra_placements_total {})",
            placements.map_or("missing".into(), |p| p.to_string())
        ),
    );
    finish(checks)
}

/// The tour's exit: 0 when every check held, else 1 naming the ones that failed.
fn finish(checks: Checks) -> Result<u8, Failure> {
    if !checks.failed.is_empty() {
        return Err(fail(1)(format!(
            "the tour's checks failed ({} of them): {}",
            checks.failed.len(),
            checks.failed.join("; ")
        )));
    }
    println!(
        "\nDone: every check held. `sovra dev` (without --tour) keeps it running for you to drive with `sovra submit | \
         jobs | nodes`."
    );
    Ok(0)
}

/// The scheduler's nodes.
async fn list_nodes(ch: &tonic::transport::Channel, remote: &Remote) -> Result<Vec<sovra_api::v1::NodeInfo>, Failure> {
    let r = ClusterClient::new(ch.clone()).nodes(remote::authed(remote, NodesRequest::default())?).await;
    Ok(r.map_err(|e| fail(1)(e.message().to_string()))?.into_inner().nodes)
}

/// A plain HTTP/1.0 GET on loopback (enough for the tour's metrics excerpt).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(body))
}
