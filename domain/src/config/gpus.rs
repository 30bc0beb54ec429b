//! GPUs of a cluster file's node: a uniform set or a `devices` list, with NVLink islands, NUMA and MIG layouts.

use super::{MAX_GPUS_PER_NODE, MAX_MIG_PER_GPU, Validator};
use crate::node::{Gpu, Health, MigInstance};
use serde::Deserialize;
use std::collections::BTreeSet;

/// Either a uniform set (`model`, `count`, ...) or an explicit `devices` list.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGpus {
    count: Option<i64>,
    model: Option<String>,
    memory_mib: Option<i64>,
    /// `all` (one island of every GPU), `none` (the default), or explicit islands in `nvlink_islands`.
    nvlink: Option<String>,
    nvlink_islands: Option<Vec<Vec<i64>>>,
    /// NUMA node of each GPU, by index.
    numa: Option<Vec<u32>>,
    /// MIG layout applied to every GPU of a uniform set.
    mig: Option<Vec<RawMig>>,
    devices: Option<Vec<RawDevice>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    model: String,
    memory_mib: i64,
    uuid: Option<String>,
    numa_node: Option<u32>,
    #[serde(default)]
    nvlink_peers: Vec<i64>,
    #[serde(default)]
    unhealthy: Option<String>,
    mig: Option<Vec<RawMig>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMig {
    profile: String,
    count: Option<i64>,
    memory_mib: Option<i64>,
}

/// Memory of a MIG profile such as `3g.40gb`, in MiB.
pub(super) fn mig_profile_memory(profile: &str) -> Option<u64> {
    let gb = profile.split_once('.')?.1.strip_suffix("gb")?;
    gb.parse::<u64>().ok()?.checked_mul(1024)
}

fn expand_mig(v: &mut Validator, p: &str, raw: Option<Vec<RawMig>>) -> Vec<MigInstance> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let raw = raw.unwrap_or_default();
    let entries = raw.len();
    for (i, m) in raw.into_iter().enumerate() {
        let f = format!("{p}[{i}]");
        let count = v.at_least(&format!("{f}.count"), m.count.unwrap_or(1), 1);
        let memory = match m.memory_mib {
            Some(mem) => v.at_least(&format!("{f}.memory_mib"), mem, 1),
            None => mig_profile_memory(&m.profile).unwrap_or_else(|| {
                v.problem(
                    &format!("{f}.profile"),
                    format!(
                        "cannot read the memory of profile {:?}; write it like 3g.40gb or set memory_mib",
                        m.profile
                    ),
                );
                1
            }),
        };
        if count > MAX_MIG_PER_GPU {
            v.problem(&format!("{f}.count"), format!("{count} instances; a GPU has at most 7 MIG instances"));
        }
        total = total.saturating_add(count);
        while (out.len() as u64) < total.min(MAX_MIG_PER_GPU) {
            out.push(MigInstance { profile: m.profile.clone(), memory_mib: memory, uuid: String::new() });
        }
    }
    if entries > 1 && total > MAX_MIG_PER_GPU {
        v.problem(p, format!("{total} instances in all; a GPU has at most 7 MIG instances"));
    }
    out
}

