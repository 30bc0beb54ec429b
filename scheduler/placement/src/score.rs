//! Scorers: small pure functions from a feasible node (and the replica's device choice) to an integer in 0..=100.
//! FGD lives in [`crate::fgd`] because it carries a memo; the placer combines scores by weight.

use crate::filter::JobNeeds;
use crate::snapshot::{ClusterState, NodeIdx, NodeSummary, Topology, replica_tag};
use sovra_domain::{GPU_MILLI, NvlinkWish};

/// Best fit (FGD protocol §4 "BestFit"): the node left with the least free CPU and GPU scores highest.
///
/// score = trunc(100 · (1 − [0.5 · (cpu_free − cpu) / max_cpu + 0.5 · (gpu_free − gpu) / max_gpu])), where
/// max_cpu and max_gpu are the largest node's CPU and GPU capacity in the cluster, so nodes of different sizes
/// are compared on one scale. Memory is not scored (as in the protocol); the filter guarantees it fits.
#[inline]
pub fn best_fit(s: &NodeSummary, needs: &JobNeeds, topo: &Topology) -> u32 {
    let cpu_left = (s.cpu_free - needs.cpu) as f64 / topo.max_node_cpu as f64;
    let gpu_left = (f64::from(s.free_total) - f64::from(needs.gpus) * f64::from(needs.milli)).max(0.0)
        / topo.max_node_gpu_milli as f64;
    let v = 100.0 * (1.0 - (0.5 * cpu_left + 0.5 * gpu_left));
    v.clamp(0.0, 100.0) as u32
}

/// Spread (least allocated): the node left with the largest free share of its own CPU and GPU scores highest.
///
/// score = trunc(100 · (0.5 · (cpu_free − cpu) / node_cpu + 0.5 · (gpu_free − gpu) / node_gpu)); a node without
/// GPUs is scored on CPU alone.
#[inline]
pub fn spread(s: &NodeSummary, needs: &JobNeeds, topo: &Topology, node: NodeIdx) -> u32 {
    let info = &topo.nodes[node as usize];
    let cpu = (s.cpu_free - needs.cpu) as f64 / info.cpu_milli.max(1) as f64;
    let v = if info.dev_count == 0 {
        cpu
    } else {
        let gpu_cap = f64::from(info.dev_count) * f64::from(GPU_MILLI);
        let gpu = (f64::from(s.free_total) - f64::from(needs.gpus) * f64::from(needs.milli)).max(0.0) / gpu_cap;
        0.5 * cpu + 0.5 * gpu
    };
    (100.0 * v).clamp(0.0, 100.0) as u32
}

/// Topology: a multi-GPU replica with an NVLink wish scores 100 on nodes where one island holds all its GPUs, 0
/// elsewhere. Every other replica scores 0 everywhere (the scorer then does not change the ranking).
#[inline]
pub fn topology(s: &NodeSummary, needs: &JobNeeds) -> u32 {
    if needs.gpus >= 2 && needs.nvlink != NvlinkWish::None && s.free_whole_island >= needs.gpus { 100 } else { 0 }
}

/// Dot product (FGD protocol §4 "DotProd"): with n = (cpu_free / max_cpu, gpu_free / max_gpu) the node's free
/// share before placement and p = (cpu / max_cpu, gpu / max_gpu) the request, score = trunc(100 · (1 − n·p / 2)):
/// the smallest dot product (the node with the least free where the replica asks most) scores highest.
#[inline]
pub fn dot_product(s: &NodeSummary, needs: &JobNeeds, topo: &Topology) -> u32 {
    let (cpu_scale, gpu_scale) = (topo.max_node_cpu as f64, topo.max_node_gpu_milli as f64);
    let n = (s.cpu_free as f64 / cpu_scale, f64::from(s.free_total) / gpu_scale);
    let p = (needs.cpu as f64 / cpu_scale, f64::from(needs.gpus) * f64::from(needs.milli) / gpu_scale);
    (100.0 * (1.0 - (n.0 * p.0 + n.1 * p.1) / 2.0)).clamp(0.0, 100.0) as u32
}

/// GPU clustering (FGD protocol §4 "GpuClustering"): with L the node's free milli and base =
/// 25 · (max_gpu − L) / max_gpu (integers, multiplied first), a node running only replicas of this replica's tag
/// ([`replica_tag`]) scores base + 75; this tag and others base + 50; no GPU replicas base + 25; only other tags
/// base. CPU-only replicas score 0.
pub fn gpu_clustering(state: &ClusterState, node: NodeIdx, needs: &JobNeeds, topo: &Topology) -> u32 {
    let Some(own) = replica_tag(usize::from(needs.gpus), u32::from(needs.milli)) else { return 0 };
    let max = topo.max_node_gpu_milli;
    let free = u64::from(state.summary(node).free_total).min(max);
    let base = (25 * (max - free) / max) as u32;
    let tags = state.node_tags(node);
    let has_own = tags[own] > 0;
    let has_other = tags.iter().enumerate().any(|(t, &c)| t != own && c > 0);
    base + match (has_own, has_other) {
        (true, false) => 75,
        (true, true) => 50,
        (false, false) => 25,
        (false, true) => 0,
    }
}

