//! `sovra kueue`: the ResourceFlavors (one per pool, or per pool a class permits) select the pool's nodes by the
//! extender's pool label, carry the zone, and the ClusterQueue skeleton lists one flavor per pool; bad input is
//! refused naming the flag.

use serde_yaml_ng::Value;
use sovra_domain::{ClusterConfig, satisfies};
use std::path::Path;
use std::process::{Command, Output};

const POOL_LABEL: &str = "node-restriction.kubernetes.io/sovra-pool";

fn sovra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra")).args(args).output().expect("the sovra binary runs")
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster.yaml").display().to_string()
}

fn yaml_docs(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn names(docs: &[Value], kind: &str) -> Vec<String> {
    docs.iter().filter(|d| d["kind"] == kind).map(|d| d["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

fn cluster() -> ClusterConfig {
    ClusterConfig::load(Path::new(&example())).unwrap()
}

#[test]
fn one_flavor_per_pool_selecting_its_nodes_by_the_pool_label() {
    let docs = yaml_docs(&sovra(&["kueue", "--config", &example()]));
    let c = cluster();
    let pools: Vec<String> = c.pools.iter().map(|p| p.id.clone()).collect();
    assert_eq!(names(&docs, "ResourceFlavor"), pools);
    for d in &docs {
        assert_eq!(d["apiVersion"], "kueue.x-k8s.io/v1beta2");
        let name = d["metadata"]["name"].as_str().unwrap();
        let pool = c.pools.iter().find(|p| p.id == name).unwrap();
        let labels = d["spec"]["nodeLabels"].as_mapping().unwrap();
        assert_eq!(labels.len(), 1);
        assert_eq!(d["spec"]["nodeLabels"][POOL_LABEL].as_str(), Some(name));
        assert_eq!(d["metadata"]["annotations"]["sovra.io/zone"].as_str(), Some(pool.zone.as_str()));
        assert!(d["spec"].get("nodeTaints").is_none() && d["spec"].get("tolerations").is_none());
    }
    assert!(names(&docs, "ClusterQueue").is_empty());
}

#[test]
fn with_a_class_only_the_pools_whose_zone_satisfies_it() {
    let c = cluster();
    for class in &c.residency_classes {
        let want: Vec<String> = c
            .pools
            .iter()
            .filter(|p| c.zones.iter().any(|z| z.id == p.zone && satisfies(z, class)))
            .map(|p| p.id.clone())
            .collect();
        let docs = yaml_docs(&sovra(&["kueue", "-c", &example(), "--class", &class.name]));
        assert_eq!(names(&docs, "ResourceFlavor"), want, "{}", class.name);
    }
    // The example's point: eu-restricted keeps the US-owned German region out.
    let docs = yaml_docs(&sovra(&["kueue", "-c", &example(), "--class", "eu-restricted"]));
    let got = names(&docs, "ResourceFlavor");
    assert!(got.contains(&"de-fra-c5-train".to_string()) && !got.iter().any(|p| p.starts_with("de-hyper")), "{got:?}");
    let docs = yaml_docs(&sovra(&["kueue", "-c", &example(), "--class", "fr-health"]));
    assert_eq!(names(&docs, "ResourceFlavor"), ["fr-par-train", "fr-par-infer"]);
}

#[test]
fn the_cluster_queue_skeleton_has_one_flavor_per_pool_with_its_capacity() {
    let docs = yaml_docs(&sovra(&["kueue", "-c", &example(), "--class", "fr-health", "--cluster-queue", "health"]));
    assert_eq!(names(&docs, "ClusterQueue"), ["health"]);
    let q = docs.iter().find(|d| d["kind"] == "ClusterQueue").unwrap();
    let group = &q["spec"]["resourceGroups"][0];
    let covered: Vec<&str> =
        group["coveredResources"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(covered, ["cpu", "memory", "nvidia.com/gpu", "sovra.io/gpu-milli"]);
    let flavors = group["flavors"].as_sequence().unwrap();
    let c = cluster();
    assert_eq!(flavors.len(), 2);
    for f in flavors {
        let pool = f["name"].as_str().unwrap();
        let gpus: usize = c.nodes.iter().filter(|n| n.pool == pool).map(|n| n.gpus.len()).sum();
        let cpu: u64 = c.nodes.iter().filter(|n| n.pool == pool).map(|n| n.cpu_milli).sum();
        let r = f["resources"].as_sequence().unwrap();
        assert_eq!(r.len(), covered.len());
        assert_eq!(r[0]["nominalQuota"].as_str().unwrap(), format!("{cpu}m"));
        assert_eq!(r[2]["nominalQuota"].as_str().unwrap(), gpus.to_string());
        assert_eq!(r[3]["nominalQuota"].as_str().unwrap(), (gpus * 1000).to_string());
    }
}

#[test]
fn json_and_the_older_api_version_say_the_same() {
    let o = sovra(&["kueue", "-c", &example(), "--class", "de-c5", "--cluster-queue", "de", "-o", "json"]);
    assert!(o.status.success());
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let yaml = yaml_docs(&sovra(&["kueue", "-c", &example(), "--class", "de-c5", "--cluster-queue", "de"]));
    let from_yaml: serde_json::Value = serde_json::to_value(&yaml).unwrap();
    assert_eq!(&list["items"], &from_yaml);
    let old = yaml_docs(&sovra(&["kueue", "-c", &example(), "--api-version", "v1beta1"]));
    assert!(old.iter().all(|d| d["apiVersion"] == "kueue.x-k8s.io/v1beta1"));
}

#[test]
fn the_pool_label_is_the_one_the_extender_reads() {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scheduler/extender/src/cache.rs")).unwrap();
    assert!(src.contains(&format!("pub const POOL_LABEL: &str = \"{POOL_LABEL}\";")), "extender's POOL_LABEL changed");
}

#[test]
fn bad_input_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let o = sovra(&["kueue", "-c", &example(), "--class", "mars"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("--class mars") && err.contains("known: fr-health"), "{err}");
    assert!(o.stdout.is_empty());
    let o = sovra(&["kueue", "-c", "/nonexistent/cluster.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/cluster.yaml"));
    let o = sovra(&["kueue", "-c", &example(), "--cluster-queue", "Not_A_Name"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cluster-queue"));
    // A pool id Kubernetes would not take as a name or label value.
    let upper = dir.path().join("upper.yaml");
    std::fs::write(&upper, std::fs::read_to_string(example()).unwrap().replace("fr-par-train", "FR_Par_Train"))
        .unwrap();
    let o = sovra(&["kueue", "-c", upper.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("pool \"FR_Par_Train\""));
    assert!(o.stdout.is_empty());
    // A class that no zone satisfies: nothing printed, exit 1.
    let text = std::fs::read_to_string(example()).unwrap().replace(
        "residency_classes:\n",
        "residency_classes:\n  - name: mars-only\n    description: nowhere on earth\n    countries: [MA]\n",
    );
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, text).unwrap();
    let o = sovra(&["kueue", "-c", path.to_str().unwrap(), "--class", "mars-only"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty() && String::from_utf8_lossy(&o.stderr).contains("permits no pool"));
}
