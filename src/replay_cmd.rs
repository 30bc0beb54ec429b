//! `sovra replay` and `sovra plan`: event-driven simulation of a scenario, and capacity planning on it.

use crate::plot::{Series, lines};
use crate::table::{cells, table};
use crate::{Failure, Output};
use sovra_simulator::plan::plan;
use sovra_simulator::replay::{ReplayResult, Scenario, replay};
use std::path::{Path, PathBuf};

/// What `sovra replay` and `sovra plan` take.
#[derive(clap::Args)]
pub struct ScenarioArgs {
    /// Scenario file (examples/scenario.yaml).
    scenario: PathBuf,
    /// Override the scenario's policy.
    #[arg(long, short = 'p')]
    policy: Option<String>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the results (CSV, SVG, JSON) into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

impl ScenarioArgs {
    /// The arguments `sovra plan` passes on when it plans a scenario.
    pub fn new(
        scenario: PathBuf,
        policy: Option<String>,
        seed: Option<u64>,
        out: Option<PathBuf>,
        output: Output,
    ) -> Self {
        ScenarioArgs { scenario, policy, seed, out, output }
    }
}

fn load(path: &Path, policy: Option<String>, seed: Option<u64>) -> Result<Scenario, Failure> {
    let mut s = Scenario::load(path).map_err(|e| Failure { code: 2, message: e.to_string() })?;
    if let Some(p) = policy {
        s.policy = p.parse().map_err(|e| Failure { code: 2, message: format!("--policy: {e}") })?;
    }
    if let Some(seed) = seed {
        s.seed = seed;
    }
    Ok(s)
}

fn print_result(r: &ReplayResult) {
    println!(
        "jobs {}: started {}, refused {} (no permitted pool could ever hold them), still waiting at the horizon {} \
         — unserved {:.2}%",
        r.jobs, r.started, r.refused, r.unstarted, r.unserved_pct
    );
    for (stream, n) in &r.refused_by_stream {
        println!("  refused: {n} × {stream}");
    }
    println!(
        "preemptions {} ({} jobs preempted, {} of them waiting again at the horizon; a preempted job restarts from \
         scratch)",
        r.preemptions, r.preempted_jobs, r.requeued_at_horizon
    );
    let w = r.wait_minutes;
    println!("queue wait (minutes): p50 {:.1}, p95 {:.1}, p99 {:.1}, max {:.1}", w.p50, w.p95, w.p99, w.max);
    for (stream, w) in &r.wait_minutes_by_stream {
        println!("  {stream:<20} p50 {:>7.1}  p95 {:>7.1}  p99 {:>7.1}  max {:>7.1}", w.p50, w.p95, w.p99, w.max);
    }
    println!("placements outside permitted zones: {}", r.residency_violations);
    let mut t = table(&["pool", "zone", "GPUs", "mean use%", "peak use%"], &[2, 3, 4]);
    for p in &r.pools {
        if p.capacity_milli == 0 {
            continue;
        }
        let cap = p.capacity_milli as f64;
        let mean = p.used_milli.iter().sum::<u64>() as f64 / p.used_milli.len().max(1) as f64 * 100.0 / cap;
        let peak = p.used_milli.iter().copied().max().unwrap_or(0) as f64 * 100.0 / cap;
        t.add_row(cells([
            p.pool.clone(),
            p.zone.clone(),
            (p.capacity_milli / 1000).to_string(),
            format!("{mean:.1}"),
            format!("{peak:.1}"),
        ]));
    }
    println!("{}", t.trim_fmt());
}

fn write_replay(dir: &Path, r: &ReplayResult) -> Result<(), String> {
    use std::fmt::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut csv = String::from("time_h");
    for p in &r.pools {
        write!(csv, ",{}", p.pool).unwrap();
    }
    csv.push('\n');
    for (i, t) in r.sample_times_s.iter().enumerate() {
        write!(csv, "{:.3}", t / 3600.0).unwrap();
        for p in &r.pools {
            let pct =
                if p.capacity_milli == 0 { 0.0 } else { p.used_milli[i] as f64 * 100.0 / p.capacity_milli as f64 };
            write!(csv, ",{pct:.2}").unwrap();
        }
        csv.push('\n');
    }
    std::fs::write(dir.join("utilisation.csv"), csv).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("replay.json"), serde_json::to_string_pretty(r).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let series: Vec<Series> = r
        .pools
        .iter()
        .filter(|p| p.capacity_milli > 0)
        .map(|p| Series {
            label: format!("{} ({})", p.pool, p.zone),
            points: r
                .sample_times_s
                .iter()
                .zip(&p.used_milli)
                .map(|(t, u)| (t / 3600.0, *u as f64 * 100.0 / p.capacity_milli as f64))
                .collect(),
        })
        .collect();
    let end = r.sample_times_s.last().map_or(1.0, |t| t / 3600.0).max(1.0);
    lines(
        &dir.join("utilisation.svg"),
        "GPU utilisation per pool over time",
        "time (hours)",
        "allocated GPUs (%)",
        &series,
        (0.0, end),
    )
}

/// Runs `sovra replay`.
pub fn run_replay(args: ScenarioArgs) -> Result<u8, Failure> {
    let ScenarioArgs { scenario, policy, seed, out, output } = args;
    let s = load(&scenario, policy, seed)?;
    let r = replay(&s, &s.cluster).map_err(|e| Failure { code: 2, message: format!("{}: {e}", scenario.display()) })?;
    if let Some(dir) = &out {
        write_replay(dir, &r).map_err(|message| Failure { code: 2, message })?;
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&r).expect("results serialise")),
        Output::Text => {
            println!(
                "scenario {} — policy {}, seed {}, {} h",
                scenario.display(),
                s.policy,
                s.seed,
                s.horizon_s / 3600.0
            );
            print_result(&r);
        }
    }
    Ok(0)
}

