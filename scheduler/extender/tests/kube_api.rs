//! The kube-rs side against an in-process HTTP server that plays the Kubernetes API and records every request: the
//! exact Binding path and body (checklist 9), 409 handling, the node label patch, and the Node/Pod watches that
//! fill the cache. No real API server runs here; `scripts/k8s-e2e.sh` runs the end-to-end test on a real cluster.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::*;
use sovra_domain::PolicySpec;
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, k8s};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the fake API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    content_type: String,
    body: serde_json::Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" }, "reason": reason, "message": message, "code": code});
    (StatusCode::from_u16(code).unwrap(), [(header::CONTENT_TYPE, "application/json")], body.to_string())
        .into_response()
}

fn object(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn api_node(name: &str, labels: serde_json::Value, gpus: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "1", "labels": labels},
        "spec": {},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": gpus, "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

async fn fake_api(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let pq = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    log.lock().unwrap().push(Seen {
        method: method.to_string(),
        path_and_query: pq,
        content_type: headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    });
    if query.contains("watch=true") {
        // A watch that stays open with no events.
        return Response::new(Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>()));
    }
    match (method.as_str(), path.as_str()) {
        ("POST", "/api/v1/namespaces/ml/pods/train-0/binding") => status(201, "", ""),
        ("POST", "/api/v1/namespaces/ml/pods/taken-same/binding")
        | ("POST", "/api/v1/namespaces/ml/pods/taken-other/binding") => {
            status(409, "Conflict", "Operation cannot be fulfilled on pods/binding: pod is already assigned to a node")
        }
        ("POST", "/api/v1/namespaces/ml/pods/forbidden/binding") => {
            status(403, "Forbidden", "pods \"forbidden\" is forbidden: cannot create resource \"pods/binding\"")
        }
        ("PATCH", p) if p.starts_with("/api/v1/namespaces/ml/pods/") => {
            let name = p.rsplit('/').next().unwrap();
            object(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}")}, "spec": {"containers": []}}))
        }
        ("GET", p) if p.starts_with("/api/v1/namespaces/ml/pods/") && !p.ends_with("/missing") => {
            // The first read finds the pod pending; after a binding attempt, taken-* pods are bound.
            let name = p.rsplit('/').next().unwrap();
            let reads = log.lock().unwrap().iter().filter(|s| s.method == "GET" && s.path_and_query == p).count();
            let node = match name {
                "taken-same" if reads > 1 => Some("gpu-fr-1"),
                "taken-other" if reads > 1 => Some("gpu-nl-1"),
                _ => None,
            };
            let class = if name == "health-pod" { "fr-health" } else { "eu-restricted" };
            object(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}"),
                             "labels": {"sovra.io/residency": class}},
                "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}], "nodeName": node},
                "status": {"phase": "Pending"}}))
        }
        ("PATCH", "/api/v1/nodes/gpu-fr-1") => object(api_node("gpu-fr-1", serde_json::json!({}), "8")),
        ("GET", "/api/v1/nodes") => object(serde_json::json!({"apiVersion": "v1", "kind": "NodeList",
        "metadata": {"resourceVersion": "10"},
        "items": [
            api_node("k8s-gpu-1", serde_json::json!({"node-restriction.kubernetes.io/sovra-pool": "fr-train",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559"}), "4"),
            api_node("k8s-nopool", serde_json::json!({"nvidia.com/gpu.product": "NVIDIA-L4"}), "1"),
            api_node("k8s-badpool", serde_json::json!({"node-restriction.kubernetes.io/sovra-pool": "mars"}), "1"),
        ]})),
        ("GET", "/api/v1/pods") => object(serde_json::json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "20"},
        "items": [
            {"metadata": {"name": "running-0", "namespace": "ml", "uid": "run-uid-0",
                          "labels": {"sovra.io/residency": "eu-restricted"}},
             "spec": {"nodeName": "k8s-gpu-1", "containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "3"}}}]},
             "status": {"phase": "Running"}},
            {"metadata": {"name": "done-0", "namespace": "ml", "uid": "done-uid-0",
                          "labels": {"sovra.io/residency": "eu-restricted"}},
             "spec": {"nodeName": "k8s-gpu-1", "containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
             "status": {"phase": "Succeeded"}}
        ]})),
        _ => status(404, "NotFound", &format!("no route for {method} {path}")),
    }
}

