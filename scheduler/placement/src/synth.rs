//! Seeded synthetic clusters and job streams for benchmarks and load tests.
//!
//! [`cluster`] builds `nodes` 8-GPU nodes over 24 zones in 12 EU countries (half of them run by US-owned
//! operators), each zone with a training and an inference pool, certifications varying by zone, and H100 / A100
//! (NVLink) and L4 nodes. [`jobs`] draws a job stream over the residency classes the cluster defines, with a mix
//! of GPU shares, whole GPUs and multi-GPU replicas. Same arguments → same output.

use crate::score::mix;
use sovra_domain::{
    ClusterConfig, Gpu, Health, Job, Node, NvlinkWish, Pool, Purpose, ResidencyClass, Resources, WorkloadShare, Zone,
};

const COUNTRIES: [&str; 12] = ["FR", "DE", "NL", "IT", "ES", "BE", "PL", "SE", "FI", "AT", "IE", "DK"];
const ZONES: usize = 24;

/// A synthetic cluster of `nodes` nodes with 8 devices each.
pub fn cluster(nodes: usize, seed: u64) -> ClusterConfig {
    let zones: Vec<Zone> = (0..ZONES)
        .map(|i| {
            let country = COUNTRIES[i % COUNTRIES.len()];
            let us_owned = i % 2 == 1;
            let mut certs = vec!["ISO27001"];
            if country == "FR" && !us_owned {
                certs.extend(["SecNumCloud", "HDS"]);
            }
            if country == "DE" {
                certs.push("C5");
            }
            if i % 3 == 0 {
                certs.push("EUCS-high");
            }
            Zone {
                id: format!("{}-{i:02}", country.to_lowercase()),
                country: country.into(),
                region: format!("region-{i}"),
                jurisdiction: "EU".into(),
                operator: if us_owned { format!("hyperscaler-{i}") } else { format!("eu-operator-{i}") },
                operator_hq: if us_owned { "US".into() } else { country.into() },
                certifications: certs.into_iter().map(String::from).collect(),
            }
        })
        .collect();
    let pools: Vec<Pool> = zones
        .iter()
        .flat_map(|z| {
            [Purpose::Training, Purpose::Inference].map(|p| Pool {
                id: format!("{}-{p}", z.id),
                zone: z.id.clone(),
                purpose: p,
            })
        })
        .collect();
    let residency_classes = classes();
    let nodes = (0..nodes)
        .map(|i| {
            let pool = &pools[(mix(seed ^ i as u64) % pools.len() as u64) as usize];
            let training = pool.purpose == Purpose::Training;
            let r = mix(seed.wrapping_add(7) ^ i as u64) % 10;
            let (model, mem, nvlink) = match (training, r) {
                (true, 0..=5) => ("H100-80GB", 81920, true),
                (true, _) => ("A100-80GB", 81920, true),
                (false, 0..=6) => ("L4", 23034, false),
                (false, _) => ("A100-80GB", 81920, true),
            };
            Node {
                name: format!("node-{i:05}"),
                pool: pool.id.clone(),
                cpu_milli: if training { 192_000 } else { 96_000 },
                memory_mib: if training { 2_097_152 } else { 524_288 },
                gpus: (0..8u32)
                    .map(|g| Gpu {
                        uuid: format!("GPU-{i}-{g}"),
                        model: model.into(),
                        memory_mib: mem,
                        numa_node: Some(g / 4),
                        nvlink_peers: if nvlink { (0..8).filter(|&p| p != g).collect() } else { vec![] },
                        health: Health::Healthy,
                        mig: vec![],
                    })
                    .collect(),
            }
        })
        .collect();
    ClusterConfig { zones, pools, residency_classes, nodes, ..Default::default() }
}

/// The residency classes of synthetic clusters: `eu-any`, `eu-restricted` (EU jurisdiction, EU-owned operator),
/// `fr-health` (FR with HDS and SecNumCloud), `de-c5` (DE with C5), `eucs-high`.
pub fn classes() -> Vec<ResidencyClass> {
    let list = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    vec![
        ResidencyClass { name: "eu-any".into(), jurisdictions: list(&["EU"]), ..Default::default() },
        ResidencyClass {
            name: "eu-restricted".into(),
            jurisdictions: list(&["EU"]),
            operator_hq_in: list(&["EU"]),
            ..Default::default()
        },
        ResidencyClass {
            name: "fr-health".into(),
            countries: list(&["FR"]),
            certifications: vec!["HDS".into(), "SecNumCloud".into()],
            ..Default::default()
        },
        ResidencyClass {
            name: "de-c5".into(),
            countries: list(&["DE"]),
            certifications: vec!["C5".into()],
            ..Default::default()
        },
        ResidencyClass { name: "eucs-high".into(), certifications: vec!["EUCS-high".into()], ..Default::default() },
    ]
}

/// The replica shapes of [`jobs`] with their weights: the target workload to hand FGD.
pub fn workload() -> Vec<WorkloadShare> {
    SHAPES
        .iter()
        .map(|&(gpus, milli, cpu, mem, w)| WorkloadShare {
            resources: Resources { gpus, gpu_milli: milli, gpu_models: vec![], cpu_milli: cpu, memory_mib: mem },
            weight: w,
        })
        .collect()
}

