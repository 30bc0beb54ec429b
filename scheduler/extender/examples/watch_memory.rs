//! Memory of the extender's watches: a fake Kubernetes API in a child process serves `--nodes` Node and `--pods`
//! Pod objects (paged lists as the API server pages them, then watches that stay open), and this process runs
//! `sovra_extender::k8s::watch` into a cache until every node is known and every pod accounted, then prints its
//! peak and current resident memory (`VmHWM`, `VmRSS` of `/proc/self/status`).
//!
//! ```sh
//! cargo run --release -p sovra-extender --example watch_memory -- --nodes 5000 --pods 40000
//! ```
//!
//! The objects look like a real cluster's: Nodes with the labels and annotations of a GPU node, 5 conditions,
//! addresses, `nodeInfo` and 40 cached images; Pods with owner references, `managedFields`, environment, volume
//! mounts, conditions and container statuses (about 4 KiB of JSON each). Every pod asks for one GPU and is bound
//! to node `i % nodes` (8 GPUs each). The API runs in another process so that its own copies of the objects are not
//! counted here.

use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, k8s};
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLUSTER: &str = "
zones:
  - {id: fr-par, country: FR, region: Paris, jurisdiction: EU, operator: Hexacloud SAS, operator_hq: FR, certifications: [SecNumCloud, HDS]}
pools:
  - {id: fr-train, zone: fr-par, purpose: training}
residency_classes:
  - {name: eu-restricted, jurisdictions: [EU], operator_hq_in: [EU]}
nodes: []
";

fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a whole number, not {v:?}")))
        .unwrap_or(default)
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn node_json(i: usize) -> serde_json::Value {
    let name = format!("gpu-node-{i:05}");
    let images: Vec<serde_json::Value> = (0..40)
        .map(|k| {
            serde_json::json!({"names": [format!("registry.example/team-{k}/image@sha256:{:064x}", k * 7919 + i),
                                         format!("registry.example/team-{k}/image:v1.{k}.0")],
                               "sizeBytes": 100_000_000 + k * 1000})
        })
        .collect();
    let cond = |t: &str, s: &str| {
        serde_json::json!({"type": t, "status": s, "lastHeartbeatTime": "2026-01-01T00:00:00Z",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": format!("Kubelet{t}"), "message": format!("kubelet reports {t}")})
    };
    serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("node-uid-{i:08}"), "resourceVersion": "100",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"node-restriction.kubernetes.io/sovra-pool": "fr-train",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559",
                "nvidia.com/gpu.count": "8", "nvidia.com/gpu.compute.major": "9", "nvidia.com/gpu.compute.minor": "0",
                "nvidia.com/cuda.driver.major": "550", "nvidia.com/mig.capable": "false",
                "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "gpu-8xh100", "topology.kubernetes.io/zone": "fr-par-1",
                "topology.kubernetes.io/region": "fr-par"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "csi.volume.kubernetes.io/nodeid": format!("{{\"csi.example.com\":\"{name}\"}}"),
                "sovra.io/gpu-nvlink-islands": "[[0,1,2,3,4,5,6,7]]"}},
        "spec": {"podCIDR": format!("10.{}.{}.0/24", i / 256, i % 256), "providerID": format!("example://{name}")},
        "status": {
            "capacity": {"cpu": "192", "memory": "2113929216Ki", "nvidia.com/gpu": "8", "pods": "110", "ephemeral-storage": "3750000000Ki"},
            "allocatable": {"cpu": "190", "memory": "2100000000Ki", "nvidia.com/gpu": "8", "pods": "110", "ephemeral-storage": "3500000000Ki"},
            "conditions": [cond("MemoryPressure", "False"), cond("DiskPressure", "False"), cond("PIDPressure", "False"),
                           cond("NetworkUnavailable", "False"), cond("Ready", "True")],
            "addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", i / 256, i % 256)}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": format!("{i:032x}"), "systemUUID": format!("{i:032x}"), "bootID": format!("{i:032x}"),
                "kernelVersion": "6.8.0", "osImage": "Ubuntu 24.04", "containerRuntimeVersion": "containerd://1.7.0",
                "kubeletVersion": "v1.37.0", "kubeProxyVersion": "v1.37.0", "operatingSystem": "linux", "architecture": "amd64"},
            "images": images}})
}

