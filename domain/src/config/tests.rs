//! Unit tests of the configuration loader's limits and arithmetic.

use super::gpus::mig_profile_memory;
use super::*;

/// A one-zone, one-pool cluster file with the given `nodes:` entries (flow-style YAML, one per line).
fn cluster(nodes: &[String]) -> String {
    let mut text = "zones: [{id: z, country: DE, region: r, jurisdiction: EU, operator: o, operator_hq: DE, \
                    certifications: []}]\npools: [{id: p, zone: z, purpose: training}]\nnodes:\n"
        .to_string();
    for n in nodes {
        text.push_str(&format!("  - {n}\n"));
    }
    text
}

fn errors(text: &str) -> String {
    ClusterConfig::from_yaml("c.yaml", text).unwrap_err().to_string()
}

#[test]
fn mig_profile_memory_too_large_is_a_problem_not_an_overflow() {
    let node = "{name: n, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {model: A100, count: 1, memory_mib: 1, \
                mig: [{profile: 1g.99999999999999999gb}]}}";
    let e = errors(&cluster(&[node.into()]));
    assert!(e.contains("c.yaml: nodes[0].gpus.mig[0].profile: cannot read the memory of profile"), "{e}");
    assert_eq!(mig_profile_memory("3g.40gb"), Some(40 * 1024));
    assert_eq!(mig_profile_memory(&format!("1g.{}gb", u64::MAX / 1024 + 1)), None);
}

#[test]
fn mig_instances_per_gpu_are_capped_over_all_entries() {
    let mig = "[{profile: 1g.10gb, count: 4}, {profile: 2g.20gb, count: 4}]";
    let node = |gpus: &str| format!("{{name: n, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {gpus}}}");
    let uniform = node(&format!("{{model: A100, count: 2, memory_mib: 1, mig: {mig}}}"));
    let e = errors(&cluster(&[uniform]));
    assert!(e.contains("c.yaml: nodes[0].gpus.mig: 8 instances in all; a GPU has at most 7 MIG instances"), "{e}");
    let device = node(&format!("{{devices: [{{model: A100, memory_mib: 1, mig: {mig}}}]}}"));
    let e = errors(&cluster(&[device]));
    assert!(e.contains("nodes[0].gpus.devices[0].mig: 8 instances in all"), "{e}");
    // Seven in two entries is fine.
    let ok = node("{model: A100, count: 1, memory_mib: 1, mig: [{profile: 3g.40gb, count: 2}, {profile: 1g.10gb}]}");
    let c = ClusterConfig::from_yaml("c.yaml", &cluster(&[ok])).unwrap();
    assert_eq!(c.nodes[0].gpus[0].mig.len(), 3);
}

#[test]
fn devices_list_is_capped_at_64_gpus_like_a_uniform_set() {
    let devices = vec!["{model: L4, memory_mib: 1}"; 65].join(", ");
    let node = format!("{{name: n, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {{devices: [{devices}]}}}}");
    let e = errors(&cluster(&[node]));
    assert!(e.contains("c.yaml: nodes[0].gpus.devices: 65 GPUs on one node; at most 64 are supported"), "{e}");
}

#[test]
fn nodes_and_gpus_of_a_file_are_capped_after_expansion() {
    // Entries of 60,000 nodes: each within the per-entry limit, the first two together over MAX_NODES.
    let entry =
        |name: &str, gpus: &str| format!("{{name: {name}, count: 60000, pool: p, cpu_milli: 1, memory_mib: 1{gpus}}}");
    let e = errors(&cluster(&[entry("a", ""), entry("b", ""), entry("c", "")]));
    assert_eq!(
        e,
        "c.yaml: nodes[1].count: this entry brings the file to 120000 nodes; a cluster file may declare at most 100000"
    );
    // 60,000 nodes of 8 GPUs: 480,000 GPUs, over MAX_GPUS.
    let e = errors(&cluster(&[entry("a", ", gpus: {model: H100, count: 8, memory_mib: 1}")]));
    assert_eq!(
        e,
        "c.yaml: nodes[0].count: this entry brings the file to 480000 GPUs; a cluster file may declare at most 250000"
    );
    let big =
        "{name: a, count: 62499, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {model: L4, count: 4, memory_mib: 1}}";
    let single = "{name: s, pool: p, cpu_milli: 1, memory_mib: 1, gpus: {model: H100, count: 8, memory_mib: 1}}";
    let e = errors(&cluster(&[big.into(), single.into()]));
    assert_eq!(
        e,
        "c.yaml: nodes[1]: this entry brings the file to 250004 GPUs; a cluster file may declare at most 250000"
    );
}

#[test]
fn gpus_beyond_u32_are_a_problem_not_truncated() {
    let job = "name: j\nkind: training\nresidency: r\nresources: {gpus: 4294967297, cpu_milli: 1, memory_mib: 1}\n";
    let e = jobs_from_yaml("j.yaml", job).unwrap_err().to_string();
    assert_eq!(
        e,
        "j.yaml: resources.gpus: 4294967297 is over the limit of 64 GPUs per replica (a replica runs on one node); \
         use more replicas"
    );
}