/// GPU packing (FGD protocol §4 "GpuPacking", with the clarification of §7): with f fully free and G healthy
/// devices, a fully free node scores max(33 − f, f) (small nodes first); otherwise take, in ascending order of free
/// milli, the first `gpus` devices that fit: if any of them is fully free the score is max(50 − k, 33) for k fully
/// free devices taken, else max(100 − (Σ ⌊free · 100 / 1000⌋) / 10, 50) over the devices taken. CPU-only: 0.
pub fn gpu_packing(state: &ClusterState, node: NodeIdx, needs: &JobNeeds, topo: &Topology) -> u32 {
    if needs.gpus == 0 {
        return 0;
    }
    let s = state.summary(node);
    let (f, g) = (u32::from(s.free_whole), u32::from(s.healthy));
    if f == g {
        return (33u32.saturating_sub(f)).max(f);
    }
    let mut free: Vec<(u16, usize)> = topo
        .device_range(node)
        .filter(|&d| state.device_healthy(d) && needs.model_ok(topo.devices[d].model))
        .map(|d| (state.device_free(d), d))
        .collect();
    free.sort_by_key(|&(f, _)| f); // stable: equal free keeps index order
    let taken: Vec<u16> =
        free.iter().filter(|(f, _)| *f >= needs.milli).take(usize::from(needs.gpus)).map(|&(f, _)| f).collect();
    let whole = taken.iter().filter(|&&f| u32::from(f) == GPU_MILLI).count() as u32;
    if whole > 0 {
        return 50u32.saturating_sub(whole).max(33);
    }
    let sum: u32 = taken.iter().map(|&f| u32::from(f) * 100 / GPU_MILLI).sum();
    100u32.saturating_sub(sum / 10).max(50)
}

/// First fit: 100 for the first node of the fixed seeded node order ([`node_rank`]), falling linearly to 0 for the
/// last. With ties broken by the same order, a policy of `first-fit` alone is first-fit bin packing; combined with
/// FGD at equal weight, a node may win by being early in the order or by fragmenting less, one score point of
/// either being worth the same.
#[inline]
pub fn first_fit(seed: u64, node: NodeIdx) -> u32 {
    first_fit_of_rank(node_rank(seed, node))
}

/// [`first_fit`] of a node whose tie-break rank is `rank` (ranks spread over the whole `u64` range, as
/// [`node_rank`]'s are, or as [`spread_rank`] makes them from a position).
#[inline]
pub fn first_fit_of_rank(rank: u64) -> u32 {
    // The rank's top 32 bits are uniform: map them onto 100..=0.
    100 - (((rank >> 32) * 101) >> 32) as u32
}

/// The tie-break rank of position `pos` in an order of `len` nodes, spread evenly over the `u64` range so that
/// [`first_fit_of_rank`] maps the order onto 100..=0 as it does a seeded one.
#[inline]
pub fn spread_rank(pos: usize, len: usize) -> u64 {
    ((pos as u128 * (u128::from(u64::MAX) + 1)) / len.max(1) as u128) as u64
}

/// SplitMix64: a fast, well-distributed 64-bit mixer (Steele, Lea, Flood 2014). Used for seeded node order and
/// the random scorer, so that results depend only on (seed, job, node) and never on iteration or hash order.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stable hash of a job's name that seeds its random scores, random tie order and random device picks:
/// 64-bit FNV-1a over the name's UTF-8 bytes (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`), computed
/// with the `fnv` crate's hasher fed the raw bytes only. FNV-1a is a fixed, published function, so decisions do not
/// change with the toolchain, platform or process — unlike `std`'s `DefaultHasher` (unspecified, may change between
/// releases) or rustc-hash's `FxHasher`, and unlike `Hash for str` (which appends a terminator byte that is an
/// implementation detail). A unit test pins its value.
pub fn job_hash(name: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(name.as_bytes());
    h.finish()
}

/// Random baseline: a pseudo-random score in 0..=100 per (seed, job, replica, node).
#[inline]
pub fn random(seed: u64, job_hash: u64, replica: u32, node: NodeIdx) -> u32 {
    (mix(seed ^ mix(job_hash ^ mix(u64::from(replica) << 32 | u64::from(node)))) % 101) as u32
}

