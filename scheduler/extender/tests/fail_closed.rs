//! Fail closed: no answer on a cache the watches have not filled yet (`/readyz` 503 until both watches have listed,
//! every verb refused), and no bind reported as done when there is no Kubernetes client to do it.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use common::*;
use sovra_domain::PolicySpec;
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, k8s};
use std::sync::Arc;
use std::time::Duration;

/// A fake API: one labelled 8-GPU node, listed at once; the pod list (a running pod holding 6 of its GPUs) is held
/// back until `gate` opens.
async fn gated_api(State(gate): State<Arc<tokio::sync::Semaphore>>, uri: Uri) -> Response {
    let object = |v: serde_json::Value| ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response();
    if uri.query().unwrap_or("").contains("watch=true") {
        return Response::new(Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>()));
    }
    match uri.path() {
        "/api/v1/nodes" => object(serde_json::json!({"apiVersion": "v1", "kind": "NodeList",
            "metadata": {"resourceVersion": "10"},
            "items": [{"metadata": {"name": "k8s-gpu-1", "uid": "n1", "resourceVersion": "1",
                           "labels": {"node-restriction.kubernetes.io/sovra-pool": "fr-train",
                                      "nvidia.com/gpu.product": "NVIDIA-H100-80GB"}},
                       "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": "8"},
                                  "conditions": [{"type": "Ready", "status": "True"}]}}]})),
        "/api/v1/pods" => {
            let _open = gate.acquire().await.unwrap();
            object(serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "20"},
                "items": [{"metadata": {"name": "busy", "namespace": "ml", "uid": "busy-uid", "resourceVersion": "2",
                                        "labels": {"sovra.io/residency": "eu-restricted"}},
                           "spec": {"nodeName": "k8s-gpu-1",
                                    "containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "6"}}}]},
                           "status": {"phase": "Running"}}]}))
        }
        p => (axum::http::StatusCode::NOT_FOUND, format!("no route {p}")).into_response(),
    }
}

