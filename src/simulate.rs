//! `sovra simulate`: the FGD paper's fill protocol on an Alibaba trace, for several policies and seeds in parallel.

use crate::plot::{Series, lines};
use crate::table::{cells, table};
use crate::{Failure, Output};
use indicatif::{ProgressBar, ProgressStyle};
use sovra_domain::PolicySpec;
use sovra_simulator::fill::{
    FillRun, Target, alloc_pct, bin, ceiling_by_bin, frag_ratio_pct, run_fill_with, typical_workload,
};
use sovra_simulator::order::order;
use sovra_simulator::report::{PolicySummary, Spread, published_alloc_at_100, summarise};
use sovra_simulator::trace::{load_nodes, load_tasks, read_nodes, read_tasks};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The policies of the FGD paper, in its order, then Sovra's own.
pub const DEFAULT_POLICIES: [&str; 7] =
    ["random", "dot-product", "gpu-clustering", "gpu-packing", "best-fit", "fgd", "sovra"];

/// Sovra's own packing policy: FGD and adaptive first-fit (first-fit at FGD's weight, fading for whole-GPU tasks as
/// multi-GPU tasks take a larger share of the demand seen), FGD's target mix learned online from the tasks seen so
/// far (it is not handed the trace's mix). See docs/simulator.md for how it was found.
pub const SOVRA_POLICY: &str = "learned:fgd,adaptive-first-fit";

/// Parses `42..51` (inclusive), `42,43` or `42`.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--seeds {s:?}: write a seed (42), a list (42,43) or an inclusive range (42..51)");
    if let Some((a, b)) = s.split_once("..") {
        let (a, b): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        if b < a || b - a > 10_000 {
            return Err(format!("--seeds {s:?}: the range must go up and hold at most 10,001 seeds"));
        }
        return Ok((a..=b).collect());
    }
    s.split(',').map(|x| x.trim().parse::<u64>().map_err(|_| bad())).collect()
}