/// (gpus, milli, cpu, memory MiB, weight): shares of a GPU dominate by count, as in production traces.
const SHAPES: [(u32, u32, u64, u64, u32); 8] = [
    (1, 250, 4_000, 16_384, 15),
    (1, 500, 8_000, 32_768, 20),
    (1, 750, 8_000, 32_768, 5),
    (1, 1000, 12_000, 65_536, 30),
    (2, 1000, 24_000, 131_072, 10),
    (4, 1000, 48_000, 262_144, 10),
    (8, 1000, 96_000, 524_288, 5),
    (0, 0, 4_000, 8_192, 5),
];

/// `n` single-replica jobs drawn from [`workload`]'s shapes, with classes, kinds and occasional model wishes.
pub fn jobs(n: usize, seed: u64) -> Vec<Job> {
    let classes = ["eu-any", "eu-restricted", "fr-health", "de-c5", "eucs-high"];
    let total: u32 = SHAPES.iter().map(|s| s.4).sum();
    (0..n)
        .map(|i| {
            let h = mix(seed ^ mix(i as u64));
            let mut pick = (h % u64::from(total)) as u32;
            let shape = SHAPES
                .iter()
                .find(|s| {
                    if pick < s.4 {
                        true
                    } else {
                        pick -= s.4;
                        false
                    }
                })
                .unwrap_or(&SHAPES[0]);
            let (gpus, milli, cpu, mem, _) = *shape;
            let training = gpus >= 2 || (h >> 20).is_multiple_of(2);
            let gpu_models = match (gpus, (h >> 24) % 4) {
                (0, _) => vec![],
                (_, 0) => vec![if training { "H100-80GB" } else { "L4" }.to_string()],
                _ => vec![],
            };
            Job {
                name: format!("job-{i}"),
                kind: if training { Purpose::Training } else { Purpose::Inference },
                queue: "bench".into(),
                priority: 0,
                residency: classes[((h >> 32) % classes.len() as u64) as usize].into(),
                replicas: 1,
                resources: Resources { gpus, gpu_milli: milli, gpu_models, cpu_milli: cpu, memory_mib: mem },
                nvlink: if gpus >= 2 { NvlinkWish::Prefer } else { NvlinkWish::None },
                run: None,
                model: None,
                exception: None,
            }
        })
        .collect()
}

/// A stream of decisions as the benchmarks measure them: jobs taken round-robin from a list, each placed on one
/// state and applied, the state reset to empty when 85% of its GPU milli is allocated or after 100 refusals in a
/// row. Shared by `benches/placement.rs` and `scheduler/placement/benches/scaling.rs`, so both measure the same
/// thing.
pub struct DecisionStream {
    pristine: crate::ClusterState,
    state: crate::ClusterState,
    placer: crate::Placer,
    jobs: Vec<Job>,
    next: usize,
    fails: u32,
    used: u64,
    cap: u64,
}

impl DecisionStream {
    /// A stream of `jobs` (at least one) through `placer` onto `cluster`, starting empty.
    pub fn new(
        cluster: &ClusterConfig,
        jobs: Vec<Job>,
        placer: crate::Placer,
    ) -> Result<DecisionStream, crate::BuildError> {
        if jobs.is_empty() {
            return Err(crate::BuildError("a decision stream needs at least one job".into()));
        }
        let pristine = crate::ClusterState::from_config(cluster)?;
        let cap = pristine.topology().total_gpu_milli();
        Ok(DecisionStream { state: pristine.clone(), pristine, placer, jobs, next: 0, fails: 0, used: 0, cap })
    }

    /// One decision (place, then apply); whether the job was placed. An error is a decision the core made that
    /// does not apply to the state it was made on — a bug of the core.
    pub fn step(&mut self) -> Result<bool, crate::ApplyError> {
        let job = &self.jobs[self.next % self.jobs.len()];
        self.next += 1;
        let placed = match self.placer.place(&self.state, job) {
            Ok(d) => {
                self.state.apply(&d)?;
                self.used += job.resources.total_gpu_milli();
                self.fails = 0;
                true
            }
            Err(_) => {
                self.fails += 1;
                false
            }
        };
        if self.fails > 100 || self.used * 100 > self.cap * 85 {
            self.state = self.pristine.clone();
            self.used = 0;
            self.fails = 0;
        }
        Ok(placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterState;

    #[test]
    fn synthetic_cluster_has_the_promised_shape() {
        let cfg = cluster(5000, 1);
        let state = ClusterState::from_config(&cfg).unwrap();
        let t = state.topology();
        assert_eq!(t.nodes.len(), 5000);
        assert_eq!(t.devices.len(), 40_000);
        assert!(cfg.zones.len() >= 20);
        assert!(t.pool_nodes.iter().all(|p| !p.is_empty()), "every pool has nodes");
        assert_eq!(cluster(50, 9), cluster(50, 9));
        assert_eq!(jobs(100, 3), jobs(100, 3));
    }
}