/// Runs `sovra plan`. Exit code 1 when even the maximum counts miss the target.
pub fn run_plan(args: ScenarioArgs) -> Result<u8, Failure> {
    let ScenarioArgs { scenario, policy, seed, out, output } = args;
    let s = load(&scenario, policy, seed)?;
    let p = plan(&s).map_err(|e| Failure { code: 2, message: e.to_string() })?;
    let target = s.plan.as_ref().map(|pl| pl.target).expect("plan() checked the section");
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).map_err(|e| Failure { code: 2, message: format!("{}: {e}", dir.display()) })?;
        let series: Vec<Series> = p
            .offers
            .iter()
            .zip(&p.curves)
            .map(|(o, c)| Series { label: o.name.clone(), points: c.iter().map(|&(n, m)| (f64::from(n), m)).collect() })
            .collect();
        let x_max = p.offers.iter().map(|o| f64::from(o.max)).fold(1.0, f64::max);
        let y = match target {
            sovra_simulator::replay::Target::P95WaitMinutes(_) => "worst stream's p95 queue wait (minutes)",
            sovra_simulator::replay::Target::MaxUnservedPct(_) => "unserved jobs (%)",
        };
        lines(
            &dir.join("plan-curves.svg"),
            "Each offer's count against the target metric (others at the answer)",
            "nodes of the offer",
            y,
            &series,
            (0.0, x_max),
        )
        .map_err(|message| Failure { code: 2, message })?;
        std::fs::write(dir.join("plan.json"), serde_json::to_string_pretty(&p).expect("results serialise"))
            .map_err(|e| Failure { code: 2, message: e.to_string() })?;
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&p).expect("results serialise")),
        Output::Text => {
            println!(
                "scenario {} — target {target:?}, {} configurations evaluated",
                scenario.display(),
                p.evaluations.len()
            );
            match &p.counts {
                None => println!("NOT REACHABLE: even with every offer at its maximum the metric is {:.2}", p.metric),
                Some(counts) => {
                    let mut t = table(&["offer", "pool", "nodes", "max", "GPUs"], &[2, 3, 4]);
                    for (o, n) in p.offers.iter().zip(counts) {
                        t.add_row(cells([
                            o.name.clone(),
                            o.pool.clone(),
                            n.to_string(),
                            o.max.to_string(),
                            (n * o.gpu_count).to_string(),
                        ]));
                    }
                    println!("{}", t.trim_fmt());
                    println!("metric at the answer: {:.2}", p.metric);
                }
            }
            print_result(&p.result);
        }
    }
    Ok(if p.counts.is_some() { 0 } else { 1 })
}
