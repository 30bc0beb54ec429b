//! Legal what-if (`sovra plan --what-if CHANGE.yaml`): apply a change of the legal facts — a zone loses a
//! certification, an operator becomes foreign-owned, a zone is down, a class tightens — and report what it breaks,
//! through the same engine the scheduler runs:
//! 1. the jobs are placed on today's cluster (what runs and what waits);
//! 2. the engine is restored on the changed cluster: placements that no longer satisfy their class (or sit in a
//!    zone that is down) are requeued, exactly as a live `sovra reload` does, and one cycle re-homes what it can;
//! 3. what stays unplaced is either without any compliant home (no zone of the changed cluster satisfies its class
//!    with a pool of its kind) or short of capacity there: the GPUs to add, per class, are its demand;
//! 4. model versions are checked where they sit (registry and inference data zones) against their class.
//!
//! The change file (YAML; unknown fields refused, errors name the field):
//! ```yaml
//! changes:
//!   - {zone: fr-par-secnum, lose_certifications: [HDS]}
//!   - {zone: de-fra-c5, operator_hq: US}          # the operator becomes foreign-owned
//!   - {zone: nl-ams-general, down: true}
//!   - {class: fr-health, add_certifications: [C5], countries: [FR]}   # a class tightens
//! ```

use serde::{Deserialize, Serialize};
use sovra_domain::{ClusterConfig, GPU_MILLI, Job, PolicySpec};
use sovra_engine::{Engine, queues_of};
use std::collections::{BTreeMap, BTreeSet};

/// One change as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The zone it changes (exclusive with `class`).
    pub zone: Option<String>,
    /// The residency class it changes (exclusive with `zone`).
    pub class: Option<String>,
    /// Zone: certifications it loses.
    #[serde(default)]
    pub lose_certifications: Vec<String>,
    /// Zone: certifications it gains; class: certifications it now requires.
    #[serde(default)]
    pub add_certifications: Vec<String>,
    /// Zone: the operator's new headquarters country (e.g. `US`: now reachable by the CLOUD Act).
    pub operator_hq: Option<String>,
    /// Zone: the new operator's name.
    pub operator: Option<String>,
    /// Zone: down (its nodes hold nothing).
    #[serde(default)]
    pub down: bool,
    /// Class: the countries it now allows (replaces the list).
    pub countries: Option<Vec<String>>,
    /// Class: the jurisdictions it now allows.
    pub jurisdictions: Option<Vec<String>>,
    /// Class: the operator headquarters it now allows.
    pub operator_hq_in: Option<Vec<String>>,
    /// Class: the zones it now allows (an allow-list).
    pub zones: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeFile {
    changes: Vec<Change>,
}

/// Reads a change file; errors name the file and field.
pub fn parse(name: &str, text: &str, cluster: &ClusterConfig) -> Result<Vec<Change>, String> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let f: ChangeFile =
        serde_path_to_error::deserialize(de).map_err(|e| format!("{name}: field `{}`: {}", e.path(), e.inner()))?;
    if f.changes.is_empty() {
        return Err(format!("{name}: field `changes`: list at least one change"));
    }
    for (i, c) in f.changes.iter().enumerate() {
        let at = |field: &str| format!("{name}: field `changes[{i}].{field}`");
        let zone_fields =
            !c.lose_certifications.is_empty() || c.operator_hq.is_some() || c.operator.is_some() || c.down;
        let class_fields =
            c.countries.is_some() || c.jurisdictions.is_some() || c.operator_hq_in.is_some() || c.zones.is_some();
        match (&c.zone, &c.class) {
            (Some(z), None) => {
                if cluster.zone(z).is_none() {
                    return Err(format!("{}: no zone `{z}` in the cluster file", at("zone")));
                }
                if class_fields {
                    return Err(format!(
                        "{}: countries, jurisdictions, operator_hq_in and zones change a class",
                        at("zone")
                    ));
                }
            }
            (None, Some(k)) => {
                if cluster.class(k).is_none() {
                    return Err(format!("{}: no residency class `{k}` in the cluster file", at("class")));
                }
                if zone_fields {
                    return Err(format!(
                        "{}: lose_certifications, operator, operator_hq and down change a zone",
                        at("class")
                    ));
                }
            }
            _ => return Err(format!("{name}: field `changes[{i}]`: name exactly one `zone` or `class`")),
        }
        if !zone_fields && !class_fields && c.add_certifications.is_empty() {
            return Err(format!("{name}: field `changes[{i}]`: it changes nothing"));
        }
    }
    Ok(f.changes)
}