fn pod_json(i: usize, nodes: usize) -> serde_json::Value {
    let name = format!("train-{i:06}");
    let node = format!("gpu-node-{:05}", i % nodes);
    let env: Vec<serde_json::Value> = (0..12)
        .map(|k| serde_json::json!({"name": format!("SETTING_{k}"), "value": format!("value-{k}-{i}")}))
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "uid": format!("pod-uid-{i:012}"), "resourceVersion": "200",
            "generateName": "train-", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"sovra.io/residency": "eu-restricted", "app": "trainer", "job-name": format!("job-{}", i / 8),
                       "controller-uid": format!("{:032x}", i / 8)},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": format!("job-{}", i / 8),
                "uid": format!("{:032x}", i / 8), "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:job-name": {}}},
                             "f:spec": {"f:containers": {"k:{\"name\":\"trainer\"}": {".": {}, "f:env": {}, "f:image": {},
                                        "f:resources": {".": {}, "f:limits": {}, "f:requests": {}}}}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:01:00Z",
                 "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:hostIP": {}, "f:phase": {}, "f:podIP": {}}}}]},
        "spec": {"nodeName": node, "schedulerName": "sovra-scheduler", "priority": 0, "restartPolicy": "Never",
            "serviceAccountName": "trainer", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "containers": [{"name": "trainer", "image": "registry.example/trainer:1.0", "command": ["python", "-m", "train"],
                "args": ["--epochs", "10", "--data", "/data"], "env": env,
                "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "64Gi"}, "requests": {"nvidia.com/gpu": "1", "cpu": "8", "memory": "64Gi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        "status": {"phase": "Running", "hostIP": "10.0.0.1", "podIP": format!("10.1.{}.{}", i / 256 % 256, i % 256),
            "startTime": "2026-01-01T00:00:00Z", "qosClass": "Burstable",
            "conditions": [{"type": "Initialized", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                           {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                           {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": "trainer", "ready": true, "restartCount": 0, "started": true,
                "image": "registry.example/trainer:1.0", "imageID": format!("registry.example/trainer@sha256:{:064x}", 1),
                "containerID": format!("containerd://{i:064x}"), "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}})
}

/// The child process: a fake API that pages its lists by `limit` and `continue` (an offset) and holds watches open.
fn serve_api(nodes: usize, pods: usize) {
    use axum::body::{Body, Bytes};
    use axum::http::{Uri, header};
    use axum::response::{IntoResponse, Response};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let app = axum::Router::new().fallback(move |uri: Uri| async move {
            let query: Vec<(String, String)> = uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            let q = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            if q("watch").as_deref() == Some("true") {
                return Response::new(Body::from_stream(
                    futures_util::stream::pending::<Result<Bytes, std::io::Error>>(),
                ));
            }
            let (total, kind, make): (usize, &str, Box<dyn Fn(usize) -> serde_json::Value + Send>) = match uri.path() {
                "/api/v1/nodes" => (nodes, "NodeList", Box::new(node_json)),
                "/api/v1/pods" => (pods, "PodList", Box::new(move |i| pod_json(i, nodes))),
                p => return (axum::http::StatusCode::NOT_FOUND, format!("no route {p}")).into_response(),
            };
            let from: usize = q("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
            let limit: usize = q("limit").and_then(|l| l.parse().ok()).unwrap_or(total);
            let to = (from + limit).min(total);
            let items: Vec<serde_json::Value> = (from..to).map(&make).collect();
            let mut meta = serde_json::json!({"resourceVersion": "300"});
            if to < total {
                meta["continue"] = serde_json::Value::String(to.to_string());
            }
            let body = serde_json::json!({"apiVersion": "v1", "kind": kind, "metadata": meta, "items": items});
            ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

fn main() {
    let nodes = arg("--nodes", 5000);
    let pods = arg("--pods", 40_000);
    if std::env::args().any(|a| a == "--serve-api") {
        return serve_api(nodes, pods);
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--serve-api", "--nodes", &nodes.to_string(), "--pods", &pods.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the fake API");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let before = status_kib("VmRSS:");
    let result = rt.block_on(async move {
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let cluster = ClusterConfig::from_yaml("watch_memory.yaml", CLUSTER).unwrap();
        let cache = Arc::new(Cache::new(cluster).unwrap());
        let ext = Arc::new(Extender::new(cache.clone(), PolicySpec::default(), 0, Binder::Kube(client.clone())));
        let start = Instant::now();
        let watch = tokio::spawn(k8s::watch(client, cache.clone()));
        let synced = loop {
            let snap = ext.cache().snapshot();
            if snap.state.topology().nodes.len() == nodes && ext.cache().accounted_pods() == pods {
                break Ok(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(600) {
                break Err(format!(
                    "not synced after 600 s: {} nodes, {} pods accounted",
                    snap.state.topology().nodes.len(),
                    ext.cache().accounted_pods()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        watch.abort();
        synced
    });
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Ok(took) => println!(
            "{nodes} nodes, {pods} pods synced in {:.1} s: VmRSS before the watches {} MiB; VmHWM {} MiB; VmRSS {} MiB",
            took.as_secs_f64(),
            before / 1024,
            status_kib("VmHWM:") / 1024,
            status_kib("VmRSS:") / 1024
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
