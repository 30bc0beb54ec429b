//! The models, audit and simulator pages: each model version's path through the data zones (statements, gates,
//! approvals, exceptions marked UNDER EXCEPTION, withdrawals, where it is served); both audit chains, verified;
//! the simulator's plots.

use super::pages::{Query, active, layout, paginate};
use super::snapshot::Snapshot;
use maud::{Markup, html};
use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(t) => t.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A data zone, as `zone/stage` (the registry stores it as an object or as that text).
fn dz(v: &Value) -> String {
    match (v["zone"].as_str(), v["stage"].as_str()) {
        (Some(z), Some(st)) => format!("{z}/{st}"),
        _ => s(v),
    }
}

/// The UNDER EXCEPTION badge.
fn under_exception() -> Markup {
    html! { span.badge.bad { "UNDER EXCEPTION" } }
}

/// The gates a promotion statement (a DSSE envelope) records, as `name: outcome` lines.
fn gates(envelope: &Value) -> Vec<String> {
    use base64::Engine as _;
    let payload = envelope["payload"].as_str().unwrap_or_default();
    let statement: Value = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let g = &statement["predicate"]["gates"];
    match g {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Object(o) => {
                    let name = o.get("gate").or_else(|| o.get("name")).map(s).unwrap_or_default();
                    let rest: Vec<String> = o
                        .iter()
                        .filter(|(k, _)| *k != "gate" && *k != "name")
                        .map(|(k, v)| format!("{k} {}", s(v)))
                        .collect();
                    format!("{name}: {}", rest.join(", "))
                }
                other => s(other),
            })
            .collect(),
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k}: {}", s(v))).collect(),
        _ => Vec::new(),
    }
}

/// The models page.
pub(crate) fn models(snap: &Snapshot, q: &Query) -> String {
    let name = q.get("model");
    let shown: Vec<&Value> = snap.models.iter().filter(|m| name.is_empty() || m["model"] == name).collect();
    let (rows, nav) = paginate(&shown, q, "/models");
    let body = html! {
        form.filter method="get" action="/models" {
            label { "Model name" input type="text" name="model" value=(name); }
            button type="submit" { "Filter" }
        }
        (nav)
        @for m in rows { (version(snap, m)) }
        @if rows.is_empty() { p { "No model version." } }
    };
    layout("/models", "Models", snap, body)
}

fn version(snap: &Snapshot, m: &Value) -> Markup {
    let (model, digest) = (s(&m["model"]), s(&m["digest"]));
    let full = format!("{model}@{digest}");
    let served: Vec<String> = snap
        .jobs
        .iter()
        .filter(|j| active(j) && (j.model == full || (!j.model.is_empty() && full.starts_with(&j.model))))
        .map(|j| {
            let zones: Vec<&str> = j.replicas.iter().map(|r| r.zone.as_str()).collect();
            format!("job {} ({}) in {}", j.id, j.name, zones.join(", "))
        })
        .collect();
    let empty = Vec::new();
    let arr = |k: &str| m[k].as_array().unwrap_or(&empty).clone();
    let live = arr("exceptions").iter().any(|e| e["live"] == true);
    html! {
        article.model id={ "model-" (model) "-" (digest.get(..12).unwrap_or(&digest)) } {
            h2 { (model) " " code { (digest.get(..19).unwrap_or(&digest)) } @if live { " " (under_exception()) } }
            p { "Residency class " strong { (s(&m["residency_class"])) } ", now in " strong { (s(&m["current"])) }
                @if !m["next_stage"].is_null() { ", next stage " (s(&m["next_stage"])) } "." }
            h3 { "Path through the data zones" }
            ol.path aria-label={ "Chain of " (model) } {
                @for l in arr("locations") {
                    li { (dz(&l)) @if let Some(p) = l["promotion"].as_u64() { " (promotion statement " (p) ")" } @else { " (pushed)" } }
                }
            }
            @let promotions = arr("promotions");
            @if !promotions.is_empty() {
                table {
                    caption { "Promotion statements" }
                    thead { tr { th scope="col" { "Statement" } th scope="col" { "From" } th scope="col" { "To" } th scope="col" { "Signature" } th scope="col" { "Gates passed" } th scope="col" { "Exception" } } }
                    tbody { @for p in &promotions {
                        tr { td { (s(&p["id"])) } td { (s(&p["from"])) } td { (s(&p["to"])) }
                            td { @if p["statement_verified"] == true { span.badge.ok { "verified" } } @else { span.badge.bad { "NOT verified" } } }
                            td { ul { @for g in gates(&p["envelope"]) { li { (g) } } } }
                            td { @if p["under_exception"] == true { (under_exception()) } @else { span.muted { "none" } } } }
                    } }
                }
            }
            @let approvals = arr("approvals");
            @if !approvals.is_empty() {
                h3 { "Approvals" }
                ul { @for a in &approvals { li { (s(&a["approver"])) " approved " (s(&a["from"])) " → " (s(&a["to"]))
                    @if a["expired"] == true { " " span.badge.warn { "expired" } }
                    @if a["withdrawn_since"] == true { " " span.badge.warn { "void since a withdrawal" } } } } }
            }
            @let exceptions = arr("exceptions");
            @if !exceptions.is_empty() {
                h3 { "Exceptions" }
                ul { @for e in &exceptions { li {
                    @if e["live"] == true { (under_exception()) " " } @else { span.badge.warn { "expired" } " " }
                    "gate " strong { (s(&e["gate"])) } " waived by " (s(&e["admin"])) ": “" (s(&e["reason"])) "”, until " (s(&e["expires_at"])) } } }
            }
            @let withdrawn = arr("withdrawn");
            @if !withdrawn.is_empty() {
                h3 { "Withdrawals" }
                ul { @for w in &withdrawn { li { span.badge.bad { "withdrawn" } " " (w.to_string()) } } }
            }
            h3 { "Where it is served" }
            @if served.is_empty() { p.muted { "Not served by any running job." } } @else { ul { @for x in &served { li { (x) } } } }
        }
    }
}

