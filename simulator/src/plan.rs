//! Capacity planning: the fewest nodes of each offered type that meet a target (`sovra plan`).
//!
//! The planned cluster is the scenario's cluster **plus** n_i nodes of each offer i (nodes already in the cluster
//! stay: they are what you have). Search: start with every offer at its maximum; if the target is not met there,
//! report that. Otherwise, offer by offer, binary-search the smallest count that still meets the target with the
//! other counts fixed, and repeat the pass until nothing changes (coordinate descent, at most 4 passes). This
//! assumes more nodes never make the metric worse — true of the engine's queueing up to tie effects (with
//! preemption and fair share a larger cluster can, rarely, reorder who waits) — and finds a minimal point, not necessarily the cheapest combination when offers substitute for each other; each offer's
//! curve (the metric against its count, the others at the answer) is swept and plotted so that this can be seen.

use crate::replay::{Offer, ReplayError, ReplayResult, Scenario, Target, replay};
use serde::Serialize;

/// One evaluated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Nodes of each offer.
    pub counts: Vec<u32>,
    /// The target's metric (the worst stream's p95 wait in minutes, or unserved %).
    pub metric: f64,
    /// Whether the target is met.
    pub meets: bool,
}

/// The plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanResult {
    /// The offers, in scenario order.
    pub offers: Vec<Offer>,
    /// The answer: nodes of each offer, or `None` if even the maxima miss the target.
    pub counts: Option<Vec<u32>>,
    /// The metric at the answer (or at the maxima when infeasible).
    pub metric: f64,
    /// The replay at the answer (or at the maxima).
    pub result: ReplayResult,
    /// Every configuration evaluated, in order.
    pub evaluations: Vec<Evaluation>,
    /// Per offer, the curve swept at the answer: (count, metric).
    pub curves: Vec<Vec<(u32, f64)>>,
}

/// The target's metric of a replay.
pub fn metric(target: Target, r: &ReplayResult) -> f64 {
    match target {
        Target::P95WaitMinutes(_) => r.wait_minutes_by_stream.values().map(|w| w.p95).fold(0.0, f64::max),
        Target::MaxUnservedPct(_) => r.unserved_pct,
    }
}

fn meets(target: Target, m: f64) -> bool {
    match target {
        Target::P95WaitMinutes(x) | Target::MaxUnservedPct(x) => m <= x,
    }
}

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The scenario has no `plan:` section.
    #[error("{file}: no plan section; add plan: {{target, offers}}")]
    NoPlan {
        /// The scenario file.
        file: String,
    },
    /// A replay of a planned cluster failed.
    #[error("{file}: {error}")]
    Replay {
        /// The scenario file.
        file: String,
        /// Why.
        error: ReplayError,
    },
}

/// Runs the search. Errors: no plan section, or a replay failure.
pub fn plan(s: &Scenario) -> Result<PlanResult, PlanError> {
    let file = s.file.display().to_string();
    let p = s.plan.as_ref().ok_or_else(|| PlanError::NoPlan { file: file.clone() })?;
    let mut evaluations: Vec<Evaluation> = Vec::new();
    let mut eval = |counts: &[u32]| -> Result<(f64, ReplayResult), PlanError> {
        let mut cluster = s.cluster.clone();
        for (o, &n) in p.offers.iter().zip(counts) {
            cluster.nodes.extend(o.nodes(n));
        }
        let r = replay(s, &cluster).map_err(|error| PlanError::Replay { file: file.clone(), error })?;
        let m = metric(p.target, &r);
        evaluations.push(Evaluation { counts: counts.to_vec(), metric: m, meets: meets(p.target, m) });
        Ok((m, r))
    };
    let mut counts: Vec<u32> = p.offers.iter().map(|o| o.max).collect();
    let (m, r) = eval(&counts)?;
    if !meets(p.target, m) {
        return Ok(PlanResult {
            offers: p.offers.clone(),
            counts: None,
            metric: m,
            result: r,
            evaluations,
            curves: vec![],
        });
    }
    for _pass in 0..4 {
        let before = counts.clone();
        for i in 0..counts.len() {
            // Smallest c in 0..=counts[i] that meets the target; counts[i] is known to meet it.
            let (mut lo, mut hi) = (0u32, counts[i]);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let mut trial = counts.clone();
                trial[i] = mid;
                if meets(p.target, eval(&trial)?.0) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            counts[i] = lo;
        }
        if counts == before {
            break;
        }
    }
    let (m, r) = eval(&counts)?;
    // The curves: each offer swept over ~12 counts with the others at the answer.
    let mut curves = Vec::new();
    for (i, o) in p.offers.iter().enumerate() {
        let step = (o.max / 12).max(1);
        let mut points = Vec::new();
        let mut c = 0;
        loop {
            let mut trial = counts.clone();
            trial[i] = c;
            points.push((c, eval(&trial)?.0));
            if c >= o.max {
                break;
            }
            c = (c + step).min(o.max);
        }
        curves.push(points);
    }
    Ok(PlanResult { offers: p.offers.clone(), counts: Some(counts), metric: m, result: r, evaluations, curves })
}