fn filter_body(gpus: &str) -> Vec<u8> {
    let mut req = json(&fixture("filter_cache_mode.json"));
    req["Pod"]["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"nvidia.com/gpu": gpus}});
    req["NodeNames"] = serde_json::json!(["k8s-gpu-1"]);
    serde_json::to_vec(&req).unwrap()
}

/// The bug: a 4-GPU pod passed on a node where 6 of 8 GPUs were in use, because the extender answered
/// before its Pod watch had listed. Now: 503 and refusals until both lists are in, the right answer after.
#[tokio::test]
async fn nothing_is_answered_until_both_watches_have_listed() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let app = axum::Router::new().fallback(gated_api).with_state(gate.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = kube::Client::try_from(kube::Config::new(format!("http://{api}").parse().unwrap())).unwrap();
    let cache = Arc::new(Cache::new(cluster()).unwrap());
    let ext = Arc::new(Extender::new(cache.clone(), PolicySpec::default(), 0, Binder::Kube(client.clone())));
    let (addr, _srv) = start(ext.clone()).await;
    assert_eq!(get(addr, "/readyz").await.0, 200, "before any watch: the config's nodes, ready");
    let watch = tokio::spawn(k8s::watch(client, cache.clone()));
    // The Node list arrives; the Pod list is held back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache.snapshot().node_index("k8s-gpu-1").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the node watch did not list");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, why) = get(addr, "/readyz").await;
    assert_eq!(s, 503);
    assert!(why.contains("initial list of Pods"), "{why}");
    // filter: every node fails for now, with the reason; nothing passes.
    let (s, b) = post(addr, "/sovra/filter", filter_body("4")).await;
    assert_eq!(s, 200);
    let v = json(&b);
    assert_eq!(v["NodeNames"], serde_json::json!([]));
    assert!(v["FailedNodes"]["k8s-gpu-1"].as_str().unwrap().contains("cache is not synced"), "{v}");
    // prioritize: 503 (kube-scheduler drops the scores); preempt: no node; bind: an error, no Binding.
    assert_eq!(post(addr, "/sovra/prioritize", filter_body("4")).await.0, 503);
    let (_, b) = post(addr, "/sovra/preempt", fixture("preempt_cache_mode.json")).await;
    assert_eq!(json(&b), serde_json::json!({"NodeNameToMetaVictims": {}}));
    let bind = serde_json::json!({"PodName": "train-0", "PodNamespace": "ml",
        "PodUID": "6f1c2d3e-0000-4000-8000-000000000001", "Node": "k8s-gpu-1"});
    let (_, b) = post(addr, "/sovra/bind", serde_json::to_vec(&bind).unwrap()).await;
    assert!(json(&b)["Error"].as_str().unwrap().contains("cache is not synced"), "{}", String::from_utf8_lossy(&b));
    // The Pod list arrives: ready, and the 4-GPU pod no longer fits beside the 6 GPUs in use.
    gate.add_permits(100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(addr, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not ready after both lists");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = json(&post(addr, "/sovra/filter", filter_body("4")).await.1);
    assert_eq!(v["FailedNodes"]["k8s-gpu-1"], "fewer than 4 fully free GPUs", "{v}");
    let v = json(&post(addr, "/sovra/filter", filter_body("2")).await.1);
    assert_eq!(v["NodeNames"], serde_json::json!(["k8s-gpu-1"]), "{v}");
    watch.abort();
}

#[tokio::test]
async fn without_a_client_bind_is_refused_and_names_the_fix() {
    let ext = extender(Binder::NoClient);
    let (addr, _srv) = start(ext.clone()).await;
    assert_eq!(get(addr, "/readyz").await, (200, "ok\n".to_string()), "without --kube: ready at once");
    post(addr, "/sovra/filter", fixture("filter_cache_mode.json")).await;
    let (s, b) = post(addr, "/sovra/bind", fixture("bind.json")).await;
    assert_eq!(s, 200);
    let e = json(&b)["Error"].as_str().unwrap().to_string();
    assert!(e.starts_with("refusing to bind ml/train-0 to gpu-fr-1: this extender has no Kubernetes client"), "{e}");
    assert!(e.contains("--kube") && e.contains("--dry-run-bind"), "{e}");
    assert_eq!(ext.cache().accounted_pods(), 0, "nothing recorded as bound");
    assert_eq!(ext.metrics.bind_errors.get(), 1);
    // The explicit dry run records the placement (benchmarks), as before.
    let dry = extender(Binder::DryRun);
    let (addr, _srv) = start(dry.clone()).await;
    post(addr, "/sovra/filter", fixture("filter_cache_mode.json")).await;
    let (_, b) = post(addr, "/sovra/bind", fixture("bind.json")).await;
    assert_eq!(json(&b), serde_json::json!({"Error": ""}));
    assert_eq!(dry.cache().accounted_pods(), 1);
}

#[tokio::test]
async fn the_probe_port_serves_only_health_and_readiness() {
    let ext = extender(Binder::NoClient);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probes =
        sovra_extender::server::serve(listener, sovra_extender::server::probe_router(ext.clone()), None).unwrap();
    let addr = probes.local_addr;
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    ext.cache().readiness().expect_watches();
    assert_eq!(get(addr, "/readyz").await.0, 503);
    assert_eq!(post(addr, "/sovra/filter", fixture("filter_cache_mode.json")).await.0, 404);
}

/// The shipped Deployment asks `/readyz` for readiness and `/healthz` for liveness, on the plain-HTTP probe port
/// that its `--probe-listen` opens (the main port requires client certificates, which kubelet does not send).
#[test]
fn the_deployment_probes_readyz_on_the_probe_port() {
    use serde::Deserialize;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/extender.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let deployment = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == "Deployment")
        .expect("a Deployment");
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "probes", "{probe}");
    }
    let port = c["ports"].as_sequence().unwrap().iter().find(|p| p["name"] == "probes").expect("a probes port");
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let want = format!("--probe-listen=0.0.0.0:{}", port["containerPort"].as_u64().unwrap());
    assert!(args.contains(&want.as_str()) && args.contains(&"--kube"), "{args:?}");
}
