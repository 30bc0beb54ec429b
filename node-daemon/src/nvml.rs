//! The NVML backend (`nvml-wrapper`).
//!
//! [`open`] loads NVML (the system's `libnvidia-ml.so.1`, or a library path — the tests point it at the test NVML
//! library). Failure is not an error of the daemon: [`inventory`] then reports [`BackendState::Unavailable`] with
//! the reason and what to do, and logs it once. Per GPU: UUID, name, memory total and used, compute capability,
//! MIG mode and instances (each instance with its own UUID and memory), NVLink peers (remote PCI bus ids of active
//! links), NUMA node, PCI bus id, temperature, power, utilisation; per node: driver and CUDA versions. Fields a GPU
//! does not support are left empty rather than failing the whole inventory.

use crate::health::HealthPolicy;
use crate::inventory::{BackendState, GpuRecord, Inventory, MigRecord, XidEvent};
use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;
use std::ffi::OsStr;

/// NVML exposes at most this many NVLinks per GPU (`NVML_NVLINK_MAX_LINKS`).
const MAX_LINKS: u32 = 18;

/// Loads NVML. `lib_path` overrides the library (default: `libnvidia-ml.so.1` from the system).
pub fn open(lib_path: Option<&OsStr>) -> Result<Nvml, String> {
    let mut builder = Nvml::builder();
    if let Some(p) = lib_path {
        builder.lib_path(p);
    }
    builder.init().map_err(explain)
}

/// A readable reason for an NVML failure, with what to do.
pub fn explain(e: NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(inner) => format!(
            "NVML library not found ({inner}); install the NVIDIA driver, or run with --backend fake on machines \
             without GPUs"
        ),
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded (nvidia kernel module missing)".into(),
        NvmlError::NoPermission => "no permission to use NVML; run as a user with access to /dev/nvidia*".into(),
        other => format!("NVML failed: {other}"),
    }
}

/// The node's inventory read through `nvml` (or the unavailable state when `nvml` is an error).
pub fn inventory(nvml: Result<&Nvml, &String>) -> Inventory {
    let nvml = match nvml {
        Ok(n) => n,
        Err(reason) => return Inventory::unavailable("nvml", reason.clone()),
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => return Inventory::unavailable("nvml", explain(e)),
    };
    let mut gpus = Vec::new();
    for index in 0..count {
        match read_gpu(nvml, index) {
            Ok(g) => gpus.push(g),
            Err(e) => return Inventory::unavailable("nvml", format!("GPU {index}: {}", explain(e))),
        }
    }
    let cuda = nvml.sys_cuda_driver_version().ok().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
    Inventory {
        backend: "nvml".into(),
        state: BackendState::Ready,
        driver_version: nvml.sys_driver_version().ok(),
        cuda_driver_version: cuda,
        gpus,
    }
}

fn read_gpu(nvml: &Nvml, index: u32) -> Result<GpuRecord, NvmlError> {
    let d = nvml.device_by_index(index)?;
    let memory = d.memory_info()?;
    let cc = d.cuda_compute_capability()?;
    let mig_enabled = d.mig_mode().map(|m| m.current == 1).unwrap_or(false);
    let mut mig_instances = Vec::new();
    if mig_enabled {
        let n = d.mig_device_count().unwrap_or(0);
        for i in 0..n {
            // Unpopulated slots answer NOT_FOUND: skip them.
            let Ok(m) = d.mig_device_by_index(i) else { continue };
            mig_instances.push(MigRecord {
                uuid: m.uuid()?,
                name: m.name()?,
                memory_total_mib: m.memory_info().map(|x| x.total >> 20).unwrap_or(0),
            });
        }
    }
    let mut nvlink_peers = Vec::new();
    for link in 0..MAX_LINKS {
        let l = d.link_wrapper_for(link);
        match l.is_active() {
            Ok(true) => {
                if let Ok(pci) = l.remote_pci_info() {
                    nvlink_peers.push(pci.bus_id);
                }
            }
            Ok(false) => {}
            // No more links (or no NVLink at all).
            Err(_) => break,
        }
    }
    nvlink_peers.sort();
    nvlink_peers.dedup();
    Ok(GpuRecord {
        index,
        uuid: d.uuid()?,
        name: d.name()?,
        memory_total_mib: memory.total >> 20,
        memory_used_mib: memory.used >> 20,
        compute_capability: [cc.major, cc.minor],
        pci_bus_id: d.pci_info().map(|p| p.bus_id).unwrap_or_default(),
        numa_node: d.numa_node_id().ok(),
        nvlink_peers,
        mig_enabled,
        mig_instances,
        temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
        power_mw: d.power_usage().ok(),
        utilization_pct: d.utilization_rates().ok().map(|u| u.gpu),
        health: Default::default(),
    })
}

/// Watches XID critical errors on every GPU.
pub struct XidWatch<'nvml> {
    set: Option<EventSet<'nvml>>,
    /// GPU UUID → index, to name the GPU of an event.
    uuids: Vec<(String, u32)>,
}

impl<'nvml> XidWatch<'nvml> {
    /// Registers for XID critical errors on every GPU that supports it.
    pub fn new(nvml: &'nvml Nvml) -> Result<XidWatch<'nvml>, String> {
        let count = nvml.device_count().map_err(explain)?;
        let mut set = nvml.create_event_set().map_err(explain)?;
        let mut uuids = Vec::new();
        for i in 0..count {
            let d = nvml.device_by_index(i).map_err(explain)?;
            uuids.push((d.uuid().map_err(explain)?, i));
            set = d.register_events(EventTypes::CRITICAL_XID_ERROR, set).map_err(|e| explain(e.error))?;
        }
        Ok(XidWatch { set: Some(set), uuids })
    }

    /// Waits up to `timeout_ms` for events and returns those that arrived (possibly none).
    pub fn poll(&mut self, timeout_ms: u32) -> Vec<XidEvent> {
        let mut out = Vec::new();
        let Some(set) = &self.set else { return out };
        let mut wait = timeout_ms;
        while let Ok(data) = set.wait(wait) {
            wait = 0;
            let uuid = data.device.uuid().unwrap_or_default();
            let gpu = self.uuids.iter().find(|(u, _)| *u == uuid).map(|(_, i)| *i);
            if let (Some(gpu), Some(XidError::Value(xid))) = (gpu, data.event_data) {
                out.push(XidEvent { gpu, xid });
            }
        }
        out
    }
}

/// Applies XID events to an inventory under a policy; returns the events that changed a GPU's health.
pub fn apply_events(inv: &mut Inventory, events: &[XidEvent], policy: &HealthPolicy) -> Vec<XidEvent> {
    events.iter().filter(|e| policy.verdict(e.xid).is_some_and(|h| inv.set_health(e.gpu, h))).copied().collect()
}

/// An XID event watch when NVML is open and read the GPUs; otherwise (or when NVML refuses event sets) none, with a
/// warning: health then stays as read.
pub fn watch_events<'nvml>(nvml: Result<&'nvml Nvml, &String>, inv: &Inventory) -> Option<XidWatch<'nvml>> {
    match (nvml, &inv.state) {
        (Ok(n), crate::inventory::BackendState::Ready) => match XidWatch::new(n) {
            Ok(w) => Some(w),
            Err(reason) => {
                tracing::warn!(%reason, "cannot watch XID events; health will not change");
                None
            }
        },
        _ => None,
    }
}
