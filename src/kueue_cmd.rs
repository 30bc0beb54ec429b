//! `sovra kueue`: Kueue `ResourceFlavor` objects, one per Sovra pool (or per pool a residency class permits), and
//! optionally a `ClusterQueue` skeleton with one flavor per pool, so that Kueue quotas can be set per sovereign
//! pool while Sovra keeps deciding residency, nodes, packing and gangs (docs/kubernetes.md, "Kueue").
//!
//! A flavor selects its pool's nodes by the label the scheduler extender reads a node's pool from,
//! `node-restriction.kubernetes.io/sovra-pool`. The cluster file declares no taints, so the flavors carry no
//! `nodeTaints` or `tolerations`; a pool whose nodes are tainted needs them added by hand.

use crate::{Failure, Output, load_cluster};
use sovra_domain::{ClusterConfig, GPU_MILLI, Pool, Purpose, satisfies};
use std::fmt::Write as _;
use std::path::PathBuf;

/// The node label that puts a node in a Sovra pool (the extender's `POOL_LABEL`; a test checks they agree).
pub const POOL_LABEL: &str = "node-restriction.kubernetes.io/sovra-pool";

/// The Kueue API version to write (the `ResourceFlavor` and `ClusterQueue` fields used are the same in both).
/// The default is `v1beta2`: recent Kueue releases no longer serve `v1beta1`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum KueueApi {
    /// `kueue.x-k8s.io/v1beta2` (current Kueue).
    V1beta2,
    /// `kueue.x-k8s.io/v1beta1` (Kueue releases from before v1beta2).
    V1beta1,
}

impl KueueApi {
    fn group_version(self) -> &'static str {
        match self {
            KueueApi::V1beta2 => "kueue.x-k8s.io/v1beta2",
            KueueApi::V1beta1 => "kueue.x-k8s.io/v1beta1",
        }
    }
}

/// The arguments of `sovra kueue`.
#[derive(clap::Args)]
pub struct KueueArgs {
    /// Cluster file (zones, pools, residency classes). Default: the built-in example.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Only the pools whose zone satisfies this residency class.
    #[arg(long)]
    class: Option<String>,
    /// Also print a ClusterQueue skeleton of this name, with one flavor per printed pool and the pool's
    /// configured capacity as nominal quota.
    #[arg(long, value_name = "NAME")]
    cluster_queue: Option<String>,
    /// Kueue API version.
    #[arg(long, value_enum, default_value_t = KueueApi::V1beta2)]
    api_version: KueueApi,
    /// Output format: text is YAML (for `kubectl apply -f -`); json is one `v1` List.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn bad(message: String) -> Failure {
    Failure { code: 2, message }
}

/// A DNS-1123 label (object names and label values both accept it): 1..=63 of `[a-z0-9-]`, alphanumeric ends.
fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Capacity of a pool as the cluster file declares it: CPU (milli), memory (MiB), whole GPUs.
fn capacity(cluster: &ClusterConfig, pool: &str) -> (u64, u64, u64) {
    cluster
        .nodes
        .iter()
        .filter(|n| n.pool == pool)
        .fold((0, 0, 0), |(c, m, g), n| (c + n.cpu_milli, m + n.memory_mib, g + n.gpus.len() as u64))
}

fn purpose(p: Purpose) -> &'static str {
    match p {
        Purpose::Training => "training",
        Purpose::Inference => "inference",
    }
}

