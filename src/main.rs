//! `sovra`: the command-line tool for users and CI.
//!
//! Exit codes (documented in the README; CI depends on them):
//! - 0: success (every job placed, or the files are valid);
//! - 1: a job could not be placed (the explanation is printed);
//! - 2: bad input (a file, field or flag is wrong; the message names it) — nothing was done.

use clap::{Parser, Subcommand, ValueEnum};
use sovra_domain::{ClusterConfig, ConfigError, Job, PolicySpec};
use sovra_placement::{ClusterState, Placer, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;

mod console;
mod dev;
mod dev_promotion;
mod dev_run;
mod kueue_cmd;
mod model_cmd;
mod placement_exception_cmd;
mod plot;
mod promote_cmd;
mod promotion_client;
mod receipts_cmd;
mod registry_cmd;
mod remote;
mod replay_cmd;
mod simulate;
mod table;
mod whatif_cmd;
mod withdraw_cmd;

/// The example cluster and jobs built into the binary, so that `sovra place` runs on a fresh machine.
const EXAMPLE_CLUSTER: &str = include_str!("../examples/cluster.yaml");
const EXAMPLE_JOBS: &str = include_str!("../examples/jobs.yaml");

#[derive(Parser)]
#[command(name = "sovra", version, about = "Run AI workloads on GPUs only where the law allows.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Readable text.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// A job state, as `sovra jobs --state` filters by it (the scheduler's states; a test checks that each parses as
/// one of `sovra_engine::JobState`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum JobStateArg {
    /// Waiting in its queue.
    Pending,
    /// GPUs assigned, not yet confirmed running.
    Placed,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// A node it ran on disappeared (it is requeued).
    Lost,
    /// Refused at submit: no permitted pool could ever hold it.
    Refused,
}

/// A state a job's runner reports with `sovra set-state`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum RunnerState {
    /// A placed job started.
    Running,
    /// It ended well (its GPUs are released).
    Succeeded,
    /// It ended with an error (its GPUs are released).
    Failed,
}

