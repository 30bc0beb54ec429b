//! The GPUs of this node, read from a node daemon inventory: the JSON `sovra-node-daemon inventory` prints (or a
//! fixture file of the same shape). Only the fields the plugin needs are read; others are ignored, so newer
//! inventories still load.

use serde::Deserialize;
use sovra_domain::gpu_devices::MAX_GPU_INDEX;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Largest inventory file read, bytes (an 8-GPU inventory is a few KiB).
pub const MAX_INVENTORY_BYTES: u64 = 4 << 20;

/// One GPU of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// NVML index (what the `sovra.io/gpu-devices` annotation names).
    pub index: u32,
    /// GPU UUID, e.g. `GPU-5f3c…` (what the container gets in `NVIDIA_VISIBLE_DEVICES`).
    pub uuid: String,
    /// NVML name.
    pub name: String,
    /// NUMA node, when known (reported to the kubelet as the devices' topology).
    pub numa_node: Option<u32>,
    /// MIG mode: such a GPU is split by MIG, not shared by Sovra, so it is not advertised.
    pub mig_enabled: bool,
    /// `None` when healthy, else why not (e.g. `XID 79`).
    pub unhealthy: Option<String>,
}

/// The node's GPUs, by ascending index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The GPUs.
    pub gpus: Vec<Gpu>,
}

impl Inventory {
    /// The GPU with NVML index `index`.
    pub fn gpu(&self, index: u32) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.index == index)
    }
}

/// Why an inventory file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file cannot be read.
    #[error("--inventory {path}: cannot read it: {source} (give the JSON `sovra-node-daemon inventory` prints)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_INVENTORY_BYTES`].
    #[error("--inventory {path}: {bytes} bytes is more than the limit of {MAX_INVENTORY_BYTES}; is it an inventory?")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The JSON does not have the inventory's shape.
    #[error(
        "--inventory {path}: not a node daemon inventory: {message} (expected the JSON of `sovra-node-daemon inventory`: {{\"gpus\": [{{\"index\": 0, \"uuid\": \"GPU-…\", \"name\": …}}]}})"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// Where and how the JSON broke.
        message: String,
    },
    /// The JSON is an inventory but a value in it cannot be used.
    #[error("--inventory {path}: {field}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `gpus[2].uuid`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Deserialize)]
struct RawInventory {
    #[serde(default)]
    state: Option<serde_json::Value>,
    gpus: Vec<RawGpu>,
}

#[derive(Deserialize)]
struct RawGpu {
    index: u32,
    uuid: String,
    name: String,
    #[serde(default)]
    numa_node: Option<u32>,
    #[serde(default)]
    mig_enabled: bool,
    #[serde(default)]
    health: Option<serde_json::Value>,
}

/// Reads and checks an inventory file: GPU indices unique and at most [`MAX_GPU_INDEX`], UUIDs non-empty,
/// printable and unique, and a backend state other than `unavailable`.
pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let read = |source| InventoryError::Read { path: path.to_path_buf(), source };
    let bytes = std::fs::metadata(path).map_err(read)?.len();
    if bytes > MAX_INVENTORY_BYTES {
        return Err(InventoryError::TooLarge { path: path.to_path_buf(), bytes });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse(&text, path)
}

