//! Test doubles that speak the real protocols: a kubelet (`Registration` on a temporary `kubelet.sock`, which
//! connects back to the plugin's socket as the kubelet does) and a Kubernetes API server that lists pods.

#![allow(dead_code)]

use axum::extract::State;
use axum::http::Uri;
use sovra_device_plugin::api::device_plugin_client::DevicePluginClient;
use sovra_device_plugin::api::registration_server::{Registration, RegistrationServer};
use sovra_device_plugin::api::{Device, DevicePluginOptions, Empty, ListAndWatchResponse, RegisterRequest};
use sovra_device_plugin::kubelet::{KUBELET_SOCKET, connect};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// What the test kubelet saw and got when a plugin registered: the request, then (connecting back to the
/// plugin's socket) its options and its first device list, and the open ListAndWatch stream and client.
pub struct Registered {
    pub request: RegisterRequest,
    pub options: DevicePluginOptions,
    pub first_list: Vec<Device>,
    pub stream: Streaming<ListAndWatchResponse>,
    pub client: DevicePluginClient<Channel>,
}

struct Kubelet {
    dir: PathBuf,
    refuse: Option<String>,
    tx: mpsc::UnboundedSender<Result<Registered, String>>,
}

#[tonic::async_trait]
impl Registration for Kubelet {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        if let Some(why) = &self.refuse {
            return Err(Status::invalid_argument(why.clone()));
        }
        // As the kubelet: check the version, answer, then connect to <dir>/<endpoint> and start ListAndWatch.
        if req.version != "v1beta1" {
            return Err(Status::invalid_argument(format!("unsupported version {:?}", req.version)));
        }
        let path = self.dir.join(&req.endpoint);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let back = async {
                let channel = connect(&path).await.map_err(|e| format!("connecting back to {path:?}: {e}"))?;
                let mut client = DevicePluginClient::new(channel).max_decoding_message_size(16 << 20);
                let options = client.get_device_plugin_options(Empty {}).await.map_err(|e| e.to_string())?.into_inner();
                let mut stream = client.list_and_watch(Empty {}).await.map_err(|e| e.to_string())?.into_inner();
                let first = stream.message().await.map_err(|e| e.to_string())?.ok_or("ListAndWatch ended at once")?;
                Ok(Registered { request: req, options, first_list: first.devices, stream, client })
            };
            let _ = tx.send(back.await);
        });
        Ok(Response::new(Empty {}))
    }
}

/// A running test kubelet.
pub struct TestKubelet {
    pub registrations: mpsc::UnboundedReceiver<Result<Registered, String>>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl TestKubelet {
    /// Serves `Registration` on `<dir>/kubelet.sock`; refuses every registration with `refuse` when given.
    pub fn start(dir: &Path, refuse: Option<&str>) -> TestKubelet {
        let sock = dir.join(KUBELET_SOCKET);
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let (tx, registrations) = mpsc::unbounded_channel();
        let svc = RegistrationServer::new(Kubelet { dir: dir.to_path_buf(), refuse: refuse.map(str::to_string), tx });
        let (stop, stop_rx) = oneshot::channel::<()>();
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            let c = l.accept().await.map(|(s, _)| s);
            Some((c, l))
        });
        let done = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
        TestKubelet { registrations, stop: Some(stop), done }
    }

    /// The next registration, within `secs`.
    pub async fn next(&mut self, secs: u64) -> Registered {
        match tokio::time::timeout(Duration::from_secs(secs), self.registrations.recv()).await {
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(e))) => panic!("the plugin registered but the kubelet could not use it: {e}"),
            Ok(None) => panic!("registration channel closed"),
            Err(_) => panic!("no registration within {secs} s"),
        }
    }

    /// Stops as a restarting kubelet does: the server goes, and every socket in the directory is removed.
    pub async fn stop_and_clean(mut self, dir: &Path) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.done.abort();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".sock") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// A Kubernetes API server that answers `GET /api/v1/pods` with the pods in `pods` and records each query.
#[derive(Clone, Default)]
pub struct FakeApi {
    pub pods: Arc<Mutex<Vec<serde_json::Value>>>,
    pub queries: Arc<Mutex<Vec<String>>>,
}

async fn api(State(api): State<FakeApi>, uri: Uri) -> axum::response::Response {
    api.queries.lock().unwrap().push(uri.to_string());
    let body = if uri.path() == "/api/v1/pods" {
        serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
            "items": api.pods.lock().unwrap().clone()})
    } else {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"})
    };
    let status = if uri.path() == "/api/v1/pods" { 200 } else { 404 };
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap()
}

impl FakeApi {
    /// Serves on loopback; returns its URL.
    pub async fn serve(&self) -> String {
        let app = axum::Router::new().fallback(api).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }
}

/// A kubeconfig file for `server`.
pub fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {server}\nusers:\n- name: t\n  user: {{}}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: t\ncurrent-context: t\n"
        ),
    )
    .unwrap();
    path
}

/// A pod bound to `node` asking for `milli` of `sovra.io/gpu-milli`, with the Sovra annotation when given.
pub fn share_pod(name: &str, node: &str, milli: u32, phase: &str, annotation: Option<&str>) -> serde_json::Value {
    let mut meta = serde_json::json!({"name": name, "namespace": "ml", "uid": format!("uid-{name}"),
        "creationTimestamp": "2026-01-01T00:00:00Z"});
    if let Some(a) = annotation {
        // As the extender writes them at bind: the devices, and the node they are on.
        meta["annotations"] = serde_json::json!({"sovra.io/gpu-devices": a, "sovra.io/gpu-devices-node": node});
    }
    serde_json::json!({"metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "main",
            "resources": {"limits": {"sovra.io/gpu-milli": milli.to_string()}}}]},
        "status": {"phase": phase}})
}

/// A node daemon inventory: GPU 0 and 2 healthy, GPU 1 unhealthy (XID 79), GPU 3 in MIG mode.
pub fn inventory_json(gpu2_healthy: bool) -> String {
    let h = |ok: bool| {
        if ok { r#"{"state": "healthy"}"# } else { r#"{"state": "unhealthy", "reason": "XID 79"}"# }
    };
    format!(
        r#"{{"backend": "fake (fixture)", "state": {{"state": "ready"}}, "driver_version": "550.54.15", "cuda_driver_version": "12.4",
  "gpus": [
    {{"index": 0, "uuid": "GPU-00000000-aaaa", "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "compute_capability": [9, 0], "health": {}}},
    {{"index": 1, "uuid": "GPU-11111111-bbbb", "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "compute_capability": [9, 0], "health": {}}},
    {{"index": 2, "uuid": "GPU-22222222-cccc", "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "compute_capability": [9, 0], "numa_node": 1, "health": {}}},
    {{"index": 3, "uuid": "GPU-33333333-dddd", "name": "NVIDIA A100-SXM4-80GB", "memory_total_mib": 81920, "compute_capability": [8, 0], "mig_enabled": true, "health": {}}}
  ]}}"#,
        h(true),
        h(false),
        h(gpu2_healthy),
        h(true)
    )
}
