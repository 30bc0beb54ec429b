//! The console's pages over a [`Snapshot`]: the layout, zones, pools and nodes, queues and jobs. Pure functions of
//! the snapshot and the query string (the bench in src/console/bench.rs times exactly these).

use super::snapshot::Snapshot;
use maud::{DOCTYPE, Markup, html};
use sovra_api::v1::{JobInfo, NodeInfo};
use std::collections::BTreeMap;

/// Rows per page of every long table.
pub(crate) const PAGE: usize = 100;

/// A page's query string (`?page=2&state=pending`).
pub(crate) struct Query(pub BTreeMap<String, String>);

impl Query {
    /// A parameter, empty when absent.
    pub(crate) fn get(&self, k: &str) -> &str {
        self.0.get(k).map(String::as_str).unwrap_or("")
    }

    /// The 1-based page number (1 when absent or not a number).
    pub(crate) fn page(&self) -> usize {
        self.get("page").parse().ok().filter(|p| *p >= 1).unwrap_or(1)
    }
}

const VIEWS: [(&str, &str); 6] = [
    ("/zones", "Zones"),
    ("/nodes", "Pools and nodes"),
    ("/jobs", "Queues and jobs"),
    ("/models", "Models"),
    ("/audit", "Audit"),
    ("/plots", "Simulator"),
];

/// The frame of every page: navigation (the current view marked), the snapshot's time and what could not be read.
pub(crate) fn layout(path: &str, title: &str, snap: &Snapshot, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Sovra console" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    strong { "Sovra console" } " "
                    span { "(read-only · snapshot of " (snap.taken_at) ")" }
                    nav aria-label="Views" {
                        ul {
                            @for (href, name) in VIEWS {
                                li { a href=(href) aria-current=[(href == path).then_some("page")] { (name) } }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    @if !snap.errors.is_empty() {
                        section.errors role="alert" aria-label="What could not be read" {
                            p { strong { "Part of this view could not be read:" } }
                            ul { @for e in &snap.errors { li { (e) } } }
                        }
                    }
                    (body)
                }
            }
        }
    }
    .into_string()
}

/// The 404 page.
pub(crate) fn not_found() -> String {
    layout("", "Not found", &Snapshot::default(), html! { p { "No such page. " a href="/zones" { "Zones" } } })
}

/// The rows of page `q.page()` of `items`, and the navigation between pages (the other parameters kept).
pub(crate) fn paginate<'a, T>(items: &'a [T], q: &Query, path: &str) -> (&'a [T], Markup) {
    let pages = items.len().div_ceil(PAGE).max(1);
    let page = q.page().min(pages);
    let rows = &items[((page - 1) * PAGE).min(items.len())..(page * PAGE).min(items.len())];
    let link = |p: usize| {
        let mut params: Vec<String> =
            q.0.iter().filter(|(k, _)| *k != "page").map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
        params.push(format!("page={p}"));
        format!("{path}?{}", params.join("&"))
    };
    let nav = html! {
        nav.pages aria-label="Pages" {
            "Page " (page) " of " (pages) " (" (items.len()) " rows) "
            @if page > 1 { a href=(link(1)) { "First" } " " a href=(link(page - 1)) rel="prev" { "Previous" } " " }
            @if page < pages { a href=(link(page + 1)) rel="next" { "Next" } " " a href=(link(pages)) { "Last" } }
        }
    };
    (rows, nav)
}

/// Percent-encodes a query parameter.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GPUs from milli.
fn gpus(milli: u64) -> String {
    if milli.is_multiple_of(1000) { (milli / 1000).to_string() } else { format!("{:.1}", milli as f64 / 1000.0) }
}

/// Whether a job holds GPUs now.
pub(crate) fn active(j: &JobInfo) -> bool {
    j.state == "placed" || j.state == "running"
}

/// The zones page: each zone's country, operator and who owns it (CLOUD Act exposure), certifications, what runs
/// there; and for each residency class the zones that satisfy it.
pub(crate) fn zones(snap: &Snapshot, _q: &Query) -> String {
    let mut running: BTreeMap<&str, usize> = BTreeMap::new();
    let mut models: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for j in snap.jobs.iter().filter(|j| active(j)) {
        for z in j.replicas.iter().map(|r| r.zone.as_str()).collect::<std::collections::BTreeSet<_>>() {
            *running.entry(z).or_default() += 1;
            if !j.model.is_empty() {
                models.entry(z).or_default().insert(j.model.as_str());
            }
        }
    }
    let body = html! {
        table {
            caption { "Zones (" (snap.zones.len()) ")" }
            thead { tr { th scope="col" { "Zone" } th scope="col" { "Country" } th scope="col" { "Jurisdiction" }
                th scope="col" { "Operator" } th scope="col" { "Operator owned from" } th scope="col" { "CLOUD Act" }
                th scope="col" { "Certifications" } th scope="col" { "Jobs running" } th scope="col" { "Models served" } } }
            tbody {
                @for z in &snap.zones {
                    tr id={ "zone-" (z.id) } {
                        th scope="row" { (z.id) }
                        td { (z.country) } td { (z.jurisdiction) } td { (z.operator) } td { (z.operator_hq) }
                        td {
                            @if z.operator_hq == "US" {
                                span.badge.bad { "EXPOSED to the US CLOUD Act" }
                                " (operator owned from the US, whatever the datacenter's country)"
                            } @else {
                                span.badge.ok { "Not exposed" } " (operator owned from " (z.operator_hq) ")"
                            }
                        }
                        td { @if z.certifications.is_empty() { span.muted { "none" } } @else { (z.certifications.join(", ")) } }
                        td { (running.get(z.id.as_str()).copied().unwrap_or(0)) }
                        td { @match models.get(z.id.as_str()) {
                            Some(m) => { (m.iter().copied().collect::<Vec<_>>().join(", ")) }
                            None => { span.muted { "none" } }
                        } }
                    }
                }
            }
        }
        table {
            caption { "Residency classes: the zones that satisfy each" }
            thead { tr { th scope="col" { "Class" } th scope="col" { "Zones that satisfy it" } th scope="col" { "Rules" } } }
            tbody {
                @for c in &snap.classes {
                    tr { th scope="row" { (c.name) }
                        td { @if c.zones.is_empty() { span.badge.warn { "no zone" } } @else { (c.zones.join(", ")) } }
                        td { code { (c.rules_json) } } }
                }
            }
        }
    };
    layout("/zones", "Zones", snap, body)
}

