//! The `DevicePlugin` service: the device list (ListAndWatch), the preferred allocation, and Allocate, which
//! hands a container the GPU Sovra chose for its pod ([`crate::lookup`]).

use crate::api::device_plugin_server::DevicePlugin;
use crate::api::{
    AllocateRequest, AllocateResponse, CdiDevice, ContainerAllocateResponse, ContainerPreferredAllocationResponse,
    Device, DevicePluginOptions, Empty, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse,
};
use crate::devices::{self, gpu_of};
use crate::inventory::{Inventory, InventoryError};
use crate::lookup::{self, Ledger, PodSource};
use futures_util::Stream;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// The environment variable that names the container's GPU to the NVIDIA container runtime.
pub const VISIBLE_DEVICES_ENV: &str = "NVIDIA_VISIBLE_DEVICES";
/// The environment variable that tells the container its share, in milli-GPU.
pub const MILLI_ENV: &str = "SOVRA_GPU_MILLI";

/// Whether and how Allocate also names the GPU as a CDI device (`nvidia.com/gpu=…`, as NVIDIA's CDI spec
/// generator names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Cdi {
    /// Only the environment (`NVIDIA_VISIBLE_DEVICES`).
    #[default]
    Off,
    /// `nvidia.com/gpu=<UUID>`.
    Uuid,
    /// `nvidia.com/gpu=<index>`.
    Index,
}

struct Shared<S> {
    node: String,
    source: S,
    cdi: Cdi,
    inventory: Mutex<Option<Inventory>>,
    devices: watch::Sender<Vec<Device>>,
    // Held across the pod listing: concurrent Allocate calls are decided one after the other.
    ledger: tokio::sync::Mutex<Ledger>,
}

/// The plugin's state, shared by every server generation (the plugin serves anew after a kubelet restart).
pub struct Plugin<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Plugin<S> {
    fn clone(&self) -> Self {
        Plugin { shared: self.shared.clone() }
    }
}

impl<S: PodSource> Plugin<S> {
    /// A plugin for `node`, with its first inventory.
    pub fn new(node: &str, source: S, inventory: Inventory, cdi: Cdi) -> Plugin<S> {
        let (devices, _) = watch::channel(devices::device_list(&inventory));
        Plugin {
            shared: Arc::new(Shared {
                node: node.to_string(),
                source,
                cdi,
                inventory: Mutex::new(Some(inventory)),
                devices,
                ledger: tokio::sync::Mutex::new(Ledger::new()),
            }),
        }
    }

    /// Takes a newly read inventory; when it could not be read, every device becomes `Unhealthy` and Allocate is
    /// refused until it can (fail closed). ListAndWatch streams send the new list only when it changed.
    pub fn set_inventory(&self, read: Result<Inventory, InventoryError>) {
        let list = match read {
            Ok(inv) => {
                let list = devices::device_list(&inv);
                *self.shared.inventory.lock().unwrap_or_else(|e| e.into_inner()) = Some(inv);
                list
            }
            Err(e) => {
                tracing::error!("{e}; reporting every GPU share as unhealthy until the inventory reads again");
                *self.shared.inventory.lock().unwrap_or_else(|e| e.into_inner()) = None;
                devices::all_unhealthy(self.shared.devices.borrow().clone())
            }
        };
        self.shared.devices.send_if_modified(|cur| {
            let changed = *cur != list;
            *cur = list;
            changed
        });
    }

    /// The current device list.
    pub fn devices(&self) -> Vec<Device> {
        self.shared.devices.borrow().clone()
    }

    /// The gRPC service for one server generation: its ListAndWatch streams end when `stop` changes or is dropped.
    pub fn service(&self, stop: watch::Receiver<()>) -> PluginService<S> {
        PluginService { plugin: self.clone(), stop }
    }

    fn gpu_uuid(&self, gpu: u32) -> Result<String, String> {
        let guard = self.shared.inventory.lock().unwrap_or_else(|e| e.into_inner());
        let Some(inv) = guard.as_ref() else {
            return Err("the inventory cannot be read now".into());
        };
        match inv.gpu(gpu) {
            None => Err(format!("node {} has no GPU {gpu} in its inventory", self.shared.node)),
            Some(g) if g.mig_enabled => Err(format!("GPU {gpu} is in MIG mode; shares are not served on it")),
            Some(g) => match &g.unhealthy {
                Some(reason) => Err(format!("GPU {gpu} ({}) is unhealthy: {reason}", g.uuid)),
                None => Ok(g.uuid.clone()),
            },
        }
    }

    fn container_response(&self, gpu: u32, uuid: String, milli: u64) -> ContainerAllocateResponse {
        let mut r = ContainerAllocateResponse::default();
        r.envs.insert(VISIBLE_DEVICES_ENV.into(), uuid.clone());
        r.envs.insert(MILLI_ENV.into(), milli.to_string());
        match self.shared.cdi {
            Cdi::Off => {}
            Cdi::Uuid => r.cdi_devices.push(CdiDevice { name: format!("nvidia.com/gpu={uuid}") }),
            Cdi::Index => r.cdi_devices.push(CdiDevice { name: format!("nvidia.com/gpu={gpu}") }),
        }
        r
    }