/// The vendored Alibaba trace (`data/alibaba-gpu-v2023`, 19 task files, 10 MB), built into the binary so that `sovra simulate`
/// runs from any folder and from an installed binary; `--data` reads another copy instead.
const BUILT_IN_TRACES: [(&str, &str); 19] = [
    ("default", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_default.csv")),
    ("cpu050", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_cpu050.csv")),
    ("gpushare40", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_gpushare40.csv")),
    ("multigpu20", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_multigpu20.csv")),
    ("cpu0", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_cpu0.csv")),
    ("cpu037", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_cpu037.csv")),
    ("cpu072", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_cpu072.csv")),
    ("cpu100", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_cpu100.csv")),
    ("cpu235", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_cpu235.csv")),
    ("cpu250", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_cpu250.csv")),
    ("cpu300", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_cpu300.csv")),
    ("gpushare20", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_gpushare20.csv")),
    ("gpushare60", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_gpushare60.csv")),
    ("gpushare80", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_gpushare80.csv")),
    ("gpuspec05", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_gpuspec05.csv")),
    ("gpuspec10", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_gpuspec10.csv")),
    ("gpuspec25", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_gpuspec25.csv")),
    ("multigpu30", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_multigpu30.csv")),
    ("multigpu40", include_str!("../data/alibaba-gpu-v2023/openb_pod_list_multigpu40.csv")),
];
const BUILT_IN_NODES: &str = include_str!("../data/alibaba-gpu-v2023/openb_node_list_gpu_node.csv");
/// The published figures: the four files of the first release, then the eight more the artifact covers.
const BUILT_IN_PUBLISHED: [&str; 2] =
    [include_str!("../data/fgd-published-results-summary.csv"), include_str!("../data/fgd-published-results-more.csv")];

/// Whether `trace` is a path rather than a trace name.
fn is_path(trace: &str) -> bool {
    let p = Path::new(trace);
    p.extension().is_some() || p.components().count() > 1
}

/// Where a trace file comes from: a file, or the built-in copy of the vendored one.
enum Input {
    File(PathBuf),
    BuiltIn { name: String, text: &'static str },
}

impl Input {
    /// How errors and reports name it.
    fn label(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::BuiltIn { name, .. } => format!("{name} (built in)"),
        }
    }

    /// The file stem the published figures are keyed by (`openb_pod_list_default`).
    fn stem(&self) -> String {
        match self {
            Input::File(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            Input::BuiltIn { name, .. } => {
                Path::new(name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
            }
        }
    }
}

/// The task list: a path as given; a trace name from `--data` (`<data>/openb_pod_list_<name>.csv`) or, without
/// `--data`, from the built-in copy.
fn trace_input(data: Option<&Path>, trace: &str) -> Result<Input, Failure> {
    if is_path(trace) {
        return Ok(Input::File(PathBuf::from(trace)));
    }
    if let Some(d) = data {
        return Ok(Input::File(d.join(format!("openb_pod_list_{trace}.csv"))));
    }
    match BUILT_IN_TRACES.iter().find(|(n, _)| *n == trace) {
        Some((n, text)) => Ok(Input::BuiltIn { name: format!("openb_pod_list_{n}.csv"), text }),
        None => Err(Failure {
            code: 2,
            message: format!(
                "--trace {trace:?}: not a built-in trace ({}); give a task CSV path, or --data FOLDER holding \
                 openb_pod_list_{trace}.csv",
                BUILT_IN_TRACES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// A trace error; one that could not open a file under `--data` says so, since `--data` is what to change.
fn trace_failure(data: Option<&Path>) -> impl Fn(sovra_simulator::trace::TraceError) -> Failure + '_ {
    move |e| {
        let hint = match data {
            Some(d) if e.line == 0 => format!(" (--data {}: the folder of the trace files)", d.display()),
            _ => String::new(),
        };
        Failure { code: 2, message: format!("{e}{hint}") }
    }
}

/// How one policy is run: its placement policy and where FGD's target mix comes from.
fn resolve_policy(name: &str) -> Result<(PolicySpec, Target), Failure> {
    // `learned:<policy>` learns FGD's target mix online from the tasks seen so far; plain FGD, as the paper runs
    // it, is handed the whole trace's typical mix.
    let name = if name == "sovra" { SOVRA_POLICY } else { name };
    let (spec, target) = match name.strip_prefix("learned:") {
        Some(rest) => (rest, Target::Learned),
        None => (name, Target::Trace),
    };
    let spec: PolicySpec = spec.parse().map_err(|e| Failure { code: 2, message: format!("--policy: {e}") })?;
    Ok((spec, target))
}

/// The arguments of `sovra simulate`.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Trace: one of the 19 vendored task files by name — `default`, `cpu0`, `cpu037`, `cpu050`, `cpu072`,
    /// `cpu100`, `cpu235`, `cpu250`, `cpu300`, `gpushare20`…`80`, `gpuspec05`/`10`/`25`, `multigpu20`/`30`/`40`
    /// (built in, or the files in --data) — or a task CSV path.
    #[arg(long, short = 't', default_value = "default")]
    pub trace: String,
    /// Folder of the Alibaba trace files (`openb_pod_list_<trace>.csv`, `openb_node_list_gpu_node.csv`).
    /// Default: the copy of data/alibaba-gpu-v2023 built into the binary, so this runs from any folder.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Node list CSV. Default: `openb_node_list_gpu_node.csv` in --data (or built in).
    #[arg(long)]
    pub nodes: Option<PathBuf>,
    /// Policy to run (repeat for several): a scorer list such as `fgd` or `fgd,first-fit`, `learned:<list>` to
    /// learn FGD's mix online, or `sovra` (= `learned:fgd,adaptive-first-fit`). Default: the paper's six and `sovra`.
    #[arg(long, short = 'p')]
    pub policy: Vec<String>,
    /// Seeds: `42`, `42,43` or an inclusive range `42..51`.
    #[arg(long, default_value = "42..51")]
    pub seeds: String,
    /// Inflate the task list to this multiple of the cluster's GPU capacity.
    #[arg(long, default_value_t = 1.3)]
    pub inflate: f64,
    /// Worker threads (runs are independent), 1 to 1024. Default: all cores.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Write per-step CSVs, summary.json and SVG plots (allocation and fragmentation vs arrived) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also compute the provable ceiling on allocation (docs/simulator.md, "The ceiling"), once per seed.
    #[arg(long)]
    pub ceiling: bool,
    /// The random stream that orders tasks and breaks ties: `go` (Go's math/rand, as the FGD paper's simulator:
    /// seeds 42–51 draw the published runs' orders) or `splitmix` (the project's earlier stream).
    #[arg(long, default_value = "go")]
    pub rng: sovra_simulator::fill::Stream,
}

/// Runs `sovra simulate`.
pub fn simulate(args: SimulateArgs) -> Result<u8, Failure> {
    let SimulateArgs { trace, data, nodes, policy: policies, seeds, inflate, threads, out, output, ceiling, rng } =
        args;
    let (threads, with_ceiling, stream) = (threads.map(usize::from), ceiling, rng);
    let seeds = parse_seeds(&seeds).map_err(|message| Failure { code: 2, message })?;
    if !(inflate > 0.0 && inflate <= 10.0) {
        return Err(Failure { code: 2, message: format!("--inflate {inflate}: use a factor above 0 and at most 10") });
    }
    let data = data.as_deref();
    let trace_file = trace_input(data, &trace)?;
    let nodes_file = match (nodes, data) {
        (Some(p), _) => Input::File(p),
        (None, Some(d)) => Input::File(d.join("openb_node_list_gpu_node.csv")),
        (None, None) => Input::BuiltIn { name: "openb_node_list_gpu_node.csv".into(), text: BUILT_IN_NODES },
    };
    let bad = trace_failure(data);
    let node_list = match &nodes_file {
        Input::File(p) => load_nodes(p),
        Input::BuiltIn { name, text } => read_nodes(&format!("{name} (built in)"), text.as_bytes()),
    }
    .map_err(&bad)?;
    let tasks = match &trace_file {
        Input::File(p) => load_tasks(p),
        Input::BuiltIn { name, text } => read_tasks(&format!("{name} (built in)"), text.as_bytes()),
    }
    .map_err(&bad)?;
    if node_list.iter().all(|n| n.gpus == 0) {
        return Err(Failure { code: 2, message: format!("{}: no node has a GPU", nodes_file.label()) });
    }
    let capacity: u64 = node_list.iter().map(|n| u64::from(n.gpus) * 1000).sum();
    sovra_simulator::fill::check_workload(&tasks, capacity, inflate)
        .map_err(|e| Failure { code: 2, message: format!("{}: {e}", trace_file.label()) })?;
    let policies: Vec<String> =
        if policies.is_empty() { DEFAULT_POLICIES.iter().map(|s| s.to_string()).collect() } else { policies };
    let resolved: Vec<(String, PolicySpec, Target)> =
        policies.iter().map(|p| resolve_policy(p).map(|(s, t)| (p.clone(), s, t))).collect::<Result<_, _>>()?;

    // FGD's target mix depends on the trace only: once per process.
    let typical = typical_workload(&tasks);
    // Every (policy, seed) pair is one independent run; a few threads take them in turn.
    let work: Vec<(usize, u64)> = (0..resolved.len()).flat_map(|p| seeds.iter().map(move |&s| (p, s))).collect();
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, work.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, FillRun, f64)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    // A progress bar on stderr; indicatif draws nothing when stderr is not a terminal (CI, pipes).
    let progress = ProgressBar::new(work.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} runs [{bar:30}] {elapsed} (eta {eta}) {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(p, seed)) = work.get(i) else { break };
                    let (_, spec, target) = &resolved[p];
                    let t0 = Instant::now();
                    let run = run_fill_with(&node_list, &tasks, &typical, spec, target, seed, inflate, stream);
                    let secs = t0.elapsed().as_secs_f64();
                    progress.set_message(format!("{} seed {seed}", resolved[p].0));
                    progress.inc(1);
                    results.lock().expect("no thread panics while holding the lock").push((p, run, secs));
                }
            });
        }
    });
    // The ceiling depends on the seed only: once per seed (not per policy), in parallel too, and only when asked
    // (`--ceiling`): its LP costs more than a fill run.
    let devices = node_list.iter().map(|n| u64::from(n.gpus)).sum::<u64>();
    let ceiling_seeds: &[u64] = if with_ceiling { &seeds } else { &[] };
    let ceilings: Vec<(u64, Vec<Option<f64>>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ceiling_seeds
            .iter()
            .map(|&seed| {
                let tasks = &tasks;
                let nodes = &node_list;
                scope.spawn(move || {
                    let o = order(nodes, tasks, devices * 1000, inflate, seed, stream);
                    (seed, ceiling_by_bin(nodes, &o.workload, 130, &[90, 100, 130]))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("ceiling threads do not panic")).collect()
    });
    progress.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let mut results = results.into_inner().expect("all threads finished");
    results.sort_by_key(|(p, r, _)| (*p, r.seed));

    let stem = trace_file.stem();
    // The published figures: beside `--data` when given (as in the repository), else the built-in copies.
    let published_texts: Vec<String> = match data.and_then(|d| d.parent()) {
        Some(d) => ["fgd-published-results-summary.csv", "fgd-published-results-more.csv"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(d.join(f)).ok())
            .collect(),
        None => Vec::new(),
    };
    let published_csvs: Vec<&str> = if published_texts.is_empty() {
        BUILT_IN_PUBLISHED.to_vec()
    } else {
        published_texts.iter().map(String::as_str).collect()
    };
    let mut summaries: Vec<(PolicySummary, Spread)> = Vec::new();
    for (p, (name, _, _)) in resolved.iter().enumerate() {
        let runs: Vec<FillRun> = results.iter().filter(|(q, _, _)| *q == p).map(|(_, r, _)| r.clone()).collect();
        let times: Vec<f64> = results.iter().filter(|(q, _, _)| *q == p).map(|(_, _, t)| *t).collect();
        let published = published_csvs.iter().find_map(|csv| published_alloc_at_100(csv.as_bytes(), &stem, name));
        let run_ceilings: Vec<Vec<Option<f64>>> = runs
            .iter()
            .map(|r| ceilings.iter().find(|(s, _)| *s == r.seed).map(|(_, c)| c.clone()).unwrap_or_default())
            .collect();
        let times = Spread::of(&times).expect("at least one seed");
        summaries.push((summarise(name, &runs, &run_ceilings, published), times));
    }
    if let Some(dir) = &out {
        let median_ceiling = median_by_bin(&ceilings.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>());
        write_outputs(dir, &results, &resolved, &summaries, &median_ceiling, &stem)
            .map_err(|e| Failure { code: 2, message: format!("{}: cannot write results: {e}", dir.display()) })?;
    }
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "trace": trace_file.label(),
                "nodes": nodes_file.label(),
                "seeds": seeds,
                "inflate": inflate,
                "policies": summaries.iter().map(|(s, t)| serde_json::json!({"summary": s, "seconds_per_run": t})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("JSON values always serialise"));
        }
        Output::Text => print_table(&trace_file.label(), &seeds, &summaries, wall, threads),
    }
    Ok(0)
}

fn fmt_spread(s: &Option<Spread>) -> String {
    s.map_or("-".into(), |s| format!("{:6.2} [{:6.2} – {:6.2}]", s.median, s.min, s.max))
}

fn print_table(trace: &str, seeds: &[u64], summaries: &[(PolicySummary, Spread)], wall: f64, threads: usize) {
    println!(
        "trace {} — {} task(s) per run, seeds {}..{} ({} run(s) per policy), {threads} thread(s), {wall:.1} s wall",
        trace,
        summaries.first().map_or(0, |s| s.0.tasks),
        seeds.first().unwrap_or(&0),
        seeds.last().unwrap_or(&0),
        seeds.len()
    );
    if let Some(c) = summaries.first().and_then(|s| s.0.ceiling_at_100) {
        println!(
            "ceiling on allocation at 100% arrived (no policy can exceed it; docs/simulator.md): {}",
            fmt_spread(&Some(c))
        );
    }
    let mut out = table(
        &[
            "policy",
            "alloc% @100 arrived med[min–max]",
            "published",
            "Δ",
            "to ceil.",
            "FGD gap",
            "alloc% @130 med [min–max]",
            "frag%@100",
            "failed",
            "s/run",
        ],
        &[2, 3, 4, 5, 7, 8, 9],
    );
    let fgd_gap = summaries.iter().find(|(s, _)| s.policy == "fgd").and_then(|(s, _)| s.gap_to_ceiling_at_100);
    for (s, t) in summaries {
        let med = s.alloc_at_100.map(|a| a.median);
        let (pubd, delta) = match (s.published_alloc_at_100, med) {
            (Some(p), Some(m)) => (format!("{p:.2}"), format!("{:+.2}", m - p)),
            _ => ("-".into(), "-".into()),
        };
        // Share of FGD's gap to the ceiling that this policy closes (negative: it widens it).
        let closed = match (fgd_gap, s.gap_to_ceiling_at_100) {
            (Some(f), Some(g)) if f > 0.0 => format!("{:+.0}%", 100.0 * (f - g) / f),
            _ => "-".into(),
        };
        out.add_row(cells([
            s.policy.to_string(),
            fmt_spread(&s.alloc_at_100),
            pubd,
            delta,
            s.gap_to_ceiling_at_100.map_or("-".into(), |g| format!("{g:.2}")),
            closed,
            fmt_spread(&s.alloc_at_130),
            s.frag_ratio_at_100.map_or("-".into(), |f| format!("{:.2}", f.median)),
            format!("{:.0}", s.failed.median),
            format!("{:.3}", t.median),
        ]));
    }
    println!("{}", out.trim_fmt());
}

/// Per bin, the median over seeds of the values present.
fn median_by_bin(by_seed: &[Vec<Option<f64>>]) -> Vec<Option<f64>> {
    let bins = by_seed.iter().map(Vec::len).max().unwrap_or(0);
    (0..bins)
        .map(|x| {
            let v: Vec<f64> = by_seed.iter().filter_map(|b| b.get(x).copied().flatten()).collect();
            Spread::of(&v).map(|s| s.median)
        })
        .collect()
}

fn points(bins: &[Option<f64>]) -> Vec<(f64, f64)> {
    bins.iter().enumerate().filter_map(|(x, v)| v.map(|v| (x as f64, v))).collect()
}

fn write_outputs(
    dir: &Path,
    results: &[(usize, FillRun, f64)],
    resolved: &[(String, PolicySpec, Target)],
    summaries: &[(PolicySummary, Spread)],
    ceiling: &[Option<f64>],
    trace: &str,
) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    for (p, run, _) in results {
        let name = resolved[*p].0.replace([',', '='], "_");
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("steps-{name}-seed{}.csv", run.seed)))?);
        writeln!(f, "step,arrived_pct,alloc_pct,frag_ratio_pct,failed")?;
        let alloc = alloc_pct(run);
        for (i, s) in run.steps.iter().enumerate() {
            let arrived = s.arrived_milli as f64 * 100.0 / run.capacity_milli as f64;
            writeln!(f, "{i},{arrived:.4},{:.4},{:.4},{}", alloc(s), frag_ratio_pct(s), u8::from(s.failed))?;
        }
    }
    let doc: Vec<&PolicySummary> = summaries.iter().map(|(s, _)| s).collect();
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?)?;
    // Plots: median over seeds per arrived %, one line per policy (as the FGD paper's Fig. 9a, but allocation).
    let mut alloc = Vec::new();
    let mut frag = Vec::new();
    for (p, (name, _, _)) in resolved.iter().enumerate() {
        let runs: Vec<&FillRun> = results.iter().filter(|(q, _, _)| *q == p).map(|(_, r, _)| r).collect();
        let a: Vec<Vec<Option<f64>>> = runs.iter().map(|r| bin(r, 130, alloc_pct(r))).collect();
        let f: Vec<Vec<Option<f64>>> = runs.iter().map(|r| bin(r, 130, frag_ratio_pct)).collect();
        alloc.push(Series { label: name.clone(), points: points(&median_by_bin(&a)) });
        frag.push(Series { label: name.clone(), points: points(&median_by_bin(&f)) });
    }
    if ceiling.iter().any(Option::is_some) {
        alloc.push(Series { label: "ceiling (provable)".into(), points: points(ceiling) });
    }
    let zoom: Vec<Series> = alloc
        .iter()
        .map(|s| Series { label: s.label.clone(), points: s.points.iter().copied().filter(|p| p.0 >= 80.0).collect() })
        .collect();
    let plot = |file: &str, title: String, y: &str, series: &[Series], x: (f64, f64)| {
        lines(&dir.join(file), &title, "arrived GPU demand (% of cluster GPUs)", y, series, x)
            .map_err(std::io::Error::other)
    };
    plot(
        "allocation.svg",
        format!("GPU allocation vs arrived demand — {trace} (median of seeds)"),
        "allocated GPUs (%)",
        &alloc,
        (0.0, 130.0),
    )?;
    plot(
        "allocation-zoom.svg",
        format!("GPU allocation, 80–130% arrived — {trace}"),
        "allocated GPUs (%)",
        &zoom,
        (80.0, 130.0),
    )?;
    plot(
        "fragmentation.svg",
        format!("FGD fragmentation ratio vs arrived demand — {trace}"),
        "fragmented share of free GPU (%)",
        &frag,
        (0.0, 130.0),
    )
}