/// Parses inventory JSON; `path` only names the source in errors.
pub fn parse(text: &str, path: &Path) -> Result<Inventory, InventoryError> {
    let raw: RawInventory = serde_json::from_str(text)
        .map_err(|e| InventoryError::Format { path: path.to_path_buf(), message: e.to_string() })?;
    let invalid = |field: String, problem: String| InventoryError::Invalid { path: path.to_path_buf(), field, problem };
    if let Some(state) = &raw.state
        && state.get("state").and_then(|s| s.as_str()) == Some("unavailable")
    {
        let reason = state.get("reason").and_then(|r| r.as_str()).unwrap_or("no reason given");
        return Err(invalid(
            "state".into(),
            format!("the node daemon could not read the GPUs ({reason}); fix the node daemon first"),
        ));
    }
    let mut indices = BTreeSet::new();
    let mut uuids = BTreeSet::new();
    let mut gpus = Vec::with_capacity(raw.gpus.len());
    for (i, g) in raw.gpus.into_iter().enumerate() {
        if g.index > MAX_GPU_INDEX {
            return Err(invalid(format!("gpus[{i}].index"), format!("{} is above {MAX_GPU_INDEX}", g.index)));
        }
        if !indices.insert(g.index) {
            return Err(invalid(format!("gpus[{i}].index"), format!("index {} appears twice", g.index)));
        }
        let uuid = g.uuid.trim().to_string();
        if uuid.is_empty() || uuid.len() > 128 || !uuid.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                format!("gpus[{i}].uuid"),
                format!("{:?} is not a GPU UUID (non-empty, printable ASCII, no spaces)", g.uuid),
            ));
        }
        if !uuids.insert(uuid.clone()) {
            return Err(invalid(format!("gpus[{i}].uuid"), format!("{uuid} appears twice")));
        }
        let unhealthy = match &g.health {
            None => None,
            Some(h) => match h.get("state").and_then(|s| s.as_str()) {
                Some("healthy") => None,
                Some("unhealthy") => Some(h.get("reason").and_then(|r| r.as_str()).unwrap_or("unhealthy").to_string()),
                _ => {
                    return Err(invalid(
                        format!("gpus[{i}].health"),
                        format!("{h} is neither {{\"state\": \"healthy\"}} nor {{\"state\": \"unhealthy\", …}}"),
                    ));
                }
            },
        };
        gpus.push(Gpu {
            index: g.index,
            uuid,
            name: g.name,
            numa_node: g.numa_node,
            mig_enabled: g.mig_enabled,
            unhealthy,
        });
    }
    gpus.sort_by_key(|g| g.index);
    Ok(Inventory { gpus })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Inventory, InventoryError> {
        parse(text, Path::new("inv.json"))
    }

    #[test]
    fn reads_a_node_daemon_inventory() {
        let inv = p(r#"{"backend": "fake", "state": {"state": "ready"}, "driver_version": "550.54.15",
            "gpus": [
              {"index": 1, "uuid": "GPU-b", "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
               "health": {"state": "unhealthy", "reason": "XID 79"}, "numa_node": 1},
              {"index": 0, "uuid": "GPU-a", "name": "NVIDIA H100 80GB HBM3", "health": {"state": "healthy"}}
            ]}"#)
        .unwrap();
        assert_eq!(inv.gpus.len(), 2);
        assert_eq!(inv.gpus[0].uuid, "GPU-a");
        assert_eq!(inv.gpus[0].unhealthy, None);
        assert_eq!(inv.gpus[1].unhealthy.as_deref(), Some("XID 79"));
        assert_eq!(inv.gpus[1].numa_node, Some(1));
        assert_eq!(inv.gpu(1).unwrap().uuid, "GPU-b");
    }

    #[test]
    fn bad_inventories_name_the_flag_and_the_field() {
        for (text, want) in [
            ("not json", "not a node daemon inventory"),
            (r#"{"gpus": [{"index": 0, "name": "x"}]}"#, "missing field `uuid`"),
            (r#"{"gpus": [{"index": 0, "uuid": "", "name": "x"}]}"#, "gpus[0].uuid"),
            (r#"{"gpus": [{"index": 0, "uuid": "a b", "name": "x"}]}"#, "gpus[0].uuid"),
            (
                r#"{"gpus": [{"index": 0, "uuid": "a", "name": "x"}, {"index": 0, "uuid": "b", "name": "y"}]}"#,
                "gpus[1].index",
            ),
            (
                r#"{"gpus": [{"index": 0, "uuid": "a", "name": "x"}, {"index": 1, "uuid": "a", "name": "y"}]}"#,
                "gpus[1].uuid",
            ),
            (r#"{"gpus": [{"index": 5000, "uuid": "a", "name": "x"}]}"#, "gpus[0].index"),
            (r#"{"gpus": [{"index": 0, "uuid": "a", "name": "x", "health": {"state": "meh"}}]}"#, "gpus[0].health"),
            (r#"{"state": {"state": "unavailable", "reason": "NVML missing"}, "gpus": []}"#, "NVML missing"),
        ] {
            let e = p(text).expect_err(text).to_string();
            assert!(e.starts_with("--inventory inv.json") && e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn a_missing_file_names_the_flag() {
        let e = load(Path::new("/nonexistent/inv.json")).unwrap_err().to_string();
        assert!(e.contains("--inventory /nonexistent/inv.json: cannot read it"), "{e}");
    }
}
