//! The devices a bound pod holds, recorded on the pod itself so that any replica rebuilds the same accounting.
//!
//! At bind, the leader writes two annotations on the pod before it creates the pod's Binding:
//! - [`DEVICES_ANNOTATION`] (`sovra.io/gpu-devices`): the device indices on the node, comma-separated, ascending;
//!   a whole GPU is its index (`"0,1"`), a share is `index:milli` (`"3:250"`); empty for a pod without GPUs;
//! - [`DEVICES_NODE_ANNOTATION`] (`sovra.io/gpu-devices-node`): the node those indices are on.
//!
//! The cache accounts a bound pod on exactly those devices when the node annotation names the node the pod is
//! bound to and the devices fit; otherwise (no annotation, another node, a device taken meanwhile) it falls back
//! to the placement core's choice ([`crate::cache::account`]) and logs why.

use sovra_domain::{GPU_MILLI, Job};
use sovra_placement::{ClusterState, Decision, DeviceAssignment, NodeIdx, ReplicaPlacement};
use std::collections::BTreeMap;

/// Annotation: the devices the pod holds on its node (`"0,1"` whole GPUs, `"3:250"` a share of device 3).
pub const DEVICES_ANNOTATION: &str = "sovra.io/gpu-devices";
/// Annotation: the node whose devices [`DEVICES_ANNOTATION`] names.
pub const DEVICES_NODE_ANNOTATION: &str = "sovra.io/gpu-devices-node";

/// Devices recorded on a pod: where, and which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The node.
    pub node: String,
    /// The devices on it (index on the node, milli-GPU taken).
    pub devices: Vec<DeviceAssignment>,
}

