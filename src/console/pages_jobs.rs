//! The queues and jobs page: each job's explanation in words — where each replica runs and why that zone is
//! allowed, or why it waits (per-filter node counts, quota, reservation, position) — and its preemptions.

use super::pages::{Query, layout, paginate};
use super::snapshot::Snapshot;
use maud::{Markup, html};
use sovra_api::v1::JobInfo;
use sovra_engine::{Blocker, PreemptionRecord};
use sovra_placement::Explanation;

/// The page.
pub(crate) fn jobs(snap: &Snapshot, q: &Query) -> String {
    let (state, queue, id) = (q.get("state"), q.get("queue"), q.get("id"));
    let shown: Vec<&JobInfo> = snap
        .jobs
        .iter()
        .filter(|j| state.is_empty() || j.state == state)
        .filter(|j| queue.is_empty() || j.queue == queue)
        .filter(|j| id.is_empty() || j.id.to_string() == id)
        .collect();
    let (rows, nav) = paginate(&shown, q, "/jobs");
    let states = ["pending", "placed", "running", "succeeded", "failed", "cancelled", "lost", "refused"];
    let body = html! {
        table {
            caption { "Queues" }
            thead { tr { th scope="col" { "Queue" } th scope="col" { "Weight" } th scope="col" { "Pending" } th scope="col" { "Running" }
                th scope="col" { "GPUs held" } th scope="col" { "Share" } th scope="col" { "Quota (GPUs per pool)" } } }
            tbody { @for qu in &snap.queues {
                tr { th scope="row" { a href={ "/jobs?queue=" (qu.name) } { (qu.name) } } td { (qu.weight) } td { (qu.pending) } td { (qu.running) }
                    td { (qu.gpu_milli_held as f64 / 1000.0) } td { (format!("{:.3}", qu.share)) }
                    td { @if qu.quota_milli.is_empty() { span.muted { "unlimited" } } @else {
                        @for (p, m) in &qu.quota_milli { (p) ": " (*m as f64 / 1000.0) " " }
                    } } }
            } }
        }
        h2 id="jobs" { "Jobs" }
        form.filter method="get" action="/jobs" {
            label { "State" select name="state" {
                option value="" { "all" }
                @for s in states { option value=(s) selected[s == state] { (s) } }
            } }
            label { "Queue" select name="queue" {
                option value="" { "all" }
                @for qu in &snap.queues { option value=(qu.name) selected[qu.name == queue] { (qu.name) } }
            } }
            label { "Job id" input type="text" name="id" value=(id) size="8" inputmode="numeric"; }
            button type="submit" { "Filter" }
        }
        (nav)
        @for j in rows { (job(snap, j)) }
        @if rows.is_empty() { p { "No job matches." } }
    };
    layout("/jobs", "Queues and jobs", snap, body)
}

fn state_badge(state: &str) -> Markup {
    let class = match state {
        "placed" | "running" | "succeeded" => "badge ok",
        "pending" => "badge warn",
        _ => "badge bad",
    };
    html! { span class=(class) { (state) } }
}

/// One job: an article with its heading, where it runs and why, or why it waits.
fn job(snap: &Snapshot, j: &JobInfo) -> Markup {
    let class = snap.classes.iter().find(|c| c.name == j.residency);
    let explanation: Option<Explanation> = serde_json::from_str(&j.explanation_json).ok();
    let blockers: Vec<Blocker> = serde_json::from_str(&j.blockers_json).unwrap_or_default();
    let preemptions: Vec<PreemptionRecord> = serde_json::from_str(&j.preemption_records_json).unwrap_or_default();
    html! {
        article.job id={ "job-" (j.id) } aria-labelledby={ "job-" (j.id) "-h" } {
            h3 id={ "job-" (j.id) "-h" } { "Job " (j.id) " · " (j.name) " " (state_badge(&j.state)) }
            p { "Queue " (j.queue) ", priority " (j.priority) ", residency class " strong { (j.residency) }
                @if !j.model.is_empty() { ", serves model " code { (j.model) } } "." }
            @if !j.replicas.is_empty() {
                table {
                    caption { "Where each replica runs, and why it may" }
                    thead { tr { th scope="col" { "Replica" } th scope="col" { "Node" } th scope="col" { "Pool" } th scope="col" { "Zone" } th scope="col" { "GPUs" } th scope="col" { "Why this zone is allowed" } } }
                    tbody { @for (i, r) in j.replicas.iter().enumerate() {
                        tr { td { (i) } td { (r.node) } td { (r.pool) } td { (r.zone) }
                            td { (r.devices.len()) @if r.milli_per_device < 1000 { " × " (r.milli_per_device) " milli" } }
                            td { @match class {
                                Some(c) if c.zones.contains(&r.zone) => { "zone " (r.zone) " satisfies class " (c.name) }
                                Some(c) => { span.badge.bad { "zone " (r.zone) " does not satisfy class " (c.name) } }
                                None => { "class " (j.residency) " is not defined any more" }
                            } } }
                    } }
                }
            }
            @if !j.explanation_summary.is_empty() || explanation.is_some() || !blockers.is_empty() {
                section aria-label="Why it waits" {
                    h4 { @if j.state == "refused" { "Why it was refused" } @else { "Why it waits" } }
                    @if !j.explanation_summary.is_empty() { p.reason { (j.explanation_summary) } }
                    @if let Some(e) = &explanation {
                        table {
                            caption { "Per filter, of " (e.total_nodes) " nodes" }
                            thead { tr { th scope="col" { "Filter" } th scope="col" { "Nodes rejected" } th scope="col" { "Why" } } }
                            tbody { @for f in &e.filters {
                                tr { td { (f.filter) } td { (f.rejected_nodes) }
                                    td { ul { @for r in &f.reasons { li { (r.nodes) " nodes: " (r.reason) } } } } }
                            } }
                        }
                    }
                    @if !blockers.is_empty() {
                        p { "Also:" }
                        ul { @for b in &blockers { li { (b) } } }
                    }
                }
            }
            @if !j.ended_reason.is_empty() { p { "Ended: " (j.ended_reason) } }
            @if !preemptions.is_empty() {
                section aria-label="Preemption history" {
                    h4 { "Preemptions (" (j.preemptions) ")" }
                    ol { @for p in &preemptions { li { (p) } } }
                }
            } @else if j.preemptions > 0 {
                p { "Preempted " (j.preemptions) " times." }
            }
        }
    }
}
