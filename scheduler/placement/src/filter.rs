//! Feasibility filters. Pool-level filters (purpose, residency) run once per pool per job; node-level filters run
//! per node, cheapest first, each in O(1) on the node's summary except for nodes of mixed device models (MIG), which
//! scan their devices.

use crate::decision::{FilterKind, Verdict};
use crate::snapshot::{ClusterState, NodeIdx, PoolInfo, Topology};
use sovra_domain::{GPU_MILLI, Job, NvlinkWish, ResidencyClass, Resources};

/// Why a node was rejected. Reasons depend on the job, not on the node, so they aggregate into few rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The node is not ready (missed heartbeats).
    NotReady,
    /// Fewer healthy devices than the replica needs.
    TooFewHealthyGpus,
    /// No device of an allowed model.
    NoAllowedModel,
    /// Not enough free CPU.
    InsufficientCpu,
    /// Not enough free memory.
    InsufficientMemory,
    /// Not enough fully free devices (of an allowed model).
    TooFewFreeGpus,
    /// No device (of an allowed model) with the requested milli free.
    NoGpuWithMilliFree,
    /// No NVLink island with enough fully free devices.
    NoNvlinkIsland,
}

impl Reason {
    /// The filter that gives this reason.
    pub fn filter(self) -> FilterKind {
        match self {
            Reason::NotReady | Reason::TooFewHealthyGpus => FilterKind::Health,
            Reason::NoAllowedModel => FilterKind::GpuModel,
            Reason::InsufficientCpu | Reason::InsufficientMemory => FilterKind::CpuMemory,
            Reason::TooFewFreeGpus | Reason::NoGpuWithMilliFree | Reason::NoNvlinkIsland => FilterKind::GpuCapacity,
        }
    }

    /// All reasons, for dense counting.
    pub const ALL: [Reason; 8] = [
        Reason::NotReady,
        Reason::TooFewHealthyGpus,
        Reason::NoAllowedModel,
        Reason::InsufficientCpu,
        Reason::InsufficientMemory,
        Reason::TooFewFreeGpus,
        Reason::NoGpuWithMilliFree,
        Reason::NoNvlinkIsland,
    ];

    /// A readable sentence for `job`.
    pub fn describe(self, job: &Job) -> String {
        self.describe_resources(&job.resources)
    }

    /// A readable sentence for a replica asking `r`.
    pub fn describe_resources(self, r: &Resources) -> String {
        match self {
            Reason::NotReady => "node not ready (missed heartbeats)".into(),
            Reason::TooFewHealthyGpus => format!("fewer than {} healthy GPUs", r.gpus),
            Reason::NoAllowedModel => format!("no GPU of an allowed model [{}]", r.gpu_models.join(", ")),
            Reason::InsufficientCpu => format!("less than {} milli-CPU free", r.cpu_milli),
            Reason::InsufficientMemory => format!("less than {} MiB memory free", r.memory_mib),
            Reason::TooFewFreeGpus => format!("fewer than {} fully free GPUs", r.gpus),
            Reason::NoGpuWithMilliFree => format!("no GPU with {} milli free", r.gpu_milli),
            Reason::NoNvlinkIsland => format!("no NVLink island with {} free GPUs", r.gpus),
        }
    }
}

/// Per-job facts the node filters read, computed once per job.
#[derive(Debug, Clone)]
pub struct JobNeeds {
    /// GPUs per replica.
    pub gpus: u16,
    /// Milli per GPU.
    pub milli: u16,
    /// CPU per replica.
    pub cpu: u64,
    /// Memory per replica.
    pub mem: u64,
    /// Allowed model ids (indexed by model id), or `None` for any model.
    pub model_mask: Option<Vec<bool>>,
    /// NVLink wish.
    pub nvlink: NvlinkWish,
}

impl JobNeeds {
    /// The needs of one replica of `job` on `topo`.
    pub fn of(job: &Job, topo: &Topology) -> JobNeeds {
        let r = &job.resources;
        JobNeeds {
            gpus: r.gpus.min(u32::from(u16::MAX)) as u16,
            milli: r.gpu_milli.min(GPU_MILLI) as u16,
            cpu: r.cpu_milli,
            mem: r.memory_mib,
            model_mask: (!r.gpu_models.is_empty())
                .then(|| topo.models.iter().map(|m| r.gpu_models.iter().any(|a| a == m)).collect()),
            nvlink: job.nvlink,
        }
    }

    /// Whether the replica shares one GPU (less than 1000 milli).
    pub fn is_sharing(&self) -> bool {
        self.gpus == 1 && u32::from(self.milli) < GPU_MILLI
    }

