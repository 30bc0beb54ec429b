//! Fuzzes `ClusterConfig::from_yaml`: it never panics, hangs or allocates without bound, errors name the file, and a
//! configuration it accepts holds the invariants the placement core relies on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sovra_domain::{ClusterConfig, GPU_MILLI};
use std::collections::BTreeSet;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClusterConfig::from_yaml(FILE, text) {
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            assert!(e.to_string().starts_with(FILE), "error does not name the file: {e}");
        }
        Ok(cfg) => check(&cfg),
    }
});

fn check(cfg: &ClusterConfig) {
    let zones: BTreeSet<&str> = cfg.zones.iter().map(|z| z.id.as_str()).collect();
    assert_eq!(zones.len(), cfg.zones.len(), "duplicate zone ids accepted");
    let pools: BTreeSet<&str> = cfg.pools.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(pools.len(), cfg.pools.len(), "duplicate pool ids accepted");
    for p in &cfg.pools {
        assert!(zones.contains(p.zone.as_str()), "pool {} in unknown zone {}", p.id, p.zone);
    }
    let classes: BTreeSet<&str> = cfg.residency_classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(classes.len(), cfg.residency_classes.len(), "duplicate residency classes accepted");
    assert!(cfg.nodes.len() <= 100_000, "{} nodes accepted", cfg.nodes.len());
    let gpus: usize = cfg.nodes.iter().map(|n| n.gpus.len()).sum();
    assert!(gpus <= 250_000, "{gpus} GPUs accepted");
    let mut names = BTreeSet::new();
    for n in &cfg.nodes {
        assert!(names.insert(n.name.as_str()), "duplicate node name {} accepted", n.name);
        assert!(pools.contains(n.pool.as_str()), "node {} in unknown pool {}", n.name, n.pool);
        assert!(n.cpu_milli >= 1 && n.memory_mib >= 1, "node {} without CPU or memory", n.name);
        assert!(n.gpus.len() <= 64, "node {} has {} GPUs", n.name, n.gpus.len());
        // links[i] has bit j set when GPU i lists GPU j as an NVLink peer (at most 64 GPUs, checked above).
        let mut links = [0u64; 64];
        for (i, g) in n.gpus.iter().enumerate() {
            assert!(g.memory_mib >= 1, "GPU {i} of {} without memory", n.name);
            assert!(g.mig.len() <= 7, "GPU {i} of {} has {} MIG instances", n.name, g.mig.len());
            for &peer in &g.nvlink_peers {
                assert!((peer as usize) < n.gpus.len() && peer as usize != i, "GPU {i} of {}: bad peer {peer}", n.name);
                links[i] |= 1 << peer;
            }
        }
        for i in 0..n.gpus.len() {
            for j in 0..n.gpus.len() {
                assert_eq!(links[i] >> j & 1, links[j] >> i & 1, "NVLink {i}-{j} of {} not symmetric", n.name);
            }
        }
    }
    for s in &cfg.scheduling.fgd_target_workload {
        assert!(s.weight >= 1, "weight 0 accepted");
        assert!(s.resources.gpu_milli <= GPU_MILLI, "gpu_milli {} accepted", s.resources.gpu_milli);
        assert_eq!(s.resources.gpus == 0, s.resources.gpu_milli == 0, "gpus and gpu_milli disagree");
    }
}