/// The cluster after the changes, and the zones that are down.
pub fn apply(cluster: &ClusterConfig, changes: &[Change]) -> (ClusterConfig, BTreeSet<String>) {
    let mut c = cluster.clone();
    let mut down = BTreeSet::new();
    for ch in changes {
        if let Some(id) = &ch.zone
            && let Some(z) = c.zones.iter_mut().find(|z| &z.id == id)
        {
            for cert in &ch.lose_certifications {
                z.certifications.remove(cert);
            }
            z.certifications.extend(ch.add_certifications.iter().cloned());
            if let Some(hq) = &ch.operator_hq {
                z.operator_hq = hq.clone();
            }
            if let Some(op) = &ch.operator {
                z.operator = op.clone();
            }
            if ch.down {
                down.insert(id.clone());
            }
        }
        if let Some(name) = &ch.class
            && let Some(k) = c.residency_classes.iter_mut().find(|k| &k.name == name)
        {
            k.certifications.extend(ch.add_certifications.iter().cloned());
            k.certifications.sort();
            k.certifications.dedup();
            for (field, value) in [
                (&mut k.countries, &ch.countries),
                (&mut k.jurisdictions, &ch.jurisdictions),
                (&mut k.operator_hq_in, &ch.operator_hq_in),
                (&mut k.zones, &ch.zones),
            ] {
                if value.is_some() {
                    *field = value.clone();
                }
            }
        }
    }
    (c, down)
}

/// A model version where it sits, as `sovra model list -o json` prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelVersion {
    /// Name.
    pub model: String,
    /// Digest.
    pub digest: String,
    /// Residency class of its training data.
    pub residency_class: String,
    /// Its data zones.
    #[serde(default)]
    pub locations: Vec<ModelLocation>,
}

/// One data zone of a version.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelLocation {
    /// The zone.
    pub zone: String,
    /// The stage.
    pub stage: String,
}

/// A job the change affects.
#[derive(Debug, Clone, Serialize)]
pub struct AffectedJob {
    /// Its name.
    pub name: String,
    /// Its class.
    pub class: String,
    /// `running` (placed today) or `queued`.
    pub was: String,
    /// Where its replicas are today (zones).
    pub zones: Vec<String>,
    /// Why it is not compliant any more.
    pub why: Vec<String>,
    /// After re-homing: `re-homed in Z`, `no compliant home`, or `short of capacity`.
    pub outcome: String,
    /// GPUs it asks (replicas × GPUs per replica; shares count in thousandths).
    pub gpus: f64,
}

/// A model version the change affects.
#[derive(Debug, Clone, Serialize)]
pub struct AffectedModel {
    /// `name@digest` (12 digits).
    pub version: String,
    /// Its class.
    pub class: String,
    /// The data zone (`zone/stage`) now failing the class.
    pub data_zone: String,
    /// Why.
    pub why: Vec<String>,
    /// Whether some zone of the changed cluster still satisfies its class.
    pub compliant_home_left: bool,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The changes, in words.
    pub changes: Vec<String>,
    /// Jobs that become non-compliant (running) or lose their last compliant pool (queued).
    pub jobs: Vec<AffectedJob>,
    /// Model versions sitting in data zones that now fail their class.
    pub models: Vec<AffectedModel>,
    /// Per class: GPUs to add in a zone that satisfies it to re-home the jobs that could not be, and the zones that
    /// do (none: a new compliant zone is needed).
    pub gpus_to_add: BTreeMap<String, (f64, Vec<String>)>,
}

fn describe(c: &Change) -> String {
    let mut parts = Vec::new();
    if let Some(z) = &c.zone {
        parts.push(format!("zone {z}"));
    }
    if let Some(k) = &c.class {
        parts.push(format!("class {k}"));
    }
    if !c.lose_certifications.is_empty() {
        parts.push(format!("loses {}", c.lose_certifications.join(", ")));
    }
    if !c.add_certifications.is_empty() {
        parts.push(format!(
            "{} {}",
            if c.class.is_some() { "requires" } else { "gains" },
            c.add_certifications.join(", ")
        ));
    }
    if let Some(hq) = &c.operator_hq {
        parts.push(format!("operator owned from {hq}"));
    }
    if c.down {
        parts.push("down".into());
    }
    for (what, v) in
        [("countries", &c.countries), ("jurisdictions", &c.jurisdictions), ("operator HQ", &c.operator_hq_in)]
    {
        if let Some(v) = v {
            parts.push(format!("{what} [{}]", v.join(", ")));
        }
    }
    parts.join(" ")
}

fn gpus_of(job: &Job) -> f64 {
    f64::from(job.replicas) * job.resources.total_gpu_milli() as f64 / f64::from(GPU_MILLI)
}