impl RawGpus {
    pub(super) fn validate(self, v: &mut Validator, p: &str, node_name: &str) -> Vec<Gpu> {
        let mut gpus: Vec<Gpu> = Vec::new();
        if let Some(devices) = self.devices {
            for (field, set) in [
                ("count", self.count.is_some()),
                ("model", self.model.is_some()),
                ("memory_mib", self.memory_mib.is_some()),
                ("nvlink", self.nvlink.is_some()),
                ("numa", self.numa.is_some()),
                ("mig", self.mig.is_some()),
            ] {
                if set {
                    v.problem(&format!("{p}{field}"), "cannot be combined with devices; set it per device".into());
                }
            }
            if devices.len() as u64 > MAX_GPUS_PER_NODE {
                v.problem(
                    &format!("{p}devices"),
                    format!("{} GPUs on one node; at most {MAX_GPUS_PER_NODE} are supported", devices.len()),
                );
                return gpus;
            }
            let n = devices.len() as i64;
            for (i, d) in devices.into_iter().enumerate() {
                let f = format!("{p}devices[{i}]");
                v.nonempty(&format!("{f}.model"), &d.model);
                let mut peers = Vec::new();
                for (j, peer) in d.nvlink_peers.iter().enumerate() {
                    if *peer < 0 || *peer >= n || *peer == i as i64 {
                        v.problem(
                            &format!("{f}.nvlink_peers[{j}]"),
                            format!("{peer} is not another GPU of this node (indices 0 to {})", n - 1),
                        );
                    } else {
                        peers.push(*peer as u32);
                    }
                }
                gpus.push(Gpu {
                    uuid: d.uuid.unwrap_or_else(|| format!("GPU-{node_name}-{i}")),
                    model: d.model,
                    memory_mib: v.at_least(&format!("{f}.memory_mib"), d.memory_mib, 1),
                    numa_node: d.numa_node,
                    nvlink_peers: peers,
                    health: match d.unhealthy {
                        None => Health::Healthy,
                        Some(reason) => Health::Unhealthy { reason },
                    },
                    mig: expand_mig(v, &format!("{f}.mig"), d.mig),
                });
            }
            // NVLink is symmetric: a link listed on one side only is a configuration mistake.
            for i in 0..gpus.len() {
                for &peer in &gpus[i].nvlink_peers.clone() {
                    if !gpus[peer as usize].nvlink_peers.contains(&(i as u32)) {
                        v.problem(
                            &format!("{p}devices[{peer}].nvlink_peers"),
                            format!("GPU {i} lists {peer} as an NVLink peer but not the reverse; list both"),
                        );
                    }
                }
            }
            return gpus;
        }
        let count = v.at_least(&format!("{p}count"), self.count.unwrap_or(0), 1);
        let Some(model) = self.model else {
            v.problem(&format!("{p}model"), "is missing; name the GPU model, e.g. H100-80GB".into());
            return gpus;
        };
        v.nonempty(&format!("{p}model"), &model);
        let memory = match self.memory_mib {
            Some(m) => v.at_least(&format!("{p}memory_mib"), m, 1),
            None => {
                v.problem(&format!("{p}memory_mib"), "is missing; give the memory of one GPU in MiB".into());
                1
            }
        };
        if count > MAX_GPUS_PER_NODE {
            v.problem(
                &format!("{p}count"),
                format!("{count} GPUs on one node; at most {MAX_GPUS_PER_NODE} are supported"),
            );
            return gpus;
        }
        let islands: Vec<Vec<u32>> = match (self.nvlink.as_deref(), self.nvlink_islands) {
            (Some(_), Some(_)) => {
                v.problem(&format!("{p}nvlink_islands"), "cannot be combined with nvlink; keep one".into());
                vec![]
            }
            (None | Some("none"), None) => vec![],
            (Some("all"), None) => vec![(0..count as u32).collect()],
            (Some(other), None) => {
                v.problem(
                    &format!("{p}nvlink"),
                    format!("{other:?} is not all or none; for partial NVLink use nvlink_islands"),
                );
                vec![]
            }
            (None, Some(islands)) => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for (i, island) in islands.iter().enumerate() {
                    let mut members = Vec::new();
                    for (j, g) in island.iter().enumerate() {
                        let f = format!("{p}nvlink_islands[{i}][{j}]");
                        if *g < 0 || *g as u64 >= count {
                            v.problem(&f, format!("GPU {g} does not exist (indices 0 to {})", count - 1));
                        } else if !seen.insert(*g) {
                            v.problem(&f, format!("GPU {g} is in two islands; an island is a set of GPUs"));
                        } else {
                            members.push(*g as u32);
                        }
                    }
                    out.push(members);
                }
                out
            }
        };
        if let Some(numa) = &self.numa
            && numa.len() as u64 != count
        {
            v.problem(&format!("{p}numa"), format!("has {} entries for {count} GPUs; give one per GPU", numa.len()));
        }
        let mig = expand_mig(v, &format!("{p}mig"), self.mig);
        for i in 0..count as u32 {
            let peers = islands
                .iter()
                .find(|isl| isl.contains(&i))
                .map(|isl| isl.iter().copied().filter(|&g| g != i).collect())
                .unwrap_or_default();
            gpus.push(Gpu {
                uuid: format!("GPU-{node_name}-{i}"),
                model: model.clone(),
                memory_mib: memory,
                numa_node: self.numa.as_ref().and_then(|n| n.get(i as usize).copied()),
                nvlink_peers: peers,
                health: Health::Healthy,
                mig: mig.clone(),
            });
        }
        gpus
    }
}
