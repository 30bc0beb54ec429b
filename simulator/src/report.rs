//! Summaries of fill runs over seeds, and the published FGD results they are compared with.

use crate::fill::{FillRun, alloc_pct, bin, frag_ratio_pct};
use serde::Serialize;

/// Median, minimum and maximum over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Spread { median, min: v[0], max: v[n - 1] })
    }
}

/// One policy's results over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    /// Policy.
    pub policy: String,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// Allocation % at 90, 100 and 130% arrived (binned as the FGD paper does).
    pub alloc_at_90: Option<Spread>,
    /// Allocation % at 100% arrived: the headline figure.
    pub alloc_at_100: Option<Spread>,
    /// Allocation % at 130% arrived.
    pub alloc_at_130: Option<Spread>,
    /// Allocation % at 100% arrived of each run, in the order of `seeds` (for comparisons paired by seed).
    pub alloc_at_100_by_seed: Vec<Option<f64>>,
    /// Fragmentation ratio % at 100% arrived.
    pub frag_ratio_at_100: Option<Spread>,
    /// Failed tasks per run.
    pub failed: Spread,
    /// Tasks per run.
    pub tasks: usize,
    /// Published median allocation at 100% arrived for this trace and policy, if known.
    pub published_alloc_at_100: Option<f64>,
    /// The ceiling on allocation % at 100% arrived ([`crate::bound::Ceiling`]), over the same seeds.
    pub ceiling_at_100: Option<Spread>,
    /// Median over seeds of (ceiling − allocation) at 100% arrived, in points.
    pub gap_to_ceiling_at_100: Option<f64>,
}

/// Summarises runs of one policy; `ceilings[i]` is the ceiling by bin for `runs[i]`'s seed.
pub fn summarise(
    policy: &str,
    runs: &[FillRun],
    ceilings: &[Vec<Option<f64>>],
    published: Option<f64>,
) -> PolicySummary {
    let at = |x: usize| {
        let v: Vec<f64> = runs.iter().filter_map(|r| bin(r, 130, alloc_pct(r))[x]).collect();
        Spread::of(&v)
    };
    let frag: Vec<f64> = runs.iter().filter_map(|r| bin(r, 130, frag_ratio_pct)[100]).collect();
    let failed: Vec<f64> = runs.iter().map(|r| r.failed as f64).collect();
    let ceiling: Vec<f64> = ceilings.iter().filter_map(|c| c.get(100).copied().flatten()).collect();
    let gaps: Vec<f64> = runs
        .iter()
        .zip(ceilings)
        .filter_map(|(r, c)| Some(c.get(100).copied().flatten()? - bin(r, 130, alloc_pct(r))[100]?))
        .collect();
    PolicySummary {
        policy: policy.to_string(),
        seeds: runs.iter().map(|r| r.seed).collect(),
        alloc_at_90: at(90),
        alloc_at_100: at(100),
        alloc_at_130: at(130),
        alloc_at_100_by_seed: runs.iter().map(|r| bin(r, 130, alloc_pct(r))[100]).collect(),
        frag_ratio_at_100: Spread::of(&frag),
        failed: Spread::of(&failed).unwrap_or(Spread { median: 0.0, min: 0.0, max: 0.0 }),
        tasks: runs.first().map_or(0, |r| r.tasks),
        published_alloc_at_100: published,
        ceiling_at_100: Spread::of(&ceiling),
        gap_to_ceiling_at_100: Spread::of(&gaps).map(|s| s.median),
    }
}

/// The published median allocation at 100% arrived for a trace file stem (e.g. `openb_pod_list_default`) and one
/// of our policy names, from the text of `fgd-published-results-summary.csv`.
pub fn published_alloc_at_100(csv: impl std::io::Read, trace_stem: &str, policy: &str) -> Option<f64> {
    let paper = match policy {
        "random" => "01-Random",
        "dot-product" => "02-DotProd",
        "gpu-clustering" => "03-GpuClustering",
        "gpu-packing" => "04-GpuPacking",
        "best-fit" => "05-BestFit",
        "fgd" => "06-FGD",
        _ => return None,
    };
    let mut r = csv::Reader::from_reader(csv);
    let headers = r.headers().ok()?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (w, p, a) = (col("workload")?, col("policy")?, col("alloc_pct_at_arrived100_median")?);
    r.records().flatten().find(|rec| rec.get(w) == Some(trace_stem) && rec.get(p) == Some(paper))?.get(a)?.parse().ok()
}
