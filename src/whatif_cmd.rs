//! `sovra plan`: capacity planning on a scenario (`src/replay_cmd.rs`), or, with `--what-if CHANGE.yaml`, what a
//! change of the legal facts breaks (`sovra_simulator::whatif`).

use crate::table::{cells, table};
use crate::{Failure, Output};
use sovra_simulator::whatif;
use std::path::PathBuf;

/// What `sovra plan` takes.
#[derive(clap::Args)]
pub(crate) struct PlanArgs {
    /// Scenario file (examples/scenario.yaml); not with --what-if.
    #[arg(required_unless_present = "what_if", conflicts_with = "what_if")]
    scenario: Option<PathBuf>,
    /// Apply this change of the legal facts (a zone loses a certification, an operator becomes foreign-owned, a
    /// zone is down, a class tightens) and report the jobs and models it makes non-compliant, which have no
    /// compliant home left, and the GPUs to add elsewhere (docs/receipts.md, "Legal what-if").
    #[arg(long, value_name = "FILE")]
    what_if: Option<PathBuf>,
    /// With --what-if: the cluster file (default: the built-in examples/cluster.yaml).
    #[arg(long, short = 'c', requires = "what_if")]
    config: Option<PathBuf>,
    /// With --what-if: the jobs, placed on today's cluster first (default: the built-in examples/jobs.yaml).
    #[arg(long, requires = "what_if")]
    jobs: Option<PathBuf>,
    /// With --what-if: the model versions, as `sovra model list -o json` prints them.
    #[arg(long, value_name = "FILE", requires = "what_if")]
    models: Option<PathBuf>,
    /// Override the scenario's (or the cluster's) policy.
    #[arg(long, short = 'p')]
    policy: Option<String>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the results (CSV, SVG, JSON) into this folder (scenarios).
    #[arg(long, conflicts_with = "what_if")]
    out: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn bad(message: String) -> Failure {
    Failure { code: 2, message }
}

/// `sovra plan`.
pub(crate) fn run(a: PlanArgs) -> Result<u8, Failure> {
    let Some(file) = a.what_if else {
        let scenario = a.scenario.unwrap_or_default();
        return crate::replay_cmd::run_plan(crate::replay_cmd::ScenarioArgs::new(
            scenario, a.policy, a.seed, a.out, a.output,
        ));
    };
    let cluster = crate::load_cluster(a.config.as_ref())?;
    let jobs = crate::load_jobs(a.jobs.as_ref(), &cluster)?;
    let text = std::fs::read_to_string(&file).map_err(|e| bad(format!("{}: cannot read: {e}", file.display())))?;
    let changes = whatif::parse(&file.display().to_string(), &text, &cluster).map_err(bad)?;
    let models: Vec<whatif::ModelVersion> = match &a.models {
        Some(p) => {
            let t =
                std::fs::read_to_string(p).map_err(|e| bad(format!("--models {}: cannot read: {e}", p.display())))?;
            let de = &mut serde_json::Deserializer::from_str(&t);
            serde_path_to_error::deserialize(de)
                .map_err(|e| bad(format!("--models {}: field `{}`: {}", p.display(), e.path(), e.inner())))?
        }
        None => Vec::new(),
    };
    let policy = match a.policy {
        Some(p) => p.parse().map_err(|e| bad(format!("--policy: {e}")))?,
        None => cluster.scheduling.policy.clone().unwrap_or_default(),
    };
    let seed = a.seed.unwrap_or(sovra_placement::DEFAULT_SEED);
    let r = whatif::evaluate(&cluster, &changes, jobs, &models, policy, seed)
        .map_err(|e| Failure { code: 1, message: e })?;
    if a.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(0);
    }
    println!("What if: {}", r.changes.join("; "));
    if r.jobs.is_empty() {
        println!("\nNo job becomes non-compliant.");
    } else {
        let mut t = table(&["job", "class", "was", "zones", "GPUs", "after the change", "why"], &[4]);
        for j in &r.jobs {
            t.add_row(cells([
                j.name.clone(),
                j.class.clone(),
                j.was.clone(),
                j.zones.join(", "),
                format!("{}", j.gpus),
                j.outcome.clone(),
                j.why.join("; "),
            ]));
        }
        println!("\nJobs ({}):\n{}", r.jobs.len(), t.trim_fmt());
    }
    if r.models.is_empty() {
        println!("\nNo promoted model version sits in a data zone that fails its class.");
    } else {
        let mut t = table(&["version", "class", "data zone", "compliant home left", "why"], &[]);
        for m in &r.models {
            t.add_row(cells([
                m.version.clone(),
                m.class.clone(),
                m.data_zone.clone(),
                if m.compliant_home_left { "yes".into() } else { "NO".to_string() },
                m.why.join("; "),
            ]));
        }
        println!("\nModels ({}):\n{}", r.models.len(), t.trim_fmt());
    }
    for (class, (gpus, zones)) in &r.gpus_to_add {
        if zones.is_empty() {
            println!(
                "\nTo re-home the {class} jobs: {gpus} GPU(s) in a zone that satisfies {class}, and no zone does after \
                 the change: a new compliant zone is needed"
            );
        } else {
            println!("\nTo re-home the {class} jobs: add {gpus} GPU(s) in {}", zones.join(" or "));
        }
    }
    let stranded = r.jobs.iter().filter(|j| j.outcome == "no compliant home").count();
    if stranded > 0 {
        println!("\n{stranded} job(s) have no compliant home left: no zone satisfies their class after the change.");
    }
    Ok(0)
}