fn chain_status(name: &str, report: Option<&Value>) -> Markup {
    html! {
        @match report {
            None => { p { span.badge.warn { "unknown" } " the " (name) " could not be read" } }
            Some(r) => {
                @let problems = r["problems"].as_array().cloned().unwrap_or_default();
                @let ok = problems.is_empty() && (r["ok"] != false) && (r["status"] != "broken");
                p { @if ok { span.badge.ok { "verified" } } @else { span.badge.bad { "BROKEN" } }
                    " " (name) ": " (s(&r["entries"])) " entries" }
                @if !problems.is_empty() { ul { @for p in &problems { li { "entry " (s(&p["position"])) ": " (s(&p["message"])) } } } }
            }
        }
    }
}

/// The audit page: both chains' status and the latest entries, filterable by log, kind and text.
pub(crate) fn audit(snap: &Snapshot, q: &Query) -> String {
    let (log, kind, text) = (q.get("log"), q.get("kind"), q.get("q"));
    let mut entries: Vec<(&str, &Value)> = Vec::new();
    if log != "scheduler" {
        entries.extend(snap.registry_log.iter().rev().map(|e| ("registry", e)));
    }
    if log != "registry" {
        entries.extend(snap.scheduler_log.iter().rev().map(|e| ("scheduler", e)));
    }
    let kind_of = |e: &Value| s(&e["event"]["kind"]).to_string() + &s(&e["kind"]);
    entries.retain(|(_, e)| kind.is_empty() || kind_of(e) == kind);
    entries.retain(|(_, e)| text.is_empty() || e.to_string().contains(text));
    let (rows, nav) = paginate(&entries, q, "/audit");
    let body = html! {
        h2 { "Chains" }
        (chain_status("registry's audit log", snap.registry_audit.as_ref()))
        (chain_status("scheduler's receipts log", snap.scheduler_audit.as_ref()))
        h2 { "Latest entries" }
        form.filter method="get" action="/audit" {
            label { "Log" select name="log" {
                option value="" { "both" }
                option value="registry" selected[log == "registry"] { "registry" }
                option value="scheduler" selected[log == "scheduler"] { "scheduler" }
            } }
            label { "Kind" input type="text" name="kind" value=(kind); }
            label { "Contains" input type="text" name="q" value=(text); }
            button type="submit" { "Filter" }
        }
        (nav)
        table {
            caption { "Entries, newest first" }
            thead { tr { th scope="col" { "Log" } th scope="col" { "Time" } th scope="col" { "Kind" } th scope="col" { "Subject" } th scope="col" { "Actor" } th scope="col" { "Details" } } }
            tbody { @for (l, e) in rows {
                @let ev = if e["event"].is_object() { &e["event"] } else { *e };
                tr { td { (l) } td { (s(&e["time"])) } td { (kind_of(e)) } td { (s(&ev["subject"])) } td { (s(&ev["actor"])) }
                    td { code { (s(&ev["details"])) } } }
            } }
        }
    };
    layout("/audit", "Audit", snap, body)
}

/// The simulator page: the plots of `sovra simulate | replay | plan --out DIR` found in `--plots DIR`.
pub(crate) fn plots(snap: &Snapshot, _q: &Query) -> String {
    let body = html! {
        @if snap.plots.is_empty() {
            p { "No plots. Run e.g. " code { "sovra replay --out DIR" } " and start the console with " code { "--plots DIR" } "." }
        }
        @for (name, _) in &snap.plots {
            figure { img.plot src={ "/plots/" (name) } alt={ "Simulator plot " (name) };
                figcaption { (name) } }
        }
    };
    layout("/plots", "Simulator results", snap, body)
}
