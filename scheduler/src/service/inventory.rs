//! Checking what a daemon reports about its GPUs before the scheduler takes it.

use sovra_api::v1::NodeInventory;
use sovra_domain::{Gpu, Health, MigInstance};

/// Converts a reported inventory into the domain's GPUs, naming the field of the first problem.
pub(crate) fn gpus_of(inv: &NodeInventory, field: &str) -> Result<Vec<Gpu>, String> {
    if !inv.backend_ready {
        return Ok(vec![]);
    }
    if inv.gpus.len() as u64 > sovra_domain::config::MAX_GPUS_PER_NODE {
        return Err(format!(
            "{field}.gpus: {} GPUs; at most {} per node",
            inv.gpus.len(),
            sovra_domain::config::MAX_GPUS_PER_NODE
        ));
    }
    let mut gpus = Vec::with_capacity(inv.gpus.len());
    for (i, g) in inv.gpus.iter().enumerate() {
        let f = format!("{field}.gpus[{i}]");
        if g.index as usize != i {
            return Err(format!("{f}.index: {} where {i} was expected (GPUs are reported in index order)", g.index));
        }
        if g.model.trim().is_empty() {
            return Err(format!("{f}.model: empty"));
        }
        if g.mig.len() as u64 > sovra_domain::config::MAX_MIG_PER_GPU {
            return Err(format!(
                "{f}.mig: {} instances; a GPU has at most {}",
                g.mig.len(),
                sovra_domain::config::MAX_MIG_PER_GPU
            ));
        }
        if let Some(p) = g.nvlink_peers.iter().find(|&&p| p as usize >= inv.gpus.len() || p as usize == i) {
            return Err(format!("{f}.nvlink_peers: {p} is not another GPU of this node"));
        }
        gpus.push(Gpu {
            uuid: g.uuid.clone(),
            model: g.model.clone(),
            memory_mib: g.memory_total_mib,
            numa_node: g.numa_node,
            nvlink_peers: g.nvlink_peers.clone(),
            health: if g.healthy { Health::Healthy } else { Health::Unhealthy { reason: g.unhealthy_reason.clone() } },
            mig: g
                .mig
                .iter()
                .map(|m| MigInstance { profile: m.profile.clone(), memory_mib: m.memory_mib, uuid: m.uuid.clone() })
                .collect(),
        });
    }
    Ok(gpus)
}

/// Whether two GPU lists describe the same devices (health and UUIDs aside).
pub(crate) fn same_devices(a: &[Gpu], b: &[Gpu]) -> bool {
    let mig = |g: &Gpu| g.mig.iter().map(|m| (m.profile.clone(), m.memory_mib)).collect::<Vec<_>>();
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (&x.model, x.memory_mib, x.numa_node, &x.nvlink_peers, mig(x))
                == (&y.model, y.memory_mib, y.numa_node, &y.nvlink_peers, mig(y))
        })
}
