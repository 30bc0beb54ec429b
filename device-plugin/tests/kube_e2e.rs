//! End to end on a real kube-apiserver and kube-scheduler (sovra-kube-testenv): the extender (in this process,
//! binding through the API) chooses the GPU of a share pod and records it on the pod; the real
//! `sovra-device-plugin` binary, reading pods from the same API server, answers the kubelet's Allocate with exactly
//! that GPU — whichever device IDs the kubelet picked.

mod common;

use common::TestKubelet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use sovra_device_plugin::api::{AllocateRequest, ContainerAllocateRequest};
use sovra_device_plugin::devices::device_id;
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, k8s, server};
use sovra_kube_testenv::nodes::TestNode;
use sovra_kube_testenv::{ControlPlane, deploy_scheduler_config};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: Hexa SAS, operator_hq: FR, certifications: [HDS]}
pools:
  - {id: fr-infer, zone: fr, purpose: inference}
residency_classes:
  - {name: fr-health, countries: [FR]}
nodes: []
"#;

fn inventory() -> String {
    let gpus: Vec<serde_json::Value> = (0..4)
        .map(|i| {
            json!({"index": i, "uuid": format!("GPU-{i}{i}{i}{i}-e2e"), "name": "NVIDIA H100 80GB HBM3",
            "memory_total_mib": 81559, "compute_capability": [9, 0], "health": {"state": "healthy"}})
        })
        .collect();
    json!({"backend": "fake (fixture)", "state": {"state": "ready"}, "driver_version": "550.54.15", "gpus": gpus})
        .to_string()
}

fn pod(name: &str, resources: serde_json::Value) -> Pod {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"sovra.io/residency": "fr-health", "sovra.io/kind": "inference"}},
        "spec": {"schedulerName": "sovra-scheduler", "containers": [{"name": "main", "image": "x",
            "resources": {"limits": resources}}]}}),
    )
    .expect("pod")
}

async fn annotation_when_bound(pods: &Api<Pod>, name: &str) -> String {
    let t = Instant::now();
    loop {
        let p = pods.get(name).await.expect("pod");
        let bound = p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some();
        if let (true, Some(a)) = (bound, p.metadata.annotations.as_ref().and_then(|a| a.get("sovra.io/gpu-devices"))) {
            return a.clone();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{name} not bound with devices: {:?}", p.metadata.annotations);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_hands_a_share_pod_exactly_the_gpu_the_extender_chose_behind_a_real_scheduler() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().await.expect("client");
    let mut node = TestNode::gpu("node-a", "fr-infer", 4);
    // What the plugin advertises through the kubelet: 1,000 IDs per GPU.
    node.extra.insert("sovra.io/gpu-milli".into(), "4000".into());
    node.create(&client).await.expect("node");
    let cache =
        Arc::new(Cache::new(ClusterConfig::from_yaml("cluster.yaml", CLUSTER).expect("cluster")).expect("cache"));
    tokio::spawn(k8s::watch(client.clone(), cache.clone()));
    let ext = Arc::new(Extender::new(cache, PolicySpec::default(), 0, Binder::Kube(client.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let running = server::serve(listener, server::router(ext, "/sovra", 1 << 20), None).expect("serve");
    let url = format!("http://{}/sovra", running.local_addr);
    cp.start_scheduler(deploy_scheduler_config(&url, None).expect("config")).await.expect("kube-scheduler");

    // A whole GPU first, so that the share's GPU is not simply GPU 0.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("whole", json!({"nvidia.com/gpu": "1"}))).await.expect("pod");
    let whole = annotation_when_bound(&pods, "whole").await;
    pods.create(&PostParams::default(), &pod("share", json!({"sovra.io/gpu-milli": "250"}))).await.expect("pod");
    let share = annotation_when_bound(&pods, "share").await;
    let (index, milli) = share.split_once(':').expect("a share is index:milli");
    assert_eq!(milli, "250");
    assert_ne!(index, whole, "the share went on the GPU the whole-GPU pod holds");
    let index: u32 = index.parse().expect("index");

    // The kubelet side: the plugin registers, and Allocate names the chosen GPU whatever IDs the kubelet picked.
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("device-plugins");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::write(tmp.path().join("inv.json"), inventory()).expect("inventory");
    let mut kubelet = TestKubelet::start(&dir, None);
    let mut plugin = Command::new(env!("CARGO_BIN_EXE_sovra-device-plugin"))
        .args(["--node", "node-a", "--watch-ms", "100"])
        .arg("--inventory")
        .arg(tmp.path().join("inv.json"))
        .arg("--socket-dir")
        .arg(&dir)
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .stdout(Stdio::null())
        .spawn()
        .expect("plugin");
    let mut reg = kubelet.next(60).await;
    assert_eq!(reg.first_list.len(), 4000);
    let other = (index + 1) % 4;
    let answer = reg
        .client
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: (0..250).map(|u| device_id(other, u)).collect(),
            }],
        })
        .await;
    let _ = plugin.kill();
    let _ = plugin.wait();
    let answer = answer.expect("allocate").into_inner();
    let envs = &answer.container_responses[0].envs;
    assert_eq!(envs.get("NVIDIA_VISIBLE_DEVICES"), Some(&format!("GPU-{index}{index}{index}{index}-e2e")), "{envs:?}");
    assert_eq!(envs.get("SOVRA_GPU_MILLI").map(String::as_str), Some("250"));
    running.stop();
}
