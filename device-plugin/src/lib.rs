//! `sovra-device-plugin`: Sovra's kubelet device plugin for GPU shares (docs/kubernetes.md, "GPU shares on the
//! node").
//!
//! It speaks the kubelet device plugin API `v1beta1` over unix sockets: it serves `DevicePlugin` on its own socket
//! in the kubelet's device-plugins directory and registers the resource `sovra.io/gpu-milli` with the kubelet's
//! `Registration` service on `kubelet.sock`, again whenever the kubelet restarts. It advertises one device ID per
//! milli-GPU ([`devices`]), and at Allocate hands the container the GPU that Sovra chose for the pod, read from
//! the pod's `sovra.io/gpu-devices` annotation ([`lookup`]), failing closed when the pod cannot be told apart.

/// The kubelet device plugin API, `v1beta1` (`proto/deviceplugin/v1beta1/api.proto`): messages, and clients and
/// servers of `Registration` and `DevicePlugin`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod api {
    tonic::include_proto!("v1beta1");
}

pub mod devices;
pub mod inventory;
pub mod kube_pods;
pub mod kubelet;
pub mod lookup;
pub mod plugin;