/// The name clap shows for a value, which is also the name the scheduler uses.
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// `sovra console` subcommands.
#[derive(Subcommand)]
enum ConsoleCommand {
    /// Render every page from an in-memory snapshot of a synthetic estate and print the times (no network).
    Bench {
        #[command(flatten)]
        args: console::bench::BenchArgs,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Place jobs on a cluster (dry run): print where each replica goes, or why it cannot go anywhere.
    ///
    /// Jobs are placed in file order, each keeping its GPUs for the next. Without --config and --job, the
    /// built-in example (examples/cluster.yaml and examples/jobs.yaml) is used.
    Place {
        /// Cluster file (zones, pools, residency classes, nodes). Default: the built-in example.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Job file: one job, or `jobs: [...]`. Default: the built-in example jobs.
        #[arg(long, short = 'j')]
        job: Option<PathBuf>,
        /// Scorers and weights, e.g. `fgd` or `best-fit=2,topology`. Default: the cluster's scheduling.policy,
        /// else `best-fit,topology`.
        #[arg(long, short = 'p')]
        policy: Option<String>,
        /// Seed of the node order that breaks ties (and of the random scorer).
        #[arg(long, default_value_t = sovra_placement::DEFAULT_SEED)]
        seed: u64,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run the FGD paper's fill protocol on an Alibaba GPU trace: shuffle, inflate to 1.3 × capacity, place tasks
    /// one at a time with each policy and seed, and report allocation at 90/100/130% of capacity arrived beside the
    /// published figures.
    Simulate {
        #[command(flatten)]
        args: simulate::SimulateArgs,
    },
    /// Replay a scenario (examples/scenario.yaml): jobs arrive, queue, run and leave; report queue waits,
    /// refusals and utilisation per pool over time. --out writes utilisation.csv, utilisation.svg and replay.json.
    Replay {
        #[command(flatten)]
        args: replay_cmd::ScenarioArgs,
    },
    /// Capacity planning: the fewest nodes of each offered type (the scenario's plan section) that meet its target.
    /// Exits 1 when even the maximum counts miss it. --out writes plan-curves.svg and plan.json. With --what-if
    /// CHANGE.yaml: what a change of zones or classes breaks, and the GPUs to add to re-home it.
    Plan {
        #[command(flatten)]
        args: whatif_cmd::PlanArgs,
    },
    /// Models: sign and verify (OMS v1.0 key mode, compatible with `model_signing`), push to the registry, approve
    /// and promote through the gates.
    Model {
        #[command(subcommand)]
        command: model_cmd::ModelCommand,
    },
    /// The read-only web console (docs/console.md): zones, pools and nodes, queues and jobs, models, audit and
    /// simulator plots, read from the scheduler and the promotion service and served on a loopback address.
    /// `sovra console bench`: page render times at 10,000 nodes and 100,000 jobs.
    #[command(args_conflicts_with_subcommands = true)]
    Console {
        #[command(subcommand)]
        command: Option<ConsoleCommand>,
        #[command(flatten)]
        args: console::ConsoleArgs,
    },
    /// Break-glass exceptions to promotion gates (admin key only; they expire by themselves).
    Exception {
        #[command(subcommand)]
        command: promote_cmd::ExceptionCommand,
    },
    /// The registry's hash-chained audit log: `verify` the chain, or print the `log`.
    Audit {
        #[command(subcommand)]
        command: promote_cmd::AuditCommand,
    },
    /// The model registry itself: `gc` lists (and removes) what killed or failed writers left behind.
    Registry {
        #[command(subcommand)]
        command: registry_cmd::RegistryCommand,
    },
    /// Submit a job file to the scheduler (`sovra-scheduler serve`); prints where it runs or why it waits.
    Submit {
        /// Job file (one job).
        file: PathBuf,
        /// Client request id: retrying with the same id never submits twice.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List the scheduler's jobs.
    Jobs {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only this state.
        #[arg(long, value_enum)]
        state: Option<JobStateArg>,
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show one job; with --explain, why it is pending (per-filter node counts and reasons). `sovra job receipts
    /// ID`: its signed placement receipts.
    #[command(args_conflicts_with_subcommands = true)]
    Job {
        #[command(subcommand)]
        command: Option<receipts_cmd::JobCommand>,
        /// Job id.
        #[arg(required = true)]
        id: Option<u64>,
        /// Show the per-filter explanation.
        #[arg(long)]
        explain: bool,
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print a job replica's output (stdout and stderr), read from its node through the scheduler.
    Logs {
        /// Job id.
        id: u64,
        /// The replica (0 to replicas − 1).
        #[arg(long, default_value_t = 0)]
        replica: u32,
        /// Keep printing what it writes until it ends (Ctrl-C to stop).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last K lines (default: everything the node keeps).
        #[arg(long, value_name = "K", default_value_t = 0)]
        tail: u32,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Cancel a job (its GPUs are released).
    Cancel {
        /// Job id.
        id: u64,
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Report a job's state as its runner sees it: `running` (a placed job started), `succeeded` or `failed` (it
    /// ended; its GPUs are released).
    SetState {
        /// Job id.
        id: u64,
        /// The state the runner saw.
        #[arg(value_enum)]
        state: RunnerState,
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The scheduler's nodes: pool, zone, readiness, GPU use.
    Nodes {
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The scheduler's pools: zone, purpose, capacity and use.
    Pools {
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The scheduler's queues: weight, quotas, pending and running jobs, GPUs held and DRF share.
    Queues {
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The scheduler's zones and residency classes (with the zones that satisfy each).
    Zones {
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The scheduler's latest event lines, oldest first: nodes registered or refused, jobs lost or requeued,
    /// exceptions granted and expired, and every REFUSED attempt to move work across a border.
    Events {
        /// How many (default 100, at most 10,000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Make the scheduler re-read its cluster file (an invalid file is refused and changes nothing).
    Reload {
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Follow job changes as they happen (one job, or every job), until interrupted.
    Watch {
        /// Job id (default: all jobs).
        id: Option<u64>,
        /// Resume: only changes after this revision (a job's `revision`, or the revision a list was read at),
        /// instead of every current job first.
        #[arg(long, value_name = "REVISION")]
        since: Option<u64>,
        #[command(flatten)]
        remote: remote::Remote,
        /// Output format: one line (or one JSON document) per change.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// All-in-one local mode: the scheduler (state in a local sled directory) and one node daemon per node of the
    /// cluster with FAKE GPUs, over real gRPC and mutual TLS on loopback. Prints the endpoints and a command to
    /// paste; `--tour` runs a scripted walk through placement, refusal, health and liveness, then exits.
    Dev {
        #[command(flatten)]
        args: dev::DevArgs,
    },
    /// Supervise one replica run for `sovra dev`'s node daemons (not for people; `sovra-node-daemon shim`).
    #[command(hide = true)]
    Shim {
        /// The replica's directory.
        dir: PathBuf,
    },
    /// Print Kueue ResourceFlavors, one per Sovra pool (or per pool a residency class permits), selecting the
    /// pool's nodes by their pool label; optionally a ClusterQueue skeleton with one flavor per pool.
    Kueue {
        #[command(flatten)]
        args: kueue_cmd::KueueArgs,
    },
    /// Validate a cluster file and, optionally, job files against it.
    Validate {
        /// Cluster file.
        #[arg(long, short = 'c')]
        config: PathBuf,
        /// Job files.
        #[arg(long, short = 'j')]
        job: Vec<PathBuf>,
    },
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure { code: 2, message: e.to_string() }
    }
}

fn main() -> ExitCode {
    // `sovra … | head` closing the pipe early ends quietly (see sovra_cli_util for why not SIGPIPE).
    sovra_cli_util::exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Place { config, job, policy, seed, output } => place(config, job, policy, seed, output),
        Command::Validate { config, job } => validate(config, job),
        Command::Submit { file, request_id, remote, output } => {
            remote::run(remote, remote::Action::Submit { file, request_id }, output)
        }
        Command::Jobs { queue, state, remote, output } => {
            remote::run(remote, remote::Action::Jobs { queue, state: state.map(value_name) }, output)
        }
        Command::Job {
            command: Some(receipts_cmd::JobCommand::Receipts { id, out, verify_key, remote, output }),
            ..
        } => receipts_cmd::job_receipts(&remote, id, output, out.as_deref(), verify_key.as_deref()),
        Command::Job { command: Some(receipts_cmd::JobCommand::Exception { command }), .. } => {
            placement_exception_cmd::run(command)
        }
        Command::Job { id, explain, remote, output, .. } => {
            remote::run(remote, remote::Action::Job { id: id.unwrap_or_default(), explain }, output)
        }
        Command::Cancel { id, remote, output } => remote::run(remote, remote::Action::Cancel { id }, output),
        Command::Logs { id, replica, follow, tail, remote } => {
            remote::run(remote, remote::Action::Logs { id, replica, follow, tail }, Output::Text)
        }
        Command::Nodes { remote, output } => remote::run(remote, remote::Action::Nodes, output),
        Command::Pools { remote, output } => remote::run(remote, remote::Action::Pools, output),
        Command::SetState { id, state, remote, output } => {
            remote::run(remote, remote::Action::SetState { id, state: value_name(state) }, output)
        }
        Command::Queues { remote, output } => remote::run(remote, remote::Action::Queues, output),
        Command::Zones { remote, output } => remote::run(remote, remote::Action::Zones, output),
        Command::Reload { remote, output } => remote::run(remote, remote::Action::Reload, output),
        Command::Events { limit, remote, output } => remote::run(remote, remote::Action::Events { limit }, output),
        Command::Watch { id, since, remote, output } => {
            remote::run(remote, remote::Action::Watch { id, since }, output)
        }
        Command::Dev { args } => dev::run(args),
        Command::Console { command: Some(ConsoleCommand::Bench { args }), .. } => console::bench::run(args),
        Command::Console { command: None, args } => console::run(args),
        Command::Shim { dir } => return ExitCode::from(sovra_node_daemon::run::shim::main(&dir).clamp(0, 255) as u8),
        Command::Kueue { args } => kueue_cmd::run(args),
        Command::Model { command } => model_cmd::run(command),
        Command::Exception { command } => promote_cmd::exception(command),
        Command::Audit { command } => promote_cmd::audit(command),
        Command::Registry { command } => registry_cmd::run(command),
        Command::Replay { args } => replay_cmd::run_replay(args),
        Command::Plan { args } => whatif_cmd::run(args),
        Command::Simulate { args } => simulate::simulate(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn load_cluster(path: Option<&PathBuf>) -> Result<ClusterConfig, Failure> {
    Ok(match path {
        Some(p) => ClusterConfig::load(p)?,
        None => ClusterConfig::from_yaml("<built-in examples/cluster.yaml>", EXAMPLE_CLUSTER)?,
    })
}

fn load_jobs(path: Option<&PathBuf>, cluster: &ClusterConfig) -> Result<Vec<Job>, Failure> {
    Ok(match path {
        Some(p) => cluster.load_jobs(p)?,
        None => cluster.jobs_from_yaml("<built-in examples/jobs.yaml>", EXAMPLE_JOBS)?,
    })
}

fn validate(config: PathBuf, jobs: Vec<PathBuf>) -> Result<u8, Failure> {
    let cluster = load_cluster(Some(&config))?;
    ClusterState::from_config(&cluster)
        .map_err(|e| Failure { code: 2, message: format!("{}: {e}", config.display()) })?;
    println!(
        "{}: ok ({} zones, {} pools, {} residency classes, {} nodes)",
        config.display(),
        cluster.zones.len(),
        cluster.pools.len(),
        cluster.residency_classes.len(),
        cluster.nodes.len()
    );
    for j in &jobs {
        let n = load_jobs(Some(j), &cluster)?.len();
        println!("{}: ok ({n} job(s))", j.display());
    }
    Ok(0)
}

fn place(
    config: Option<PathBuf>,
    job: Option<PathBuf>,
    policy: Option<String>,
    seed: u64,
    output: Output,
) -> Result<u8, Failure> {
    let cluster = load_cluster(config.as_ref())?;
    let jobs = load_jobs(job.as_ref(), &cluster)?;
    let policy = match policy {
        Some(p) => p.parse::<PolicySpec>().map_err(|e| Failure { code: 2, message: format!("--policy: {e}") })?,
        None => cluster.scheduling.policy.clone().unwrap_or_default(),
    };
    let mut state = ClusterState::from_config(&cluster).map_err(|e| Failure { code: 2, message: e.to_string() })?;
    let mut placer = Placer::new(policy.clone(), seed).with_target_workload(&cluster.scheduling.fgd_target_workload);
    let mut results = Vec::new();
    for j in &jobs {
        placer.observe_admitted(j);
        let verdict = placer.verdict(&state, j);
        if let Verdict::Fit(d) = &verdict {
            state.apply(d).map_err(|e| Failure { code: 2, message: format!("internal error: {e}") })?;
        }
        results.push((j, verdict));
    }
    let refused = results.iter().filter(|(_, v)| !v.is_fit()).count();
    match output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = results
                .iter()
                .map(|(j, v)| match v {
                    Verdict::Fit(d) => {
                        serde_json::json!({"job": j.name, "placed": true, "verdict": "fit", "decision": d})
                    }
                    Verdict::Unschedulable(e) => serde_json::json!(
                        {"job": j.name, "placed": false, "verdict": "unschedulable", "explanation": e}
                    ),
                    Verdict::Unresolvable(e) => serde_json::json!(
                        {"job": j.name, "placed": false, "verdict": "unresolvable", "explanation": e}
                    ),
                })
                .collect();
            let doc = serde_json::json!({"policy": policy.to_string(), "seed": seed, "results": docs});
            println!("{}", serde_json::to_string_pretty(&doc).expect("JSON values always serialise"));
        }
        Output::Text => {
            println!("policy {policy}, seed {seed}");
            for (j, o) in &results {
                print_job(&state, j, o);
            }
            println!("{} of {} job(s) placed", results.len() - refused, results.len());
        }
    }
    Ok(if refused > 0 { 1 } else { 0 })
}

fn print_job(state: &ClusterState, job: &Job, verdict: &Verdict) {
    let r = &job.resources;
    let gpu = match (r.gpus, r.gpu_milli) {
        (0, _) => "no GPU".to_string(),
        (1, m) if m < 1000 => format!("{m}m of 1 GPU"),
        (g, _) => format!("{g} GPU"),
    };
    let models = if r.gpu_models.is_empty() { String::new() } else { format!(" {}", r.gpu_models.join("|")) };
    println!(
        "\n{} ({}, class {}): {} × [{gpu}{models}, {}m CPU, {} MiB]",
        job.name, job.kind, job.residency, job.replicas, r.cpu_milli, r.memory_mib
    );
    match verdict {
        Verdict::Fit(d) => {
            for p in &d.replicas {
                let topo = state.topology();
                let start = topo.nodes[p.node as usize].dev_start as usize;
                let devices: Vec<String> = p
                    .devices
                    .iter()
                    .map(|a| {
                        let dev = &topo.devices[start + a.device as usize];
                        let name = match &dev.mig_profile {
                            Some(profile) => format!("GPU{} MIG {profile}", dev.gpu),
                            None => format!("GPU{}", dev.gpu),
                        };
                        if u32::from(a.milli) < 1000 { format!("{name} ({}m)", a.milli) } else { name }
                    })
                    .collect();
                let parts: Vec<String> = p
                    .scores
                    .parts
                    .iter()
                    .map(|(k, w, s)| if *w == 1 { format!("{k} {s}") } else { format!("{k} {s}×{w}") })
                    .collect();
                println!(
                    "  replica {} → {} (pool {}, zone {}) [{}]  score {} ({}), {} feasible node(s)",
                    p.replica,
                    p.node_name,
                    p.pool,
                    p.zone,
                    devices.join(", "),
                    p.scores.total,
                    parts.join(", "),
                    p.feasible_nodes
                );
            }
        }
        Verdict::Unschedulable(e) | Verdict::Unresolvable(e) => {
            println!(
                "  NOT PLACED{}: {}",
                if verdict.is_unresolvable() { " (can never fit as configured)" } else { "" },
                e.summary
            );
            for f in e.filters.iter().filter(|f| f.rejected_nodes > 0) {
                println!("    {:<13} rejected {:>5} node(s)", f.filter.name(), f.rejected_nodes);
                for reason in &f.reasons {
                    println!("        {:>5} × {}", reason.nodes, reason.reason);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_job_state_value_is_a_state_of_the_scheduler() {
        for v in JobStateArg::value_variants() {
            let name = value_name(*v);
            let parsed: Result<sovra_engine::JobState, _> =
                serde_json::from_value(serde_json::Value::String(name.clone()));
            assert!(parsed.is_ok(), "`sovra jobs --state {name}` is not a scheduler state");
        }
    }

    /// Every flag of every command read from the environment hides the environment's value in `--help`: tokens are
    /// secrets, and a path or user name is nobody's business in a pasted help text either.
    #[test]
    fn every_env_backed_flag_of_every_command_hides_its_value() {
        fn walk(cmd: &clap::Command, path: &str, bad: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.get_env().is_some() && !a.is_hide_env_values_set() {
                    bad.push(format!("{path} --{}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), bad);
            }
        }
        let mut bad = Vec::new();
        walk(&Cli::command(), "sovra", &mut bad);
        assert!(bad.is_empty(), "flags that would show an environment value in --help: {bad:?}");
    }
}