/// The pools to print: all, or those whose zone satisfies `class`; each checked to be usable as a Kueue name.
fn pools<'a>(cluster: &'a ClusterConfig, class: Option<&str>) -> Result<Vec<&'a Pool>, Failure> {
    let chosen: Vec<&Pool> = match class {
        None => cluster.pools.iter().collect(),
        Some(name) => {
            let Some(c) = cluster.residency_classes.iter().find(|c| c.name == name) else {
                let known: Vec<&str> = cluster.residency_classes.iter().map(|c| c.name.as_str()).collect();
                return Err(bad(format!(
                    "--class {name}: no such residency class in the cluster file; known: {}",
                    known.join(", ")
                )));
            };
            cluster.pools.iter().filter(|p| cluster.zones.iter().any(|z| z.id == p.zone && satisfies(z, c))).collect()
        }
    };
    for p in &chosen {
        if !dns_label(&p.id) {
            return Err(bad(format!(
                "pool {:?}: a Kueue ResourceFlavor name and a label value must be 1 to 63 lower-case letters, digits or '-' (starting and ending with a letter or digit); rename the pool in the cluster file",
                p.id
            )));
        }
    }
    Ok(chosen)
}

fn flavor_yaml(out: &mut String, api: KueueApi, cluster: &ClusterConfig, p: &Pool, class: Option<&str>) {
    let zone = cluster.zones.iter().find(|z| z.id == p.zone);
    let _ = writeln!(out, "---");
    if let Some(z) = zone {
        let certs: Vec<&str> = z.certifications.iter().map(String::as_str).collect();
        let line = format!(
            "# pool {} ({}) in zone {}: {} {}, jurisdiction {}, operator {} (headquartered in {}), certifications [{}]",
            p.id,
            purpose(p.purpose),
            z.id,
            z.country,
            z.region,
            z.jurisdiction,
            z.operator,
            z.operator_hq,
            certs.join(", ")
        );
        let _ = writeln!(out, "{}", line.replace(['\n', '\r'], " "));
    }
    let _ = writeln!(out, "apiVersion: {}", api.group_version());
    let _ = writeln!(out, "kind: ResourceFlavor");
    let _ = writeln!(out, "metadata:");
    let _ = writeln!(out, "  name: {}", p.id);
    let _ = writeln!(out, "  labels:");
    let _ = writeln!(out, "    app.kubernetes.io/managed-by: sovra");
    let _ = writeln!(out, "  annotations:");
    let _ = writeln!(out, "    sovra.io/zone: {}", quoted(&p.zone));
    let _ = writeln!(out, "    sovra.io/purpose: {}", purpose(p.purpose));
    if let Some(c) = class {
        let _ = writeln!(out, "    sovra.io/permitted-for-class: {}", quoted(c));
    }
    let _ = writeln!(out, "spec:");
    let _ = writeln!(out, "  nodeLabels:");
    let _ = writeln!(out, "    {POOL_LABEL}: {}", p.id);
}

fn flavor_json(api: KueueApi, p: &Pool, class: Option<&str>) -> serde_json::Value {
    let mut annotations = serde_json::json!({"sovra.io/zone": p.zone, "sovra.io/purpose": purpose(p.purpose)});
    if let Some(c) = class {
        annotations["sovra.io/permitted-for-class"] = c.into();
    }
    serde_json::json!({"apiVersion": api.group_version(), "kind": "ResourceFlavor",
        "metadata": {"name": p.id, "labels": {"app.kubernetes.io/managed-by": "sovra"}, "annotations": annotations},
        "spec": {"nodeLabels": {POOL_LABEL: p.id}}})
}

/// The resources a Sovra pool offers, with the pool's configured capacity: (name, quantity).
fn quotas(cluster: &ClusterConfig, pool: &str) -> [(&'static str, String); 4] {
    let (cpu, mem, gpus) = capacity(cluster, pool);
    [
        ("cpu", format!("{cpu}m")),
        ("memory", format!("{mem}Mi")),
        ("nvidia.com/gpu", gpus.to_string()),
        ("sovra.io/gpu-milli", (gpus * u64::from(GPU_MILLI)).to_string()),
    ]
}

fn queue_json(api: KueueApi, name: &str, cluster: &ClusterConfig, pools: &[&Pool]) -> serde_json::Value {
    let flavors: Vec<serde_json::Value> = pools
        .iter()
        .map(|p| {
            let resources: Vec<serde_json::Value> = quotas(cluster, &p.id)
                .into_iter()
                .map(|(r, q)| serde_json::json!({"name": r, "nominalQuota": q}))
                .collect();
            serde_json::json!({"name": p.id, "resources": resources})
        })
        .collect();
    serde_json::json!({"apiVersion": api.group_version(), "kind": "ClusterQueue",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "sovra"}},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{
            "coveredResources": quotas(cluster, "").map(|(r, _)| r), "flavors": flavors}]}})
}