    /// Allocate: one answer per container request, or a refusal for the whole call (the kubelet then fails the
    /// pod's admission). Nothing is recorded as allocated when any container is refused.
    pub async fn allocate(&self, req: AllocateRequest) -> Result<AllocateResponse, Status> {
        let mut amounts = Vec::with_capacity(req.container_requests.len());
        for (i, c) in req.container_requests.iter().enumerate() {
            if c.devices_ids.is_empty() {
                return Err(Status::invalid_argument(format!("container_requests[{i}] names no device")));
            }
            if let Some(bad) = c.devices_ids.iter().find(|id| gpu_of(id).is_none()) {
                return Err(Status::invalid_argument(format!(
                    "container_requests[{i}]: device ID {bad:?} is not one of this plugin's (gpu<index>-<unit>)"
                )));
            }
            amounts.push(c.devices_ids.len() as u64);
        }
        let mut ledger = self.shared.ledger.lock().await;
        let pods = self.shared.source.pods_on_node().await.map_err(|e| Status::unavailable(e.to_string()))?;
        lookup::prune(&mut ledger, &pods);
        let mut taken = Ledger::new();
        let mut responses = Vec::with_capacity(amounts.len());
        for milli in amounts {
            let both: Ledger = ledger.union(&taken).cloned().collect();
            let choice = lookup::choose(&self.shared.node, &pods, milli, &both)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            let uuid = self
                .gpu_uuid(choice.gpu)
                .map_err(|e| Status::failed_precondition(format!("pod {}: {e}; refusing the share", choice.pod)))?;
            tracing::info!(pod = %choice.pod, container = %choice.container, gpu = choice.gpu, %uuid, milli, "allocated a GPU share");
            responses.push(self.container_response(choice.gpu, uuid, milli));
            taken.insert((choice.uid, choice.container));
        }
        ledger.extend(taken);
        Ok(AllocateResponse { container_responses: responses })
    }

    /// GetPreferredAllocation: the IDs that `must_include` names, then available IDs of the GPU Sovra chose for
    /// the pod being started (when the lookup finds one), then the other available IDs in order. Advice only:
    /// a failed lookup is no error here (Allocate refuses later, with the reason).
    pub async fn preferred(&self, req: PreferredAllocationRequest) -> PreferredAllocationResponse {
        let pods = self.shared.source.pods_on_node().await.ok();
        let ledger = self.shared.ledger.lock().await.clone();
        let mut out = Vec::with_capacity(req.container_requests.len());
        for c in req.container_requests {
            let size = usize::try_from(c.allocation_size).unwrap_or(0);
            let chosen = pods
                .as_ref()
                .and_then(|p| lookup::choose(&self.shared.node, p, size as u64, &ledger).ok())
                .map(|choice| choice.gpu);
            let mut ids: Vec<String> = c.must_include_device_i_ds.clone();
            let mut rest: Vec<&String> =
                c.available_device_i_ds.iter().filter(|id| !c.must_include_device_i_ds.contains(id)).collect();
            rest.sort_by_key(|id| (gpu_of(id) != chosen, id.as_str()));
            rest.dedup();
            ids.extend(rest.into_iter().cloned());
            ids.truncate(size.max(c.must_include_device_i_ds.len()));
            out.push(ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        PreferredAllocationResponse { container_responses: out }
    }
}

/// The `DevicePlugin` gRPC service of one server generation.
pub struct PluginService<S> {
    plugin: Plugin<S>,
    stop: watch::Receiver<()>,
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: PodSource> DevicePlugin for PluginService<S> {
    async fn get_device_plugin_options(&self, _: Request<Empty>) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<DeviceStream>, Status> {
        let devices = self.plugin.shared.devices.subscribe();
        let stop = self.stop.clone();
        let stream = futures_util::stream::unfold((devices, stop, true), |(mut devices, mut stop, first)| async move {
            if !first {
                tokio::select! {
                    changed = devices.changed() => changed.ok()?,
                    _ = stop.changed() => return None,
                }
            }
            let list = devices.borrow_and_update().clone();
            Some((Ok(ListAndWatchResponse { devices: list }), (devices, stop, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Ok(Response::new(self.plugin.preferred(req.into_inner()).await))
    }

    async fn allocate(&self, req: Request<AllocateRequest>) -> Result<Response<AllocateResponse>, Status> {
        self.plugin.allocate(req.into_inner()).await.map(Response::new).inspect_err(|e| {
            tracing::warn!("Allocate refused: {}", e.message());
        })
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// The options this plugin registers with and answers: no PreStartContainer, GetPreferredAllocation available.
pub fn options() -> DevicePluginOptions {
    DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }
}