    /// Whether device model `m` is allowed.
    #[inline]
    pub fn model_ok(&self, m: u16) -> bool {
        self.model_mask.as_ref().is_none_or(|mask| mask[m as usize])
    }
}

/// Pool-level filters: the job's kind must equal the pool's purpose, and the pool's zone must satisfy the class
/// (or be the zone of the job's placement exception, failing only the requirement it waives).
/// Returns the failing filter, or `None` when the pool is permitted. Allocation-free; [`pool_reason`] words it.
#[inline]
pub fn check_pool(pool: &PoolInfo, topo: &Topology, job: &Job, class: &ResidencyClass) -> Option<FilterKind> {
    if pool.purpose != job.kind {
        return Some(FilterKind::Purpose);
    }
    if !sovra_domain::waiver::permits(&topo.zones[pool.zone], class, job.exception.as_ref()) {
        return Some(FilterKind::Residency);
    }
    None
}

/// Why [`check_pool`] rejected a pool, in words.
pub fn pool_reason(
    pool: &PoolInfo,
    topo: &Topology,
    job: &Job,
    class: &ResidencyClass,
) -> Option<(FilterKind, String)> {
    let filter = check_pool(pool, topo, job, class)?;
    let zone = &topo.zones[pool.zone];
    Some(match filter {
        FilterKind::Purpose => (filter, format!("pool {} is for {}, the job is {}", pool.id, pool.purpose, job.kind)),
        _ => {
            let why: Vec<String> = class.violations(zone).into_iter().map(|v| v.message).collect();
            (filter, format!("zone {} fails residency class {}: {}", zone.id, class.name, why.join("; ")))
        }
    })
}

/// The `model` filter for one zone: `None` when the job names no model or `zone` holds its version for inference
/// (by `facts`), else why not, in words: where the version is available and, for those zones, what of the job's
/// class they fail (`model radiology@3f9c2a1b is promoted to de-fra-c5 only, which fails fr-health: country DE is
/// not in [FR]`), or why it cannot be known.
pub fn model_reason(
    zone: &sovra_domain::Zone,
    job: &Job,
    class: &ResidencyClass,
    facts: &sovra_domain::ModelAvailability,
    topo: &Topology,
) -> Option<String> {
    use sovra_domain::Resolved;
    let r = job.model.as_ref()?;
    match facts.resolve(r) {
        Resolved::Version { zones, .. } if zones.contains(&zone.id) => None,
        Resolved::Version { zones, .. } if zones.is_empty() => {
            Some(format!("model {r} is promoted to no inference zone (or was withdrawn from every one)"))
        }
        Resolved::Version { zones, .. } => {
            let failing: Vec<String> = zones
                .iter()
                .filter_map(|z| topo.zones.iter().find(|x| &x.id == z))
                .filter_map(|z| {
                    let why: Vec<String> = class.violations(z).into_iter().map(|v| v.message).collect();
                    let why = why.join("; ");
                    (!why.is_empty()).then(|| if zones.len() == 1 { why } else { format!("{}: {why}", z.id) })
                })
                .collect();
            let list = zones.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
            Some(if failing.len() == zones.len() {
                format!("model {r} is promoted to {list} only, which fails {}: {}", class.name, failing.join("; "))
            } else {
                format!("model {r} is promoted to {list} only, not to {}", zone.id)
            })
        }
        Resolved::Unavailable(why) => Some(format!("where model {r} is available cannot be known now: {why}")),
        Resolved::NoVersion => Some(format!("model {r}: no version of {} has a digest starting {}", r.name, r.digest)),
        Resolved::Ambiguous(n) => {
            Some(format!("model {r}: {n} versions have a digest starting {}; give more digits", r.digest))
        }
    }
}

/// Whether `reason`, the first filter to reject `node`, can never go away as jobs end: the node has no device of
/// an allowed model, or is too small for one replica (fewer devices than it asks GPUs, or less CPU or memory in
/// all than it asks). Capacity and readiness otherwise come back.
pub fn never_fits(topo: &Topology, node: NodeIdx, reason: Reason, needs: &JobNeeds) -> bool {
    let info = &topo.nodes[node as usize];
    match reason {
        Reason::NoAllowedModel => true,
        Reason::TooFewHealthyGpus | Reason::TooFewFreeGpus | Reason::NoNvlinkIsland => info.dev_count < needs.gpus,
        Reason::InsufficientCpu => info.cpu_milli < needs.cpu,
        Reason::InsufficientMemory => info.memory_mib < needs.mem,
        Reason::NotReady | Reason::NoGpuWithMilliFree => false,
    }
}