/// GPUs of a node that cannot take work (unhealthy, or the node is not ready).
fn unavailable(n: &NodeInfo) -> u32 {
    if n.ready { n.gpus.saturating_sub(n.healthy_gpus) } else { n.gpus }
}

/// The pools and nodes page: GPU use per pool and zone, node health, unhealthy GPUs with their XIDs.
pub(crate) fn nodes(snap: &Snapshot, q: &Query) -> String {
    let mut down: BTreeMap<&str, u32> = BTreeMap::new();
    for n in &snap.nodes {
        *down.entry(n.pool.as_str()).or_default() += unavailable(n);
    }
    let mut zones: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for p in &snap.pools {
        let z = zones.entry(p.zone.as_str()).or_default();
        let off = u64::from(down.get(p.id.as_str()).copied().unwrap_or(0)) * 1000;
        z.0 += p.capacity_milli;
        z.1 += p.used_milli;
        z.2 += off;
    }
    let (pool, health) = (q.get("pool"), q.get("health"));
    let shown: Vec<&NodeInfo> = snap
        .nodes
        .iter()
        .filter(|n| pool.is_empty() || n.pool == pool)
        .filter(|n| match health {
            "unhealthy" => !n.unhealthy.is_empty() || !n.ready || !n.gpu_error.is_empty(),
            _ => true,
        })
        .collect();
    let (rows, nav) = paginate(&shown, q, "/nodes");
    let body = html! {
        table {
            caption { "GPUs per pool" }
            thead { tr { th scope="col" { "Pool" } th scope="col" { "Zone" } th scope="col" { "Purpose" } th scope="col" { "Nodes" }
                th scope="col" { "GPUs" } th scope="col" { "Used" } th scope="col" { "Free" } th scope="col" { "Unavailable" } } }
            tbody { @for p in &snap.pools {
                @let off = u64::from(down.get(p.id.as_str()).copied().unwrap_or(0)) * 1000;
                tr { th scope="row" { (p.id) } td { (p.zone) } td { (p.purpose) } td { (p.nodes) }
                    td { (gpus(p.capacity_milli)) } td { (gpus(p.used_milli)) }
                    td { (gpus(p.capacity_milli.saturating_sub(p.used_milli).saturating_sub(off))) } td { (gpus(off)) } }
            } }
        }
        table {
            caption { "GPUs per zone" }
            thead { tr { th scope="col" { "Zone" } th scope="col" { "GPUs" } th scope="col" { "Used" } th scope="col" { "Free" } th scope="col" { "Unavailable" } } }
            tbody { @for (z, (cap, used, off)) in &zones {
                tr { th scope="row" { (z) } td { (gpus(*cap)) } td { (gpus(*used)) }
                    td { (gpus(cap.saturating_sub(*used).saturating_sub(*off))) } td { (gpus(*off)) } }
            } }
        }
        h2 id="nodes" { "Nodes" }
        form.filter method="get" action="/nodes" {
            label { "Pool" select name="pool" {
                option value="" { "all" }
                @for p in &snap.pools { option value=(p.id) selected[p.id == pool] { (p.id) } }
            } }
            label { "Health" select name="health" {
                option value="" { "all" }
                option value="unhealthy" selected[health == "unhealthy"] { "not ready or unhealthy GPUs" }
            } }
            button type="submit" { "Filter" }
        }
        (nav)
        table {
            caption { "Nodes" }
            thead { tr { th scope="col" { "Node" } th scope="col" { "Pool" } th scope="col" { "Zone" } th scope="col" { "Health" }
                th scope="col" { "Healthy GPUs" } th scope="col" { "GPUs used" } th scope="col" { "Unhealthy GPUs (XID)" } th scope="col" { "Backend" } } }
            tbody { @for n in rows {
                tr { th scope="row" { (n.name) } td { (n.pool) } td { (n.zone) }
                    td { @if !n.ready { span.badge.bad { "NotReady" } } @else if !n.unhealthy.is_empty() || !n.gpu_error.is_empty() { span.badge.warn { "Degraded" } } @else { span.badge.ok { "Ready" } } }
                    td { (n.healthy_gpus) " of " (n.gpus) }
                    td { (gpus(n.used_milli)) }
                    td { @if n.unhealthy.is_empty() && n.gpu_error.is_empty() { span.muted { "none" } } @else {
                        ul { @for u in &n.unhealthy { li { "GPU " (u) } } @if !n.gpu_error.is_empty() { li { (n.gpu_error) } } }
                    } }
                    td { (n.backend) }
                }
            } }
        }
    };
    layout("/nodes", "Pools and nodes", snap, body)
}

/// The queues and jobs page.
pub(crate) fn jobs(snap: &Snapshot, q: &Query) -> String {
    super::pages_jobs::jobs(snap, q)
}