/// A recorded device list that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {DEVICES_ANNOTATION} is {value:?}: {why}; write device indices such as \"0,1\" or \"3:250\"")]
pub struct DevicesError {
    /// The annotation's value.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

/// The annotation text of a device list (whole GPUs as `i`, shares as `i:milli`, ascending by index).
pub fn format_devices(devices: &[DeviceAssignment]) -> String {
    let mut d = devices.to_vec();
    d.sort_by_key(|a| a.device);
    d.iter()
        .map(
            |a| {
                if u32::from(a.milli) == GPU_MILLI { a.device.to_string() } else { format!("{}:{}", a.device, a.milli) }
            },
        )
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a device list written by [`format_devices`]. Indices below 64, shares of 1 to 999 milli, no device twice.
pub fn parse_devices(value: &str) -> Result<Vec<DeviceAssignment>, DevicesError> {
    let err = |why: String| DevicesError { value: value.to_string(), why };
    let mut out: Vec<DeviceAssignment> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (dev, milli) = match part.split_once(':') {
            None => (part, GPU_MILLI as u16),
            Some((d, m)) => {
                let m: u16 = m.trim().parse().map_err(|_| err(format!("{m:?} is not a milli-GPU amount")))?;
                if m == 0 || u32::from(m) >= GPU_MILLI {
                    return Err(err(format!("a share is 1 to 999 milli-GPU, not {m}")));
                }
                (d.trim(), m)
            }
        };
        let device: u16 = dev.parse().map_err(|_| err(format!("{dev:?} is not a device index")))?;
        if device >= 64 {
            return Err(err(format!("device index {device} is over 63")));
        }
        if out.iter().any(|a| a.device == device) {
            return Err(err(format!("device {device} is listed twice")));
        }
        out.push(DeviceAssignment { device, milli });
    }
    out.sort_by_key(|a| a.device);
    Ok(out)
}

/// The recorded devices of a pod from its annotations: `None` without [`DEVICES_NODE_ANNOTATION`], an error when
/// the device list cannot be read.
pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<Result<Assigned, DevicesError>> {
    let node = annotations.get(DEVICES_NODE_ANNOTATION).map(|n| n.trim()).filter(|n| !n.is_empty())?;
    let devices = annotations.get(DEVICES_ANNOTATION).map(String::as_str).unwrap_or("");
    Some(parse_devices(devices).map(|devices| Assigned { node: node.to_string(), devices }))
}

/// The annotations that record `assigned` (what bind writes on the pod).
pub fn annotations(assigned: &Assigned) -> BTreeMap<String, String> {
    BTreeMap::from([
        (DEVICES_ANNOTATION.to_string(), format_devices(&assigned.devices)),
        (DEVICES_NODE_ANNOTATION.to_string(), assigned.node.clone()),
    ])
}

/// A one-replica decision placing `job` on `node` with exactly `devices` (and the job's CPU and memory).
pub fn decision_on(
    state: &ClusterState,
    node: NodeIdx,
    key: &str,
    job: &Job,
    devices: &[DeviceAssignment],
) -> Decision {
    let topo = state.topology();
    let info = &topo.nodes[node as usize];
    let pool = &topo.pools[info.pool as usize];
    Decision {
        job: key.to_string(),
        replicas: vec![ReplicaPlacement {
            replica: 0,
            node,
            node_name: info.name.clone(),
            pool: pool.id.clone(),
            zone: topo.zones[pool.zone].id.clone(),
            devices: devices.to_vec(),
            cpu_milli: job.resources.cpu_milli,
            memory_mib: job.resources.memory_mib,
            scores: Default::default(),
            feasible_nodes: 0,
        }],
    }
}

/// Whether `devices` are what `job` asks for: its number of GPUs, each with its share (a whole GPU is 1000).
pub fn matches_request(job: &Job, devices: &[DeviceAssignment]) -> bool {
    let r = &job.resources;
    let milli = if r.is_sharing() { r.gpu_milli } else { GPU_MILLI };
    devices.len() == r.gpus as usize && devices.iter().all(|d| u32::from(d.milli) == milli)
}

/// Accounts a pod bound to `node` on the devices recorded on it, when they are on that node, are what the pod
/// asks for, and fit; else `Err` with the reason (the caller falls back to [`crate::cache::account`]).
pub fn account_recorded(
    state: &mut ClusterState,
    node: NodeIdx,
    key: &str,
    job: &Job,
    assigned: &Assigned,
) -> Result<Decision, String> {
    let name = &state.topology().nodes[node as usize].name;
    if assigned.node != *name {
        return Err(format!("{DEVICES_NODE_ANNOTATION} names node {}, the pod is bound to {name}", assigned.node));
    }
    if !matches_request(job, &assigned.devices) {
        return Err(format!(
            "{DEVICES_ANNOTATION} {:?} is not what the pod asks for",
            format_devices(&assigned.devices)
        ));
    }
    let d = decision_on(state, node, key, job, &assigned.devices);
    state.apply(&d).map_err(|e| format!("the recorded devices do not fit: {e}"))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_round_trip_and_bad_values_say_what_to_write() {
        let whole = [DeviceAssignment { device: 1, milli: 1000 }, DeviceAssignment { device: 0, milli: 1000 }];
        assert_eq!(format_devices(&whole), "0,1");
        assert_eq!(parse_devices("0,1").unwrap(), vec![whole[1], whole[0]]);
        let share = [DeviceAssignment { device: 3, milli: 250 }];
        assert_eq!(format_devices(&share), "3:250");
        assert_eq!(parse_devices(" 3:250 ").unwrap(), share.to_vec());
        assert_eq!(parse_devices("").unwrap(), vec![]);
        for (bad, why) in [
            ("a", "is not a device index"),
            ("0,0", "listed twice"),
            ("64", "over 63"),
            ("1:1000", "1 to 999"),
            ("1:0", "1 to 999"),
            ("1:x", "not a milli-GPU amount"),
        ] {
            let e = parse_devices(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(DEVICES_ANNOTATION) && e.contains("write device indices"), "{e}");
        }
        let mut a = BTreeMap::new();
        assert_eq!(from_annotations(&a), None, "no node annotation: nothing recorded");
        a.insert(DEVICES_ANNOTATION.to_string(), "2,3".to_string());
        a.insert(DEVICES_NODE_ANNOTATION.to_string(), "n1".to_string());
        let got = from_annotations(&a).unwrap().unwrap();
        assert_eq!(got.node, "n1");
        assert_eq!(annotations(&got), a);
    }
}