/// The node-level [`Verdict`] of one replica on `node`: it fits, it does not fit now ([`Reason`]), or it never
/// can ([`never_fits`]). Pool-level filters (purpose, residency) are the caller's: see [`pool_reason`].
pub fn node_verdict(state: &ClusterState, node: NodeIdx, needs: &JobNeeds) -> Verdict<(), Reason> {
    match check_node(state, node, needs) {
        Ok(()) => Verdict::Fit(()),
        Err(r) if never_fits(state.topology(), node, r, needs) => Verdict::Unresolvable(r),
        Err(r) => Verdict::Unschedulable(r),
    }
}

/// Node-level filters, in pipeline order. `Err` carries the first failing reason.
#[inline]
pub fn check_node(state: &ClusterState, node: NodeIdx, needs: &JobNeeds) -> Result<(), Reason> {
    let s = state.summary(node);
    // Health: ready, and enough healthy devices at all.
    if !state.node_ready(node) {
        return Err(Reason::NotReady);
    }
    if s.healthy < needs.gpus {
        return Err(Reason::TooFewHealthyGpus);
    }
    // GPU model: the common case of one model per node is O(1); the node's static record is only read when the
    // job names models.
    let mixed = needs.gpus > 0
        && needs.model_mask.is_some()
        && match state.topology().nodes[node as usize].uniform_model {
            Some(m) => {
                if !needs.model_ok(m) {
                    return Err(Reason::NoAllowedModel);
                }
                false
            }
            None => {
                let topo = state.topology();
                if !topo.devices[topo.device_range(node)].iter().any(|d| needs.model_ok(d.model)) {
                    return Err(Reason::NoAllowedModel);
                }
                true
            }
        };
    // CPU and memory.
    if s.cpu_free < needs.cpu {
        return Err(Reason::InsufficientCpu);
    }
    if s.mem_free < needs.mem {
        return Err(Reason::InsufficientMemory);
    }
    // GPU capacity.
    if needs.gpus == 0 {
        return Ok(());
    }
    if mixed {
        return check_devices(state, node, needs);
    }
    if needs.is_sharing() {
        if s.max_free < needs.milli {
            return Err(Reason::NoGpuWithMilliFree);
        }
    } else {
        if s.free_whole < needs.gpus {
            return Err(Reason::TooFewFreeGpus);
        }
        if needs.nvlink == NvlinkWish::Require && s.free_whole_island < needs.gpus {
            return Err(Reason::NoNvlinkIsland);
        }
    }
    Ok(())
}

/// GPU capacity on a node of mixed models: scan the allowed devices.
fn check_devices(state: &ClusterState, node: NodeIdx, needs: &JobNeeds) -> Result<(), Reason> {
    let topo = state.topology();
    let mut fitting = 0u16;
    let mut islands: Vec<(u16, u16)> = Vec::new();
    for d in topo.device_range(node) {
        let dev = &topo.devices[d];
        if !needs.model_ok(dev.model) || state.device_free(d) < needs.milli {
            continue;
        }
        fitting += 1;
        match islands.iter_mut().find(|(i, _)| *i == dev.island) {
            Some((_, n)) => *n += 1,
            None => islands.push((dev.island, 1)),
        }
    }
    if needs.is_sharing() {
        return if fitting >= 1 { Ok(()) } else { Err(Reason::NoGpuWithMilliFree) };
    }
    if fitting < needs.gpus {
        return Err(Reason::TooFewFreeGpus);
    }
    if needs.nvlink == NvlinkWish::Require && !islands.iter().any(|&(_, n)| n >= needs.gpus) {
        return Err(Reason::NoNvlinkIsland);
    }
    Ok(())
}