async fn api_server() -> (kube::Client, Log) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let log: Log = Arc::default();
    let app = axum::Router::new().fallback(fake_api).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (kube::Client::try_from(config).unwrap(), log)
}

fn kube_extender(client: kube::Client) -> Arc<Extender> {
    let cache = Arc::new(Cache::new(cluster()).unwrap());
    Arc::new(Extender::new(cache, PolicySpec::default(), 0, Binder::Kube(client)))
}

fn posts(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().iter().filter(|s| s.method == "POST").cloned().collect()
}

#[tokio::test]
async fn bind_creates_exactly_one_binding_with_the_exact_path_and_body() {
    let (client, log) = api_server().await;
    let (addr, _srv) = start(kube_extender(client)).await;
    post(addr, "/sovra/filter", fixture("filter_cache_mode.json")).await;
    for _ in 0..3 {
        let (s, b) = post(addr, "/sovra/bind", fixture("bind.json")).await;
        assert_eq!((s, json(&b)), (200, serde_json::json!({"Error": ""})));
    }
    let posts = posts(&log);
    assert_eq!(posts.len(), 1, "retries of a successful bind create no second Binding: {posts:?}");
    let p = &posts[0];
    assert_eq!(p.path_and_query, "/api/v1/namespaces/ml/pods/train-0/binding?");
    assert_eq!(p.content_type, "application/json");
    assert_eq!(
        p.body,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "train-0", "namespace": "ml", "uid": "6f1c2d3e-0000-4000-8000-000000000001"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "gpu-fr-1"}
        })
    );
    // Before the Binding, one merge patch recorded the chosen devices (all 8 GPUs), with the UID as precondition.
    let seen = log.lock().unwrap().clone();
    let patch = seen.iter().position(|s| s.method == "PATCH").expect("a patch of the pod");
    let binding = seen.iter().position(|s| s.method == "POST").unwrap();
    assert!(patch < binding, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| s.method == "PATCH").count(), 1);
    assert_eq!(seen[patch].path_and_query, "/api/v1/namespaces/ml/pods/train-0?&fieldManager=sovra-extender");
    assert_eq!(seen[patch].content_type, "application/merge-patch+json");
    assert_eq!(
        seen[patch].body,
        serde_json::json!({"metadata": {"uid": "6f1c2d3e-0000-4000-8000-000000000001", "annotations": {
            "sovra.io/gpu-devices": "0,1,2,3,4,5,6,7", "sovra.io/gpu-devices-node": "gpu-fr-1"}}})
    );
}

