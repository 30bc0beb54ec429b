//! Times `replay` and `plan` on a scenario (default `examples/scenario.yaml`) and prints what they answer: the
//! measurement behind the replay/plan section of `BENCHMARKS.md`.
//!
//! `cargo run --release -p sovra-simulator --example replay_timing -- [scenario] [runs]`

use sovra_simulator::plan::plan;
use sovra_simulator::replay::{Scenario, replay};
use std::time::Instant;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let file = args.next().unwrap_or_else(|| "examples/scenario.yaml".into());
    let runs: usize = args.next().map_or(Ok(5), |r| r.parse()).map_err(|e| format!("runs: {e}"))?;
    let s = Scenario::load(std::path::Path::new(&file)).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        last = Some(replay(&s, &s.cluster).map_err(|e| e.to_string())?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let r = last.ok_or("no run")?;
    println!(
        "replay {file}: median {:.1} ms over {} runs (min {:.1}, max {:.1})",
        times[times.len() / 2],
        times.len(),
        times[0],
        times[times.len() - 1]
    );
    println!(
        "  jobs {} started {} refused {} unstarted {} unserved {:.2}%",
        r.jobs, r.started, r.refused, r.unstarted, r.unserved_pct
    );
    // Through JSON, so that this file builds on the replay before it counted preemptions (null there).
    let v = serde_json::to_value(&r).map_err(|e| e.to_string())?;
    println!(
        "  preemptions {} (jobs preempted {}, waiting again at the horizon {})",
        v["preemptions"], v["preempted_jobs"], v["requeued_at_horizon"]
    );
    let w = r.wait_minutes;
    println!("  wait p50 {:.1} p95 {:.1} p99 {:.1} max {:.1}", w.p50, w.p95, w.p99, w.max);
    for (k, w) in &r.wait_minutes_by_stream {
        println!("    {k:<16} p50 {:>6.1} p95 {:>6.1} max {:>6.1}", w.p50, w.p95, w.max);
    }
    if s.plan.is_some() {
        let t = Instant::now();
        let p = plan(&s).map_err(|e| e.to_string())?;
        println!(
            "plan: {:.2} s, {} configurations, counts {:?}, metric {:.1}",
            t.elapsed().as_secs_f64(),
            p.evaluations.len(),
            p.counts,
            p.metric
        );
    }
    Ok(())
}
