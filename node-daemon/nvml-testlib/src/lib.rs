//! **Test only.** A stand-in for `libnvidia-ml.so`: it exports the NVML C functions the Sovra node daemon calls and
//! answers them from a JSON fixture, so that CI exercises the daemon's *real* NVML code path (`nvml-wrapper`,
//! loaded with `Nvml::builder().lib_path(..)`) on machines without a GPU. Only NVML's C ABI is reproduced, using the
//! public `nvml-wrapper-sys` bindings for the struct layouts; no NVIDIA code is copied.
//!
//! The fixture is read at `nvmlInit_v2` from the file named by `SOVRA_TEST_NVML_FIXTURE`; without it, init fails
//! with `NVML_ERROR_DRIVER_NOT_LOADED`, like the real library on a machine without a driver. Device handles are
//! small integers disguised as pointers: GPU i is `i + 1`, its MIG device m is `(i + 1) << 16 | (m + 1)`. XID
//! events listed in the fixture are delivered one per `nvmlEventSetWait_v2`, then it times out.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use nvml_wrapper_sys::bindings::*;
use serde::Deserialize;
use std::collections::VecDeque;
use std::ffi::c_char;
use std::sync::Mutex;

/// A fixture: the node's GPUs and the XID events to deliver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// `nvmlSystemGetDriverVersion`.
    pub driver_version: String,
    /// `nvmlSystemGetCudaDriverVersion_v2` (e.g. 12040 for 12.4).
    pub cuda_driver_version: i32,
    /// The GPUs, by index.
    pub gpus: Vec<FixtureGpu>,
    /// XID events, delivered in order.
    #[serde(default)]
    pub events: Vec<FixtureEvent>,
}

/// One GPU as NVML describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureGpu {
    /// `nvmlDeviceGetName`.
    pub name: String,
    /// `nvmlDeviceGetUUID`.
    pub uuid: String,
    /// Total memory, bytes.
    pub memory_total: u64,
    /// Used memory, bytes.
    #[serde(default)]
    pub memory_used: u64,
    /// CUDA compute capability (major, minor).
    pub compute_capability: [i32; 2],
    /// PCI bus id, e.g. `00000000:17:00.0`.
    pub pci_bus_id: String,
    /// NUMA node; absent → NOT_SUPPORTED.
    #[serde(default)]
    pub numa_node: Option<u32>,
    /// Degrees C.
    #[serde(default)]
    pub temperature: u32,
    /// Milliwatts.
    #[serde(default)]
    pub power_mw: u32,
    /// GPU utilisation %.
    #[serde(default)]
    pub utilization: u32,
    /// MIG mode enabled.
    #[serde(default)]
    pub mig_enabled: bool,
    /// MIG devices (only when enabled).
    #[serde(default)]
    pub mig_devices: Vec<FixtureMig>,
    /// Remote PCI bus id of each active NVLink (link index = position).
    #[serde(default)]
    pub nvlinks: Vec<String>,
}

/// One MIG device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureMig {
    /// Name, e.g. `NVIDIA A100-SXM4-80GB MIG 3g.40gb`.
    pub name: String,
    /// UUID, e.g. `MIG-…`.
    pub uuid: String,
    /// Total memory, bytes.
    pub memory_total: u64,
}

/// An XID event on a GPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureEvent {
    /// GPU index.
    pub gpu: usize,
    /// The XID.
    pub xid: u64,
}

struct State {
    fixture: Fixture,
    events: VecDeque<FixtureEvent>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Runs `f` on the loaded fixture, or returns UNINITIALIZED.
fn with<F: FnOnce(&mut State) -> nvmlReturn_t>(f: F) -> nvmlReturn_t {
    match STATE.lock() {
        Ok(mut guard) => match guard.as_mut() {
            Some(state) => f(state),
            None => nvmlReturn_enum_NVML_ERROR_UNINITIALIZED,
        },
        Err(_) => nvmlReturn_enum_NVML_ERROR_UNKNOWN,
    }
}

/// (GPU index, MIG index) of a handle.
fn decode(device: nvmlDevice_t) -> (usize, Option<usize>) {
    let v = device as usize;
    if v >> 16 == 0 { (v.wrapping_sub(1), None) } else { ((v >> 16) - 1, Some((v & 0xFFFF) - 1)) }
}

fn gpu(state: &State, device: nvmlDevice_t) -> Option<&FixtureGpu> {
    state.fixture.gpus.get(decode(device).0)
}

/// Copies `s` and a NUL into a caller buffer of `len` bytes.
unsafe fn put_str(s: &str, out: *mut c_char, len: u32) -> nvmlReturn_t {
    if out.is_null() {
        return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
    }
    let bytes = s.as_bytes();
    if bytes.len() + 1 > len as usize {
        return nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, out, bytes.len());
        *out.add(bytes.len()) = 0;
    }
    nvmlReturn_enum_NVML_SUCCESS
}