#[tokio::test]
async fn bind_conflict_is_success_on_the_same_node_and_an_error_elsewhere() {
    let (client, log) = api_server().await;
    let (addr, _srv) = start(kube_extender(client)).await;
    let bind = |name: &str| {
        serde_json::to_vec(&serde_json::json!({"PodName": name, "PodNamespace": "ml", "PodUID": format!("uid-{name}"), "Node": "gpu-fr-1"}))
            .unwrap()
    };
    let (_, b) = post(addr, "/sovra/bind", bind("taken-same")).await;
    assert_eq!(json(&b), serde_json::json!({"Error": ""}), "a retry after a lost reply: already bound here");
    let (_, b) = post(addr, "/sovra/bind", bind("taken-other")).await;
    assert_eq!(json(&b)["Error"], "pod ml/taken-other is already bound to node gpu-nl-1 (API conflict 409)");
    let (_, b) = post(addr, "/sovra/bind", bind("forbidden")).await;
    let e = json(&b)["Error"].as_str().unwrap().to_string();
    assert!(e.contains("answered 403 Forbidden") && e.contains("pods/binding"), "{e}");
    let seen: Vec<(String, String)> =
        log.lock().unwrap().iter().map(|s| (s.method.clone(), s.path_and_query.clone())).collect();
    let get = |p: &str| ("GET".to_string(), format!("/api/v1/namespaces/ml/pods/{p}"));
    let post = |p: &str| ("POST".to_string(), format!("/api/v1/namespaces/ml/pods/{p}/binding?"));
    let patch = |p: &str| ("PATCH".to_string(), format!("/api/v1/namespaces/ml/pods/{p}?&fieldManager=sovra-extender"));
    assert_eq!(
        seen,
        vec![
            get("taken-same"),   // the pod was not seen before: read it to check its residency class
            patch("taken-same"), // the chosen devices, recorded before the Binding
            post("taken-same"),
            get("taken-same"), // 409: where is it bound?
            get("taken-other"),
            patch("taken-other"),
            post("taken-other"),
            get("taken-other"),
            get("forbidden"),
            patch("forbidden"),
            post("forbidden"),
        ]
    );
}

#[tokio::test]
async fn bind_of_an_unseen_pod_reads_it_and_refuses_a_forbidden_zone() {
    let (client, log) = api_server().await;
    let (addr, _srv) = start(kube_extender(client)).await;
    // A fr-health pod may not go to the Dutch zone: refused after reading the pod, with no Binding.
    let bind = serde_json::json!({"PodName": "health-pod", "PodNamespace": "ml", "PodUID": "uid-health-pod", "Node": "gpu-nl-1"});
    let (_, b) = post(addr, "/sovra/bind", serde_json::to_vec(&bind).unwrap()).await;
    let e = json(&b)["Error"].as_str().unwrap().to_string();
    assert!(
        e.starts_with("refusing to bind ml/health-pod to gpu-nl-1: zone nl-ams fails residency class fr-health"),
        "{e}"
    );
    // A pod that does not exist, and a UID that is not the pod's.
    let bind = serde_json::json!({"PodName": "missing", "PodNamespace": "ml", "PodUID": "u", "Node": "gpu-fr-1"});
    let (_, b) = post(addr, "/sovra/bind", serde_json::to_vec(&bind).unwrap()).await;
    assert!(json(&b)["Error"].as_str().unwrap().contains("Sovra has not seen this pod"));
    let bind =
        serde_json::json!({"PodName": "health-pod", "PodNamespace": "ml", "PodUID": "other-uid", "Node": "gpu-fr-1"});
    let (_, b) = post(addr, "/sovra/bind", serde_json::to_vec(&bind).unwrap()).await;
    assert!(json(&b)["Error"].as_str().unwrap().contains("the pod has UID uid-health-pod"));
    assert!(posts(&log).is_empty(), "no Binding was attempted");
}

/// An inventory as `sovra-node-daemon inventory` prints it: three H100, two joined by NVLink, one unhealthy.
fn inventory() -> k8s::Inventory {
    let gpu = |index: u32, bus: &str, peers: &[&str], health: serde_json::Value| {
        serde_json::json!({"index": index, "uuid": format!("GPU-{index}"), "name": "NVIDIA H100 80GB HBM3",
            "memory_total_mib": 81559, "memory_used_mib": 0, "compute_capability": [9, 0], "pci_bus_id": bus,
            "numa_node": 0, "nvlink_peers": peers, "mig_enabled": false, "mig_instances": [],
            "temperature_c": null, "power_mw": null, "utilization_pct": null, "health": health})
    };
    let healthy = serde_json::json!({"state": "healthy"});
    serde_json::from_value(serde_json::json!({
        "backend": "nvml", "state": {"state": "ready"}, "driver_version": "550.54.15", "cuda_driver_version": "12.4",
        "gpus": [
            gpu(0, "0000:01:00.0", &["0000:02:00.0"], healthy.clone()),
            gpu(1, "0000:02:00.0", &["0000:01:00.0"], healthy),
            gpu(2, "0000:03:00.0", &[], serde_json::json!({"state": "unhealthy", "reason": "XID 79"})),
        ]
    }))
    .unwrap()
}

