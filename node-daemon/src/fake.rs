//! **The fake GPU backend**, for machines without GPUs: GPUs from a fixture file and scriptable XID events.
//! Everything it reports carries `fake` in its backend name, and the daemon logs that it is fake at start.
//!
//! Fixture (YAML or JSON):
//! ```yaml
//! gpus:                       # GpuRecord fields (see `inventory`), `index` implied by position when omitted
//!   - {uuid: GPU-fake-0, name: NVIDIA H100 80GB HBM3, memory_total_mib: 81559, compute_capability: [9, 0]}
//! events:                     # scripted XID events: after this many seconds, on this GPU
//!   - {after_s: 30, gpu: 0, xid: 79}
//! ```

use crate::inventory::{BackendState, GpuRecord, Inventory, XidEvent};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixture {
    #[serde(default)]
    driver_version: Option<String>,
    #[serde(default)]
    cuda_driver_version: Option<String>,
    gpus: Vec<serde_yaml_ng::Value>,
    #[serde(default)]
    events: Vec<ScriptedEvent>,
}

/// A scripted XID event.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedEvent {
    /// Seconds after the backend starts.
    pub after_s: f64,
    /// GPU index.
    pub gpu: u32,
    /// The XID.
    pub xid: u64,
}

/// The fake backend.
#[derive(Debug, Clone)]
pub struct FakeBackend {
    inventory: Inventory,
    events: Vec<ScriptedEvent>,
    delivered: usize,
}

impl FakeBackend {
    /// Loads a fixture; errors name the file, the field and what is wrong.
    pub fn load(path: &Path) -> Result<FakeBackend, String> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: cannot read the file: {e}"))?;
        let raw: RawFixture = sovra_domain::parse_yaml_file(&file, &text).map_err(|e| e.to_string())?;
        let mut gpus = Vec::new();
        for (i, mut g) in raw.gpus.into_iter().enumerate() {
            if let Some(m) = g.as_mapping_mut()
                && !m.contains_key("index")
            {
                m.insert("index".into(), (i as u64).into());
            }
            let rec: GpuRecord = from_value(g).map_err(|e| format!("{file}: gpus[{i}].{e}"))?;
            if rec.index as usize != i {
                return Err(format!("{file}: gpus[{i}].index: is {} but must equal the position {i}", rec.index));
            }
            if rec.memory_total_mib == 0 {
                return Err(format!("{file}: gpus[{i}].memory_total_mib: must be at least 1"));
            }
            if rec.uuid.trim().is_empty() {
                return Err(format!("{file}: gpus[{i}].uuid: must not be empty"));
            }
            gpus.push(rec);
        }
        for (i, e) in raw.events.iter().enumerate() {
            if !(e.after_s.is_finite() && e.after_s >= 0.0) {
                return Err(format!("{file}: events[{i}].after_s: {} must be 0 or more seconds", e.after_s));
            }
            if e.gpu as usize >= gpus.len() {
                return Err(format!("{file}: events[{i}].gpu: GPU {} does not exist ({} GPUs)", e.gpu, gpus.len()));
            }
        }
        let mut events = raw.events;
        events.sort_by(|a, b| a.after_s.total_cmp(&b.after_s));
        Ok(FakeBackend {
            inventory: Inventory {
                backend: format!("fake (fixture {file})"),
                state: BackendState::Ready,
                driver_version: raw.driver_version.or(Some("fake".into())),
                cuda_driver_version: raw.cuda_driver_version,
                gpus,
            },
            events,
            delivered: 0,
        })
    }

    /// A fake backend with the GPUs a cluster file describes for `node` (NVML-style names, PCI bus ids
    /// `0000:1x:00.0`, NVLink peers and MIG instances as described, everything healthy), no scripted events, and
    /// the backend name `fake (<label>)`. Load tests use it to stand up many simulated nodes without files.
    pub fn of_node(node: &sovra_domain::Node, label: &str) -> FakeBackend {
        let bus = |i: usize| format!("0000:{:02x}:00.0", 0x10 + i);
        let gpus = node
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let name = format!("NVIDIA {}", g.model.replace('-', " "));
                GpuRecord {
                    index: i as u32,
                    uuid: format!("GPU-fake-{}-{i}", node.name),
                    memory_total_mib: g.memory_mib,
                    memory_used_mib: 0,
                    compute_capability: [9, 0],
                    pci_bus_id: bus(i),
                    numa_node: g.numa_node,
                    nvlink_peers: g.nvlink_peers.iter().map(|&p| bus(p as usize)).collect(),
                    mig_enabled: !g.mig.is_empty(),
                    mig_instances: g
                        .mig
                        .iter()
                        .enumerate()
                        .map(|(m, inst)| crate::inventory::MigRecord {
                            uuid: format!("MIG-fake-{}-{i}-{m}", node.name),
                            name: format!("{name} MIG {}", inst.profile),
                            memory_total_mib: inst.memory_mib,
                        })
                        .collect(),
                    temperature_c: None,
                    power_mw: None,
                    utilization_pct: None,
                    health: Default::default(),
                    name,
                }
            })
            .collect();
        FakeBackend {
            inventory: Inventory {
                backend: format!("fake ({label})"),
                state: BackendState::Ready,
                driver_version: Some("fake".into()),
                cuda_driver_version: None,
                gpus,
            },
            events: vec![],
            delivered: 0,
        }
    }

    /// The inventory as loaded (health as the events so far have left it is the caller's to apply).
    pub fn inventory(&self) -> Inventory {
        self.inventory.clone()
    }

    /// The scripted events due by `elapsed_s` seconds that were not delivered yet.
    pub fn poll(&mut self, elapsed_s: f64) -> Vec<XidEvent> {
        let due = self.events[self.delivered..].iter().take_while(|e| e.after_s <= elapsed_s).count();
        let out = self.events[self.delivered..self.delivered + due]
            .iter()
            .map(|e| XidEvent { gpu: e.gpu, xid: e.xid })
            .collect();
        self.delivered += due;
        out
    }
}

/// Deserialises a YAML value into `T`; the error starts with the offending field's path (`memory_total_mib: …`).
fn from_value<T: serde::de::DeserializeOwned>(v: serde_yaml_ng::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}