/// Evaluates `changes` for `jobs` (placed in order on today's cluster) and `models`.
pub fn evaluate(
    cluster: &ClusterConfig,
    changes: &[Change],
    jobs: Vec<Job>,
    models: &[ModelVersion],
    policy: PolicySpec,
    seed: u64,
) -> Result<Report, String> {
    let (changed, down) = apply(cluster, changes);
    let mut today = Engine::new(cluster, queues_of(cluster), policy.clone(), seed).map_err(|e| e.to_string())?;
    for j in jobs {
        // A job today's cluster refuses is not affected by the change: it never ran.
        let _ = today.submit(j, None);
    }
    today.schedule();
    let records: Vec<_> = today.jobs().cloned().collect();
    let (mut after, _) =
        Engine::restore(&changed, queues_of(&changed), policy, seed, records.clone()).map_err(|e| e.to_string())?;
    let down_nodes: Vec<String> = changed
        .nodes
        .iter()
        .filter(|n| changed.pools.iter().any(|p| p.id == n.pool && down.contains(&p.zone)))
        .map(|n| n.name.clone())
        .collect();
    after.nodes_lost(down_nodes.iter().map(String::as_str));
    after.schedule();
    let homes = |job: &Job| -> Vec<String> {
        let Some(class) = changed.class(&job.residency) else { return Vec::new() };
        changed
            .zones
            .iter()
            .filter(|z| !down.contains(&z.id) && sovra_domain::satisfies(z, class))
            .filter(|z| changed.pools.iter().any(|p| p.zone == z.id && p.purpose == job.kind))
            .map(|z| z.id.clone())
            .collect()
    };
    let mut report = Report {
        changes: changes.iter().map(describe).collect(),
        jobs: Vec::new(),
        models: Vec::new(),
        gpus_to_add: BTreeMap::new(),
    };
    for r in &records {
        if r.state.is_final() {
            continue;
        }
        let was_placed = r.state.holds_resources();
        let zones: Vec<String> = r.placement.iter().flat_map(|d| d.replicas.iter().map(|p| p.zone.clone())).collect();
        let class = changed.class(&r.job.residency);
        let mut why: Vec<String> = Vec::new();
        for z in zones.iter().collect::<BTreeSet<_>>() {
            if down.contains(z) {
                why.push(format!("zone {z} is down"));
            } else if let (Some(c), Some(zone)) = (class, changed.zone(z)) {
                why.extend(c.violations(zone).into_iter().map(|v| format!("zone {z}: {}", v.message)));
            }
        }
        let home = homes(&r.job);
        let queued_and_stranded = !was_placed && home.is_empty();
        if why.is_empty() && !queued_and_stranded {
            continue;
        }
        if queued_and_stranded {
            why.push(format!("no zone satisfies {} with a {} pool any more", r.job.residency, r.job.kind));
        }
        let now = after.job(r.id);
        let outcome = match now {
            Some(a) if a.state.holds_resources() => {
                let z: BTreeSet<String> =
                    a.placement.iter().flat_map(|d| d.replicas.iter().map(|p| p.zone.clone())).collect();
                format!("re-homed in {}", z.into_iter().collect::<Vec<_>>().join(", "))
            }
            _ if home.is_empty() => {
                report.gpus_to_add.entry(r.job.residency.clone()).or_insert((0.0, Vec::new())).0 += gpus_of(&r.job);
                "no compliant home".into()
            }
            _ => {
                let e = report.gpus_to_add.entry(r.job.residency.clone()).or_insert((0.0, home.clone()));
                e.0 += gpus_of(&r.job);
                "short of capacity".into()
            }
        };
        report.jobs.push(AffectedJob {
            name: r.job.name.clone(),
            class: r.job.residency.clone(),
            was: if was_placed { "running" } else { "queued" }.into(),
            zones: zones.into_iter().collect::<BTreeSet<_>>().into_iter().collect(),
            why,
            outcome,
            gpus: gpus_of(&r.job),
        });
    }
    for v in models {
        let Some(class) = changed.class(&v.residency_class) else { continue };
        let left = changed.zones.iter().any(|z| !down.contains(&z.id) && sovra_domain::satisfies(z, class));
        for l in v.locations.iter().filter(|l| l.stage != "training") {
            let Some(zone) = changed.zone(&l.zone) else { continue };
            let mut why: Vec<String> = class.violations(zone).into_iter().map(|x| x.message).collect();
            if down.contains(&l.zone) {
                why.push(format!("zone {} is down", l.zone));
            }
            if !why.is_empty() {
                report.models.push(AffectedModel {
                    version: format!("{}@{}", v.model, v.digest.chars().take(12).collect::<String>()),
                    class: v.residency_class.clone(),
                    data_zone: format!("{}/{}", l.zone, l.stage),
                    why,
                    compliant_home_left: left,
                });
            }
        }
    }
    Ok(report)
}