#[cfg(test)]
// Table-driven tests: each row's tuple type is spelled out where the table is.
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::decision::{Decision, DeviceAssignment, ReplicaPlacement, ScoreBreakdown};
    use sovra_domain::{ClusterConfig, Purpose, Resources};

    /// One pool per zone/purpose of three zones; node `n` has the GPUs described in the YAML.
    fn state(nodes_yaml: &str) -> ClusterState {
        let yaml = format!(
            r#"
zones:
  - {{id: fr, country: FR, region: r, jurisdiction: EU, operator: o, operator_hq: FR, certifications: [HDS, SecNumCloud]}}
  - {{id: us-de, country: DE, region: r, jurisdiction: EU, operator: h, operator_hq: US, certifications: [C5]}}
pools:
  - {{id: fr-train, zone: fr, purpose: training}}
  - {{id: fr-infer, zone: fr, purpose: inference}}
  - {{id: de-train, zone: us-de, purpose: training}}
residency_classes:
  - {{name: fr-health, countries: [FR], certifications: [HDS, SecNumCloud]}}
  - {{name: eu-restricted, jurisdictions: [EU], operator_hq_in: [EU]}}
nodes:
{nodes_yaml}
"#
        );
        let cfg = ClusterConfig::from_yaml("test", &yaml).unwrap();
        ClusterState::from_config(&cfg).unwrap()
    }

    fn job(gpus: u32, milli: u32, models: &[&str], cpu: u64, mem: u64, nvlink: NvlinkWish) -> Job {
        Job {
            name: "j".into(),
            kind: Purpose::Training,
            queue: "q".into(),
            priority: 0,
            residency: "fr-health".into(),
            replicas: 1,
            resources: Resources {
                gpus,
                gpu_milli: milli,
                gpu_models: models.iter().map(|s| s.to_string()).collect(),
                cpu_milli: cpu,
                memory_mib: mem,
            },
            nvlink,
            run: None,
            model: None,
            exception: None,
        }
    }

    /// Takes `milli` on each listed device of node 0.
    fn take(state: &mut ClusterState, devices: &[(u16, u16)], cpu: u64) {
        let d = Decision {
            job: "x".into(),
            replicas: vec![ReplicaPlacement {
                replica: 0,
                node: 0,
                node_name: String::new(),
                pool: String::new(),
                zone: String::new(),
                devices: devices.iter().map(|&(device, milli)| DeviceAssignment { device, milli }).collect(),
                cpu_milli: cpu,
                memory_mib: 0,
                scores: ScoreBreakdown::default(),
                feasible_nodes: 0,
            }],
        };
        state.apply(&d).unwrap();
    }

    const H100X8_ISLANDS: &str = "  - {name: n, pool: fr-train, cpu_milli: 64000, memory_mib: 65536, gpus: {model: H100, count: 8, memory_mib: 81920, nvlink_islands: [[0,1,2,3],[4,5,6,7]]}}";

    #[test]
    fn node_filters_table() {
        use NvlinkWish::*;
        // (case, devices already taken (device, milli), cpu taken, job, expected)
        let cases: Vec<(&str, Vec<(u16, u16)>, u64, Job, Result<(), Reason>)> = vec![
            ("empty node fits 8 whole GPUs", vec![], 0, job(8, 1000, &[], 1000, 1, None), Ok(())),
            ("model not allowed", vec![], 0, job(1, 1000, &["A100"], 1000, 1, None), Err(Reason::NoAllowedModel)),
            ("model allowed among several", vec![], 0, job(1, 1000, &["A100", "H100"], 1000, 1, None), Ok(())),
            ("too much CPU", vec![], 0, job(1, 1000, &[], 64001, 1, None), Err(Reason::InsufficientCpu)),
            ("CPU taken by others", vec![], 60000, job(1, 1000, &[], 8000, 1, None), Err(Reason::InsufficientCpu)),
            ("too much memory", vec![], 0, job(1, 1000, &[], 1000, 65537, None), Err(Reason::InsufficientMemory)),
            ("more GPUs than healthy", vec![], 0, job(9, 1000, &[], 1000, 1, None), Err(Reason::TooFewHealthyGpus)),
            // 3 GPUs partly used: 5 fully free < 6.
            (
                "too few whole GPUs",
                vec![(0, 100), (4, 100), (7, 1000)],
                0,
                job(6, 1000, &[], 1000, 1, None),
                Err(Reason::TooFewFreeGpus),
            ),
            // Islands have 3 and 2 free: 4 whole GPUs exist, but no island holds 4.
            (
                "require: no island",
                vec![(0, 1), (4, 1), (5, 1)],
                0,
                job(4, 1000, &[], 1000, 1, Require),
                Err(Reason::NoNvlinkIsland),
            ),
            ("prefer: spanning is fine", vec![(0, 1), (4, 1), (5, 1)], 0, job(4, 1000, &[], 1000, 1, Prefer), Ok(())),
            ("require: one island free", vec![(0, 1)], 0, job(4, 1000, &[], 1000, 1, Require), Ok(())),
            // Every GPU has at most 400 free.
            (
                "share: no GPU with 500 free",
                (0..8).map(|d| (d, 600)).collect(),
                0,
                job(1, 500, &[], 1000, 1, None),
                Err(Reason::NoGpuWithMilliFree),
            ),
            ("share: exactly fits", (0..8).map(|d| (d, 500)).collect(), 0, job(1, 500, &[], 1000, 1, None), Ok(())),
            ("CPU-only ignores GPUs", (0..8).map(|d| (d, 1000)).collect(), 0, job(0, 0, &[], 1000, 1, None), Ok(())),
        ];
        for (name, taken, cpu, j, want) in cases {
            let mut s = state(H100X8_ISLANDS);
            if !taken.is_empty() || cpu > 0 {
                take(&mut s, &taken, cpu);
            }
            let needs = JobNeeds::of(&j, s.topology());
            assert_eq!(check_node(&s, 0, &needs), want, "{name}");
        }
    }

    #[test]
    fn health_filters() {
        let mut s = state(H100X8_ISLANDS);
        let j = job(8, 1000, &[], 1000, 1, NvlinkWish::None);
        let needs = JobNeeds::of(&j, s.topology());
        s.set_device_health(3, false);
        assert_eq!(check_node(&s, 0, &needs), Err(Reason::TooFewHealthyGpus));
        s.set_device_health(3, true);
        s.set_node_ready(0, false);
        assert_eq!(check_node(&s, 0, &needs), Err(Reason::NotReady));
        s.set_node_ready(0, true);
        assert_eq!(check_node(&s, 0, &needs), Ok(()));
    }

    #[test]
    fn configured_unhealthy_gpu_is_not_offered() {
        let s = state(
            "  - {name: n, pool: fr-train, cpu_milli: 64000, memory_mib: 65536, gpus: {devices: [{model: L4, memory_mib: 1}, {model: L4, memory_mib: 1, unhealthy: XID 79}]}}",
        );
        let two = job(2, 1000, &[], 1, 1, NvlinkWish::None);
        assert_eq!(check_node(&s, 0, &JobNeeds::of(&two, s.topology())), Err(Reason::TooFewHealthyGpus));
        let one = job(1, 1000, &[], 1, 1, NvlinkWish::None);
        assert_eq!(check_node(&s, 0, &JobNeeds::of(&one, s.topology())), Ok(()));
    }

    #[test]
    fn mig_instances_are_devices_of_their_own_model() {
        let s = state(
            "  - {name: n, pool: fr-train, cpu_milli: 64000, memory_mib: 65536, gpus: {devices: [{model: A100, memory_mib: 81920, mig: [{profile: 3g.40gb, count: 2}]}, {model: A100, memory_mib: 81920}]}}",
        );
        assert_eq!(s.topology().nodes[0].dev_count, 3);
        let cases = [
            (job(1, 1000, &["A100-MIG-3g.40gb"], 1, 1, NvlinkWish::None), Ok(())),
            (job(2, 1000, &["A100-MIG-3g.40gb"], 1, 1, NvlinkWish::None), Ok(())),
            (job(3, 1000, &["A100-MIG-3g.40gb"], 1, 1, NvlinkWish::None), Err(Reason::TooFewFreeGpus)),
            (job(2, 1000, &["A100"], 1, 1, NvlinkWish::None), Err(Reason::TooFewFreeGpus)),
            (job(1, 1000, &["H100"], 1, 1, NvlinkWish::None), Err(Reason::NoAllowedModel)),
        ];
        for (j, want) in cases {
            assert_eq!(check_node(&s, 0, &JobNeeds::of(&j, s.topology())), want, "{:?}", j.resources.gpu_models);
        }
    }

    #[test]
    fn pool_filters_table() {
        let s = state(H100X8_ISLANDS);
        let t = s.topology();
        let mut j = job(1, 1000, &[], 1, 1, NvlinkWish::None);
        let health = t.class("fr-health").unwrap();
        let restricted = t.class("eu-restricted").unwrap();
        // (pool, job kind, class) → failing filter
        let cases = [
            (0, Purpose::Training, health, None),
            (1, Purpose::Training, health, Some(FilterKind::Purpose)),
            (2, Purpose::Training, health, Some(FilterKind::Residency)),
            (2, Purpose::Training, restricted, Some(FilterKind::Residency)),
            (0, Purpose::Training, restricted, None),
            (1, Purpose::Inference, restricted, None),
        ];
        for (pool, kind, class, want) in cases {
            j.kind = kind;
            let got = check_pool(&t.pools[pool], t, &j, class);
            assert_eq!(got, pool_reason(&t.pools[pool], t, &j, class).map(|(f, _)| f));
            assert_eq!(got, want, "pool {pool} {kind} {}", class.name);
        }
        j.kind = Purpose::Training;
        let (_, why) = pool_reason(&t.pools[2], t, &j, restricted).unwrap();
        assert!(why.contains("headquartered in US"), "{why}");
    }
}