fn queue_yaml(out: &mut String, api: KueueApi, name: &str, cluster: &ClusterConfig, pools: &[&Pool]) {
    let _ = writeln!(out, "---");
    let _ = writeln!(out, "# A skeleton: nominal quotas are the pools' capacity in the cluster file; set your own.");
    let _ = writeln!(
        out,
        "# Whole GPUs and shares (1000 gpu-milli = 1 GPU) draw on the same GPUs: split each pool between them."
    );
    let _ = writeln!(out, "# Kueue admits per flavor (= per sovereign pool); Sovra still checks residency at filter.");
    let _ = writeln!(out, "apiVersion: {}", api.group_version());
    let _ = writeln!(out, "kind: ClusterQueue");
    let _ = writeln!(out, "metadata:");
    let _ = writeln!(out, "  name: {}", quoted(name));
    let _ = writeln!(out, "  labels:");
    let _ = writeln!(out, "    app.kubernetes.io/managed-by: sovra");
    let _ = writeln!(out, "spec:");
    let _ = writeln!(out, "  namespaceSelector: {{}}   # every namespace; narrow it to the namespaces of one class");
    let _ = writeln!(out, "  resourceGroups:");
    let covered: Vec<&str> = quotas(cluster, "").iter().map(|(r, _)| *r).collect();
    let _ = writeln!(out, "    - coveredResources: [{}]", covered.join(", "));
    let _ = writeln!(out, "      flavors:");
    for p in pools {
        let _ = writeln!(out, "        - name: {}", p.id);
        let _ = writeln!(out, "          resources:");
        for (r, q) in quotas(cluster, &p.id) {
            let _ = writeln!(out, "            - {{name: {r}, nominalQuota: {}}}", quoted(&q));
        }
    }
}

/// Runs `sovra kueue`: 0 when it printed, 1 when the class permits no pool, 2 on bad input.
pub fn run(a: KueueArgs) -> Result<u8, Failure> {
    let cluster = load_cluster(a.config.as_ref())?;
    let class = a.class.as_deref();
    let pools = pools(&cluster, class)?;
    if let Some(q) = &a.cluster_queue
        && (q.is_empty() || q.len() > 253 || !q.split('.').all(dns_label))
    {
        return Err(bad(format!(
            "--cluster-queue {q:?}: a Kueue object name is a DNS subdomain (lower-case letters, digits, '-' and '.')"
        )));
    }
    if pools.is_empty() {
        eprintln!(
            "error: residency class {} permits no pool of the cluster file (no zone satisfies it); nothing to print",
            class.unwrap_or_default()
        );
        return Ok(1);
    }
    match a.output {
        Output::Json => {
            let mut items: Vec<serde_json::Value> =
                pools.iter().map(|p| flavor_json(a.api_version, p, class)).collect();
            if let Some(q) = &a.cluster_queue {
                items.push(queue_json(a.api_version, q, &cluster, &pools));
            }
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
        }
        Output::Text => {
            let mut out = String::new();
            let scope = match class {
                Some(c) => format!("the {} pool(s) whose zone satisfies residency class {c}", pools.len()),
                None => format!("all {} pool(s)", pools.len()),
            };
            let _ = writeln!(out, "# Kueue ResourceFlavors for {scope}, generated by `sovra kueue`.");
            for p in &pools {
                flavor_yaml(&mut out, a.api_version, &cluster, p, class);
            }
            if let Some(q) = &a.cluster_queue {
                queue_yaml(&mut out, a.api_version, q, &cluster, &pools);
            }
            print!("{out}");
        }
    }
    Ok(0)
}
