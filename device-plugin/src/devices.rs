//! The device IDs the plugin advertises for `sovra.io/gpu-milli`: **one device ID per milli-GPU**, so 1,000 per
//! GPU, named `gpu<index>-<unit>` with the unit as three digits (`gpu3-000` … `gpu3-999`).
//!
//! One ID per milli keeps the resource's unit what pods already write: `sovra.io/gpu-milli: 250` asks the kubelet
//! for 250 IDs, which is a quarter of one GPU, exactly as the scheduler extender reads the same request. A coarser
//! ID (say 10 milli) would make the same number mean ten times more to the kubelet than to Sovra. 1,000 IDs per GPU
//! are 8,000 for an 8-GPU node: a ListAndWatch message of about 212 kB with NUMA topology (26.5 bytes a device,
//! measured by a test below), far below gRPC's 4 MiB default.
//!
//! The IDs are counters, as in HAMi and gpushare: the kubelet only counts them (node capacity and allocatable of
//! `sovra.io/gpu-milli`), and which GPU a container really gets comes from the pod's `sovra.io/gpu-devices`
//! annotation at Allocate. The plugin does prefer the chosen GPU's IDs in GetPreferredAllocation, so that the
//! kubelet's bookkeeping follows the real GPU where it can. A GPU that is unhealthy has all its IDs `Unhealthy`
//! (the kubelet removes them from allocatable); a GPU in MIG mode is not advertised.

use crate::api::{Device, NumaNode, TopologyInfo};
use crate::inventory::Inventory;

/// Device IDs (milli-GPU) per GPU.
pub const UNITS_PER_GPU: u32 = sovra_domain::GPU_MILLI;
/// The kubelet's health value of a usable device.
pub const HEALTHY: &str = "Healthy";
/// The kubelet's health value of an unusable device.
pub const UNHEALTHY: &str = "Unhealthy";

/// The ID of milli-unit `unit` (0..1000) of GPU `gpu`.
pub fn device_id(gpu: u32, unit: u32) -> String {
    format!("gpu{gpu}-{unit:03}")
}

/// The GPU index of a device ID this plugin made, `None` for any other string.
pub fn gpu_of(id: &str) -> Option<u32> {
    let (gpu, unit) = id.strip_prefix("gpu")?.split_once('-')?;
    let unit_ok = unit.len() == 3 && unit.bytes().all(|b| b.is_ascii_digit());
    let gpu_ok = !gpu.is_empty() && gpu.bytes().all(|b| b.is_ascii_digit());
    if unit_ok && gpu_ok { gpu.parse().ok() } else { None }
}

/// The device list for an inventory, in GPU then unit order: every GPU not in MIG mode, 1,000 IDs each, healthy or
/// not as the GPU is, with the GPU's NUMA node as topology when known.
pub fn device_list(inv: &Inventory) -> Vec<Device> {
    let mut out = Vec::with_capacity(inv.gpus.len() * UNITS_PER_GPU as usize);
    for g in inv.gpus.iter().filter(|g| !g.mig_enabled) {
        let health = if g.unhealthy.is_none() { HEALTHY } else { UNHEALTHY };
        let topology = g.numa_node.map(|n| TopologyInfo { nodes: vec![NumaNode { id: i64::from(n) }] });
        out.extend((0..UNITS_PER_GPU).map(|u| Device {
            id: device_id(g.index, u),
            health: health.to_string(),
            topology: topology.clone(),
        }));
    }
    out
}

/// The same list with every device `Unhealthy`: what the kubelet is told when the inventory can no longer be read
/// (fail closed: no new container gets a share of a GPU nobody can vouch for).
pub fn all_unhealthy(mut devices: Vec<Device>) -> Vec<Device> {
    for d in &mut devices {
        d.health = UNHEALTHY.to_string();
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Gpu;

    fn gpu(index: u32, unhealthy: bool, mig: bool) -> Gpu {
        Gpu {
            index,
            uuid: format!("GPU-{index}"),
            name: "NVIDIA L4".into(),
            numa_node: Some(index % 2),
            mig_enabled: mig,
            unhealthy: unhealthy.then(|| "XID 79".to_string()),
        }
    }

    #[test]
    fn one_id_per_milli_health_per_gpu_no_mig() {
        let inv = Inventory { gpus: vec![gpu(0, false, false), gpu(1, true, false), gpu(2, false, true)] };
        let list = device_list(&inv);
        assert_eq!(list.len(), 2000);
        assert_eq!(list[0].id, "gpu0-000");
        assert_eq!(list[999].id, "gpu0-999");
        assert_eq!(list[1000].id, "gpu1-000");
        assert!(list[..1000].iter().all(|d| d.health == HEALTHY));
        assert!(list[1000..].iter().all(|d| d.health == UNHEALTHY && gpu_of(&d.id) == Some(1)));
        assert_eq!(list[1000].topology.as_ref().unwrap().nodes[0].id, 1);
        assert!(all_unhealthy(list).iter().all(|d| d.health == UNHEALTHY));
    }

    /// The kubelet's gRPC client keeps gRPC's default 4 MiB receive limit: a 16-GPU node's list stays far below.
    #[test]
    fn a_large_node_s_list_fits_the_kubelet_s_message_limit() {
        use prost::Message;
        let inv = Inventory { gpus: (0..16).map(|i| gpu(i, i == 3, false)).collect() };
        let msg = crate::api::ListAndWatchResponse { devices: device_list(&inv) };
        let bytes = msg.encoded_len();
        assert_eq!(msg.devices.len(), 16_000);
        assert!(bytes < 1 << 20, "{bytes} bytes");
    }

    #[test]
    fn ids_read_back_and_stay_short() {
        assert_eq!(gpu_of(&device_id(1023, 999)), Some(1023));
        assert!(device_id(1023, 999).len() <= 63);
        for bad in ["gpu-000", "gpu1-00", "gpu1-0000", "gpux-000", "cpu1-000", "gpu1000", "gpu+1-000"] {
            assert_eq!(gpu_of(bad), None, "{bad}");
        }
    }
}