/// A per-(job, replica) random tie-break rank: with it, the argmax of random scores is uniform over the nodes.
#[inline]
pub fn random_rank(seed: u64, job_hash: u64, replica: u32, node: NodeIdx) -> u64 {
    mix(!seed ^ mix(job_hash.rotate_left(17) ^ mix(u64::from(replica) << 32 | u64::from(node))))
}

/// The seeded tie-break rank of a node: among equal scores the lowest rank wins. A fixed random order per seed,
/// as the FGD simulator's random node-name prefixes give.
#[inline]
pub fn node_rank(seed: u64, node: NodeIdx) -> u64 {
    mix(seed ^ mix(u64::from(node)))
}

#[cfg(test)]
// Table-driven tests: each row's tuple type is spelled out where the table is.
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::snapshot::ClusterState;
    use sovra_domain::ClusterConfig;

    fn topo_8gpu_128cpu() -> std::sync::Arc<Topology> {
        let yaml = r#"
zones: [{id: z, country: FR, region: r, jurisdiction: EU, operator: o, operator_hq: FR, certifications: []}]
pools: [{id: p, zone: z, purpose: training}]
residency_classes: [{name: any}]
nodes:
  - {name: big, pool: p, cpu_milli: 128000, memory_mib: 1024, gpus: {count: 8, model: G, memory_mib: 1}}
  - {name: small, pool: p, cpu_milli: 32000, memory_mib: 1024, gpus: {count: 2, model: G, memory_mib: 1}}
"#;
        let cfg = ClusterConfig::from_yaml("t", yaml).unwrap();
        ClusterState::from_config(&cfg).unwrap().topology().clone()
    }

    fn needs(gpus: u16, milli: u16, cpu: u64, nvlink: NvlinkWish) -> JobNeeds {
        JobNeeds { gpus, milli, cpu, mem: 1, model_mask: None, nvlink }
    }

    fn summary(cpu_free: u64, free_total: u32, free_whole_island: u16) -> NodeSummary {
        NodeSummary { cpu_free, free_total, free_whole_island, ..Default::default() }
    }

    #[test]
    fn best_fit_table() {
        let t = topo_8gpu_128cpu(); // max_cpu = 128000, max_gpu = 8000
        // (cpu_free, gpu_free, replica gpus×milli, cpu) → expected
        let cases = [
            // empty big node, 1 GPU + 8 CPU: left 120000/128000 = .9375, 7000/8000 = .875 → 1 − .90625 → 9
            (128000, 8000, (1, 1000), 8000, 9),
            // nearly full node: left 0 CPU, 0 GPU → 100
            (8000, 1000, (1, 1000), 8000, 100),
            // sharing 500m on a 2-GPU node: left 24000/128000 = .1875, 1500/8000 = .1875 → 100·(1 − .1875) = 81
            (32000, 2000, (1, 500), 8000, 81),
        ];
        for (cpu_free, gpu_free, (g, m), cpu, want) in cases {
            let got = best_fit(&summary(cpu_free, gpu_free, 0), &needs(g, m, cpu, NvlinkWish::None), &t);
            assert_eq!(got, want, "cpu_free {cpu_free} gpu_free {gpu_free}");
        }
    }

    #[test]
    fn spread_table() {
        let t = topo_8gpu_128cpu();
        // big node empty, 1 GPU + 8 CPU: .5·120/128 + .5·7/8 = .46875 + .4375 = .90625 → 90
        assert_eq!(spread(&summary(128000, 8000, 0), &needs(1, 1000, 8000, NvlinkWish::None), &t, 0), 90);
        // small node, left 0 of everything → 0
        assert_eq!(spread(&summary(8000, 1000, 0), &needs(1, 1000, 8000, NvlinkWish::None), &t, 1), 0);
    }

    #[test]
    fn topology_table() {
        // (gpus, wish, largest free island) → score
        for (g, wish, island, want) in [
            (4, NvlinkWish::Prefer, 4, 100),
            (4, NvlinkWish::Prefer, 3, 0),
            (4, NvlinkWish::None, 8, 0),
            (1, NvlinkWish::Prefer, 8, 0),
            (8, NvlinkWish::Require, 8, 100),
        ] {
            assert_eq!(topology(&summary(0, 0, island), &needs(g, 1000, 0, wish)), want);
        }
    }

    #[test]
    fn dot_product_table() {
        let t = topo_8gpu_128cpu(); // scales 128000 CPU, 8000 GPU milli
        // Empty big node, 1 GPU + 8 CPU: n = (1, 1), p = (1/16, 1/8): n·p = .1875 → 100·(1 − .09375) = 90.
        assert_eq!(dot_product(&summary(128000, 8000, 0), &needs(1, 1000, 8000, NvlinkWish::None), &t), 90);
        // Node with a quarter free: n = (.25, .25) → n·p = .046875 → 100·(1 − .0234375) = 97.
        assert_eq!(dot_product(&summary(32000, 2000, 0), &needs(1, 1000, 8000, NvlinkWish::None), &t), 97);
    }

    fn state_with(gpus: u32, taken: &[(u16, u16)]) -> ClusterState {
        let yaml = format!(
            r#"
zones: [{{id: z, country: FR, region: r, jurisdiction: EU, operator: o, operator_hq: FR, certifications: []}}]
pools: [{{id: p, zone: z, purpose: training}}]
residency_classes: [{{name: any}}]
nodes:
  - {{name: n, pool: p, cpu_milli: 128000, memory_mib: 1024, gpus: {{count: {gpus}, model: G, memory_mib: 1}}}}
  - {{name: big, pool: p, cpu_milli: 128000, memory_mib: 1024, gpus: {{count: 8, model: G, memory_mib: 1}}}}
"#
        );
        let mut st = ClusterState::from_config(&ClusterConfig::from_yaml("t", &yaml).unwrap()).unwrap();
        for &(device, milli) in taken {
            let d = crate::Decision {
                job: "x".into(),
                replicas: vec![crate::ReplicaPlacement {
                    replica: 0,
                    node: 0,
                    node_name: "n".into(),
                    pool: "p".into(),
                    zone: "z".into(),
                    devices: vec![crate::DeviceAssignment { device, milli }],
                    cpu_milli: 0,
                    memory_mib: 0,
                    scores: Default::default(),
                    feasible_nodes: 0,
                }],
            };
            st.apply(&d).unwrap();
        }
        st
    }

    #[test]
    fn gpu_packing_table() {
        // (node GPUs, taken (device, milli), request gpus×milli) → score
        let cases: [(u32, &[(u16, u16)], (u16, u16), u32); 6] = [
            (8, &[], (1, 1000), 25),                  // fully free 8-GPU node: max(33 − 8, 8) = 25
            (2, &[], (1, 500), 31),                   // fully free 2-GPU node: max(31, 2) = 31
            (4, &[(0, 300)], (2, 1000), 48),          // takes 2 fully free GPUs: max(50 − 2, 33) = 48
            (4, &[(0, 300)], (1, 500), 100 - 7),      // takes GPU0 (700 free): 100 − 70/10 = 93
            (4, &[(0, 600), (1, 100)], (1, 300), 96), // ascending free: GPU0 (400) first → 100 − 40/10 = 96
            (4, &[(0, 100), (1, 100), (2, 100), (3, 100)], (1, 900), 91), // 900 free → 100 − 90/10 = 91
        ];
        for (gpus, taken, (g, m), want) in cases {
            let st = state_with(gpus, taken);
            let t = st.topology().clone();
            assert_eq!(gpu_packing(&st, 0, &needs(g, m, 1, NvlinkWish::None), &t), want, "{gpus} {taken:?} {g}×{m}");
        }
    }

    #[test]
    fn gpu_clustering_table() {
        // Node 0 has 4 GPUs (max_gpu = 8000 from the 8-GPU node). One 300m share runs on it: L = 3700,
        // base = 25 · (8000 − 3700) / 8000 = 13.
        let st = state_with(4, &[(0, 300)]);
        let t = st.topology().clone();
        assert_eq!(gpu_clustering(&st, 0, &needs(1, 500, 1, NvlinkWish::None), &t), 13 + 75, "only its own tag");
        assert_eq!(gpu_clustering(&st, 0, &needs(1, 1000, 1, NvlinkWish::None), &t), 13, "only other tags");
        // Node 1 is empty: base 0 + 25.
        assert_eq!(gpu_clustering(&st, 1, &needs(2, 1000, 1, NvlinkWish::None), &t), 25);
        assert_eq!(gpu_clustering(&st, 1, &needs(0, 0, 1, NvlinkWish::None), &t), 0, "CPU-only");
    }

    #[test]
    fn first_fit_follows_the_seeded_order() {
        let mut nodes: Vec<NodeIdx> = (0..1000).collect();
        nodes.sort_by_key(|&n| node_rank(5, n));
        let scores: Vec<u32> = nodes.iter().map(|&n| first_fit(5, n)).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "non-increasing along the order");
        assert!(scores[0] >= 99 && *scores.last().unwrap() <= 1, "{} … {}", scores[0], scores.last().unwrap());
    }

    #[test]
    fn random_is_seeded_and_spread_over_the_range() {
        assert_eq!(random(42, 7, 0, 3), random(42, 7, 0, 3));
        let scores: Vec<u32> = (0..1000).map(|n| random(42, 7, 0, n)).collect();
        assert!(scores.iter().all(|&s| s <= 100));
        let mean = scores.iter().sum::<u32>() as f64 / 1000.0;
        assert!((45.0..55.0).contains(&mean), "mean {mean}");
        assert_ne!(random(42, 7, 0, 3), random(43, 7, 0, 3), "seed changes the score");
    }
}