/// Writes `v` through `out` after a null check.
unsafe fn put<T>(out: *mut T, v: T) -> nvmlReturn_t {
    if out.is_null() {
        return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
    }
    unsafe { out.write(v) };
    nvmlReturn_enum_NVML_SUCCESS
}

fn pci_info(bus_id: &str) -> nvmlPciInfo_t {
    let mut info = nvmlPciInfo_t {
        busIdLegacy: [0; 16],
        domain: 0,
        bus: 0,
        device: 0,
        pciDeviceId: 0,
        pciSubSystemId: 0,
        busId: [0; 32],
    };
    for (i, b) in bus_id.bytes().take(31).enumerate() {
        info.busId[i] = b as c_char;
    }
    for (i, b) in bus_id.bytes().take(15).enumerate() {
        info.busIdLegacy[i] = b as c_char;
    }
    info
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    let Ok(path) = std::env::var("SOVRA_TEST_NVML_FIXTURE") else {
        return nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED;
    };
    let Ok(text) = std::fs::read_to_string(&path) else { return nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED };
    let Ok(fixture) = serde_json::from_str::<Fixture>(&text) else { return nvmlReturn_enum_NVML_ERROR_UNKNOWN };
    let Ok(mut guard) = STATE.lock() else { return nvmlReturn_enum_NVML_ERROR_UNKNOWN };
    let events = fixture.events.iter().cloned().collect();
    *guard = Some(State { fixture, events });
    nvmlReturn_enum_NVML_SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    if let Ok(mut guard) = STATE.lock() {
        *guard = None;
    }
    nvmlReturn_enum_NVML_SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: u32) -> nvmlReturn_t {
    with(|s| unsafe { put_str(&s.fixture.driver_version, version, length) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(v: *mut i32) -> nvmlReturn_t {
    with(|s| unsafe { put(v, s.fixture.cuda_driver_version) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut u32) -> nvmlReturn_t {
    with(|s| unsafe { put(count, s.fixture.gpus.len() as u32) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: u32, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    with(|s| {
        if index as usize >= s.fixture.gpus.len() {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        }
        unsafe { put(device, (index as usize + 1) as nvmlDevice_t) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: nvmlDevice_t, index: *mut u32) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(_) => unsafe { put(index, decode(device).0 as u32) },
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

fn mig(s: &State, device: nvmlDevice_t) -> Option<&FixtureMig> {
    let (g, m) = decode(device);
    s.fixture.gpus.get(g)?.mig_devices.get(m?)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: nvmlDevice_t, uuid: *mut c_char, length: u32) -> nvmlReturn_t {
    with(|s| match (decode(device).1, gpu(s, device), mig(s, device)) {
        (Some(_), _, Some(m)) => unsafe { put_str(&m.uuid, uuid, length) },
        (None, Some(g), _) => unsafe { put_str(&g.uuid, uuid, length) },
        _ => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(device: nvmlDevice_t, name: *mut c_char, length: u32) -> nvmlReturn_t {
    with(|s| match (decode(device).1, gpu(s, device), mig(s, device)) {
        (Some(_), _, Some(m)) => unsafe { put_str(&m.name, name, length) },
        (None, Some(g), _) => unsafe { put_str(&g.name, name, length) },
        _ => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    with(|s| {
        let (total, used) = match (decode(device).1, gpu(s, device), mig(s, device)) {
            (Some(_), _, Some(m)) => (m.memory_total, 0),
            (None, Some(g), _) => (g.memory_total, g.memory_used),
            _ => return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
        };
        let v = nvmlMemory_v2_t { version: 0, total, reserved: 0, free: total.saturating_sub(used), used };
        unsafe { put(memory, v) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: nvmlDevice_t,
    major: *mut i32,
    minor: *mut i32,
) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(g) => unsafe {
            let r = put(major, g.compute_capability[0]);
            if r != nvmlReturn_enum_NVML_SUCCESS { r } else { put(minor, g.compute_capability[1]) }
        },
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(g) => unsafe { put(pci, pci_info(&g.pci_bus_id)) },
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNumaNodeId(device: nvmlDevice_t, node: *mut u32) -> nvmlReturn_t {
    with(|s| match gpu(s, device).map(|g| g.numa_node) {
        Some(Some(n)) => unsafe { put(node, n) },
        Some(None) => nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    _sensor: nvmlTemperatureSensors_t,
    temp: *mut u32,
) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(g) => unsafe { put(temp, g.temperature) },
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(device: nvmlDevice_t, power: *mut u32) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(g) => unsafe { put(power, g.power_mw) },
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    u: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(g) => unsafe { put(u, nvmlUtilization_t { gpu: g.utilization, memory: 0 }) },
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    current: *mut u32,
    pending: *mut u32,
) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(g) => unsafe {
            let m = u32::from(g.mig_enabled);
            let r = put(current, m);
            if r != nvmlReturn_enum_NVML_SUCCESS { r } else { put(pending, m) }
        },
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(device: nvmlDevice_t, count: *mut u32) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(g) if g.mig_enabled => unsafe { put(count, g.mig_devices.len() as u32) },
        Some(_) => nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: nvmlDevice_t,
    index: u32,
    mig: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(g) if (index as usize) < g.mig_devices.len() => {
            let h = ((decode(device).0 + 1) << 16) | (index as usize + 1);
            unsafe { put(mig, h as nvmlDevice_t) }
        }
        Some(_) => nvmlReturn_enum_NVML_ERROR_NOT_FOUND,
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(
    device: nvmlDevice_t,
    link: u32,
    active: *mut nvmlEnableState_t,
) -> nvmlReturn_t {
    with(|s| match gpu(s, device) {
        Some(g) if (link as usize) < g.nvlinks.len() => unsafe {
            put(active, nvmlEnableState_enum_NVML_FEATURE_ENABLED)
        },
        Some(_) => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo_v2(
    device: nvmlDevice_t,
    link: u32,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    with(|s| match gpu(s, device).and_then(|g| g.nvlinks.get(link as usize)) {
        Some(remote) => unsafe { put(pci, pci_info(remote)) },
        None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    with(|_| unsafe { put(set, 1usize as nvmlEventSet_t) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    _types: u64,
    _set: nvmlEventSet_t,
) -> nvmlReturn_t {
    with(|s| {
        if gpu(s, device).is_some() {
            nvmlReturn_enum_NVML_SUCCESS
        } else {
            nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(_device: nvmlDevice_t, types: *mut u64) -> nvmlReturn_t {
    with(|_| unsafe { put(types, u64::from(nvmlEventTypeXidCriticalError)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    _set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeout_ms: u32,
) -> nvmlReturn_t {
    let r = with(|s| match s.events.pop_front() {
        Some(e) => {
            let ev = nvmlEventData_t {
                device: (e.gpu + 1) as nvmlDevice_t,
                eventType: u64::from(nvmlEventTypeXidCriticalError),
                eventData: e.xid,
                gpuInstanceId: 0,
                computeInstanceId: 0,
            };
            unsafe { put(data, ev) }
        }
        None => nvmlReturn_enum_NVML_ERROR_TIMEOUT,
    });
    if r == nvmlReturn_enum_NVML_ERROR_TIMEOUT {
        std::thread::sleep(std::time::Duration::from_millis(u64::from(timeout_ms.min(20))));
    }
    r
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlEventSetFree(_set: nvmlEventSet_t) -> nvmlReturn_t {
    nvmlReturn_enum_NVML_SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(_result: nvmlReturn_t) -> *const c_char {
    c"sovra test NVML library error".as_ptr()
}