#[tokio::test]
async fn gpu_labels_are_published_with_one_merge_patch() {
    let (client, log) = api_server().await;
    let (labels, annotations) = k8s::inventory_labels(&inventory());
    k8s::publish_labels(&client, "gpu-fr-1", &labels, &annotations).await.unwrap();
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path_and_query.as_str()), ("PATCH", "/api/v1/nodes/gpu-fr-1?"));
    assert_eq!(seen[0].content_type, "application/merge-patch+json");
    assert_eq!(
        seen[0].body,
        serde_json::json!({"metadata": {
            "labels": {
                "nvidia.com/gpu.count": "3",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.memory": "81559",
                "nvidia.com/gpu.compute.major": "9",
                "nvidia.com/gpu.compute.minor": "0",
                "nvidia.com/mig.capable": "false",
                "nvidia.com/cuda.driver.major": "550",
                "nvidia.com/cuda.driver.minor": "54",
                "nvidia.com/cuda.driver.rev": "15",
                "sovra.io/gpu.healthy": "2"
            },
            "annotations": {"sovra.io/gpu-nvlink-islands": "[[0,1]]"}
        }})
    );
}

#[tokio::test]
async fn watches_fill_the_cache_and_unknown_pools_are_never_offered() {
    let (client, log) = api_server().await;
    let ext = kube_extender(client.clone());
    let watch = tokio::spawn(k8s::watch(client, ext.cache().clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snap = ext.cache().snapshot();
        if snap.state.topology().node_index("k8s-gpu-1").is_some() && ext.cache().accounted_pods() > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watches did not fill the cache: {:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snap = ext.cache().snapshot();
    let i = snap.state.topology().node_index("k8s-gpu-1").unwrap();
    assert_eq!(snap.state.summary(i).free_whole, 1, "4 GPUs, 3 taken by the running pod; the finished pod holds none");
    assert_eq!(snap.state.topology().models[snap.state.topology().devices[0].model as usize], "H100-80GB");
    assert!(snap.not_offered["k8s-nopool"].contains("has no node-restriction.kubernetes.io/sovra-pool label"));
    assert!(snap.not_offered["k8s-badpool"].contains("pool \"mars\""));
    // Filter: the labelled node passes for a 1-GPU pod, the others are unresolvable.
    let mut req = json(&fixture("filter_cache_mode.json"));
    req["Pod"]["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"nvidia.com/gpu": "1"}});
    req["NodeNames"] = serde_json::json!(["k8s-gpu-1", "k8s-nopool", "k8s-badpool"]);
    let body = serde_json::to_vec(&req).unwrap();
    let args = sovra_extender::wire::decode_args("filter", &body).unwrap();
    let out = ext.filter(&args);
    assert_eq!(out.node_names, Some(vec!["k8s-gpu-1"]));
    assert_eq!(out.failed_and_unresolvable_nodes.len(), 2);
    // 2 GPUs no longer fit there (3 of 4 taken): a capacity failure.
    req["Pod"]["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"nvidia.com/gpu": "2"}});
    let body = serde_json::to_vec(&req).unwrap();
    let args = sovra_extender::wire::decode_args("filter", &body).unwrap();
    assert_eq!(ext.filter(&args).failed_nodes.get("k8s-gpu-1"), Some("fewer than 2 fully free GPUs"));
    // The watches asked for Nodes and for unfinished Pods.
    let paths: Vec<String> = log.lock().unwrap().iter().map(|s| s.path_and_query.clone()).collect();
    assert!(paths.iter().any(|p| p.starts_with("/api/v1/nodes?")), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.starts_with("/api/v1/pods?") && p.contains("status.phase%21%3DSucceeded")),
        "{paths:?}"
    );
    watch.abort();
}
