//! The pod annotation that records which GPUs Sovra chose for a pod on its node, `sovra.io/gpu-devices`.
//!
//! The scheduler extender writes it, with [`GPU_DEVICES_NODE_ANNOTATION`] naming the node the indices are on, when
//! it binds a pod; Sovra's kubelet device plugin (`sovra-device-plugin`) reads both at `Allocate` to hand the
//! container exactly that GPU (the kubelet's Allocate call carries only device IDs, not the pod). The format:
//!
//! - a **share** of one GPU: `<index>:<milli>`, e.g. `3:250` = 250 milli-GPU on the GPU with NVML index 3;
//! - **whole GPUs**: the indices, comma-separated, e.g. `0,1,2,3`.
//!
//! Indices are NVML indices on the pod's node (the node daemon's inventory `gpus[].index`), at most
//! [`MAX_GPU_INDEX`]; milli is 1..=999 (1000 is a whole GPU). No spaces, no duplicates, no empty entries:
//! anything else is refused by [`parse`], with a message naming the annotation.

use crate::node::GPU_MILLI;
use std::fmt;

/// The annotation key.
pub const GPU_DEVICES_ANNOTATION: &str = "sovra.io/gpu-devices";

/// The annotation naming the node whose GPU indices [`GPU_DEVICES_ANNOTATION`] lists (indices mean nothing on
/// another node).
pub const GPU_DEVICES_NODE_ANNOTATION: &str = "sovra.io/gpu-devices-node";

/// The largest GPU index the annotation accepts (a node has far fewer GPUs; the bound keeps values short).
pub const MAX_GPU_INDEX: u32 = 1023;

/// The GPUs Sovra chose for a pod on its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GpuDevices {
    /// `milli` (1..=999) milli-GPU of the GPU with NVML index `gpu`.
    Share {
        /// NVML index.
        gpu: u32,
        /// Milli-GPU, 1..=999.
        milli: u32,
    },
    /// Whole GPUs, by NVML index, in the order chosen (no duplicates, at least one).
    Whole(Vec<u32>),
}

/// Why an annotation value is not a valid [`GpuDevices`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "annotation {GPU_DEVICES_ANNOTATION}={value:?}: {problem} (write `<index>:<milli>` for a share, e.g. `3:250`, or `<index>,<index>,…` for whole GPUs, e.g. `0,1`)"
)]
pub struct GpuDevicesError {
    /// The value as read.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

fn index(text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || (text.len() > 1 && text.starts_with('0')) {
        return Err(format!("GPU index {text:?} is not a decimal number without sign or leading zero"));
    }
    match text.parse::<u32>() {
        Ok(i) if i <= MAX_GPU_INDEX => Ok(i),
        _ => Err(format!("GPU index {text} is above {MAX_GPU_INDEX}")),
    }
}

/// Reads an annotation value.
pub fn parse(value: &str) -> Result<GpuDevices, GpuDevicesError> {
    let fail = |problem: String| GpuDevicesError { value: value.to_string(), problem };
    if let Some((gpu, milli)) = value.split_once(':') {
        let gpu = index(gpu).map_err(fail)?;
        let m = index(milli).map_err(|_| fail(format!("milli {milli:?} is not a whole number")))?;
        if m == 0 || m >= GPU_MILLI {
            return Err(fail(format!("milli {m} is outside 1..={}", GPU_MILLI - 1)));
        }
        return Ok(GpuDevices::Share { gpu, milli: m });
    }
    let mut gpus = Vec::new();
    for part in value.split(',') {
        let i = index(part).map_err(fail)?;
        if gpus.contains(&i) {
            return Err(fail(format!("GPU {i} is listed twice")));
        }
        gpus.push(i);
    }
    Ok(GpuDevices::Whole(gpus))
}

impl fmt::Display for GpuDevices {
    /// The annotation value ([`parse`] reads it back to the same value).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuDevices::Share { gpu, milli } => write!(f, "{gpu}:{milli}"),
            GpuDevices::Whole(gpus) => {
                let parts: Vec<String> = gpus.iter().map(u32::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_whole_gpus_round_trip() {
        for (text, value) in [
            ("3:250", GpuDevices::Share { gpu: 3, milli: 250 }),
            ("0:1", GpuDevices::Share { gpu: 0, milli: 1 }),
            ("7:999", GpuDevices::Share { gpu: 7, milli: 999 }),
            ("0", GpuDevices::Whole(vec![0])),
            ("4,5,6,7", GpuDevices::Whole(vec![4, 5, 6, 7])),
            ("2,0", GpuDevices::Whole(vec![2, 0])),
        ] {
            assert_eq!(parse(text), Ok(value.clone()), "{text}");
            assert_eq!(value.to_string(), text);
        }
    }

    #[test]
    fn malformed_values_are_refused_naming_the_annotation() {
        for bad in [
            "", " 3:250", "3:250 ", "3:0", "3:1000", "3:", ":250", "-1:250", "+3:250", "03:250", "3:0250", "0,,1",
            "0,1,", "1,1", "1024", "1:2:3", "a", "0, 1", "3:25.0", "0,1:250",
        ] {
            let e = parse(bad).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains(GPU_DEVICES_ANNOTATION) && msg.contains("write `<index>:<milli>`"), "{bad}: {msg}");
        }
    }
}
