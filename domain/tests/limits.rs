//! Issue #11, bounded input sizes: every size a job or cluster file gives is checked against the documented limits
//! of `sovra_domain::limits`, with a problem naming the field and the limit.

use sovra_domain::limits::{MAX_CPU_MILLI, MAX_LIST_LEN, MAX_NAME_LEN, MAX_REPLICAS};
use sovra_domain::{ClusterConfig, jobs_from_yaml};

fn cluster(zone_id: &str, node_cpu: &str, extra: &str) -> String {
    format!(
        "zones: [{{id: {zone_id}, country: DE, region: r, jurisdiction: EU, operator: o, operator_hq: DE}}]\n\
         pools: [{{id: p, zone: {zone_id}, purpose: training}}]\n\
         nodes: [{{name: n, pool: p, cpu_milli: {node_cpu}, memory_mib: 1}}]\n{extra}"
    )
}

#[test]
fn replicas_over_limit_is_a_problem_not_an_allocation() {
    let job = |r: u64| {
        format!("name: j\nkind: training\nresidency: r\nreplicas: {r}\nresources: {{cpu_milli: 1, memory_mib: 1}}\n")
    };
    assert_eq!(jobs_from_yaml("j.yaml", &job(MAX_REPLICAS)).unwrap()[0].replicas as u64, MAX_REPLICAS);
    let e = jobs_from_yaml("j.yaml", &job(4_000_000_000)).unwrap_err().to_string();
    assert_eq!(e, "j.yaml: replicas: 4000000000 is over the limit of 10000 replicas per job; split the job");
}

#[test]
fn cluster_sizes_over_limits_name_the_field() {
    let long = "z".repeat(MAX_NAME_LEN + 1);
    let e = ClusterConfig::from_yaml("c.yaml", &cluster(&long, "1", "")).unwrap_err().to_string();
    assert!(e.contains("c.yaml: zones[0].id: is 254 bytes long; at most 253 are allowed"), "{e}");
    let e = ClusterConfig::from_yaml("c.yaml", &cluster("z", &(MAX_CPU_MILLI + 1).to_string(), "")).unwrap_err();
    assert!(
        e.to_string().contains("nodes[0].cpu_milli: 1000000001 is over the limit of 1000000000 milli-cores"),
        "{e}"
    );
    let classes: Vec<String> = (0..=MAX_LIST_LEN).map(|i| format!("{{name: c{i}}}")).collect();
    let e = ClusterConfig::from_yaml(
        "c.yaml",
        &cluster("z", "1", &format!("residency_classes: [{}]\n", classes.join(","))),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("c.yaml: residency_classes: has 1001 entries; at most 1000 are allowed"), "{e}");
    // Within the limits, the same file loads.
    assert!(ClusterConfig::from_yaml("c.yaml", &cluster("z", &MAX_CPU_MILLI.to_string(), "")).is_ok());
}

#[test]
fn max_feasible_nodes_is_read_and_bounded() {
    let c = ClusterConfig::from_yaml("c.yaml", &cluster("z", "1", "scheduling: {max_feasible_nodes: 256}\n")).unwrap();
    assert_eq!(c.scheduling.max_feasible_nodes, 256);
    let c = ClusterConfig::from_yaml("c.yaml", &cluster("z", "1", "")).unwrap();
    assert_eq!(c.scheduling.max_feasible_nodes, 0, "the default scores every node");
    for (v, want) in
        [("-1", "-1 is negative"), ("1000001", "1000001 is too large; use 0 (score every node) or at most 1000000")]
    {
        let e = ClusterConfig::from_yaml(
            "c.yaml",
            &cluster("z", "1", &format!("scheduling: {{max_feasible_nodes: {v}}}\n")),
        );
        let e = e.unwrap_err().to_string();
        assert!(e.contains(&format!("scheduling.max_feasible_nodes: {want}")), "{e}");
    }
}
