//! The extender binary behind a real kube-scheduler (with the deploy/ configuration: HTTPS, mutual TLS, the
//! `sovra-scheduler` profile) on a real kube-apiserver (sovra-kube-testenv): regulated GPU pods land only on
//! permitted nodes, and the pods that cannot get `FailedScheduling` events carrying Sovra's reasons.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use sovra_kube_testenv::nodes::TestNode;
use sovra_kube_testenv::process::{Proc, free_port};
use sovra_kube_testenv::{ControlPlane, deploy_scheduler_config};
use std::path::Path;
use std::time::{Duration, Instant};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: Hexa SAS, operator_hq: FR, certifications: [HDS, SecNumCloud]}
  - {id: us, country: DE, region: Frankfurt, jurisdiction: EU, operator: Hyper Inc., operator_hq: US, certifications: [C5]}
pools:
  - {id: fr-train, zone: fr, purpose: training}
  - {id: us-train, zone: us, purpose: training}
residency_classes:
  - {name: fr-health, countries: [FR], certifications: [HDS]}
  - {name: eu-any, jurisdictions: [EU]}
nodes: []
"#;

/// The control plane, the extender (HTTPS, mTLS, `--kube`) and kube-scheduler configured from deploy/.
async fn setup(extra: &[&str]) -> (ControlPlane, Proc) {
    let mut cp = ControlPlane::start().await.expect("control plane");
    let d = cp.dir().to_path_buf();
    std::fs::write(d.join("cluster.yaml"), CLUSTER).expect("cluster");
    let server = cp.pki().server(&[]).expect("server cert");
    std::fs::write(d.join("ext.crt"), &server.cert_pem).expect("cert");
    std::fs::write(d.join("ext.key"), &server.key_pem).expect("key");
    let client = cp.pki().client("system:kube-scheduler", &[]).expect("client cert");
    std::fs::write(d.join("sched-ext.crt"), &client.cert_pem).expect("cert");
    std::fs::write(d.join("sched-ext.key"), &client.key_pem).expect("key");
    let port = free_port().expect("port");
    let mut args: Vec<String> = vec![
        "serve".into(),
        format!("--config={}", d.join("cluster.yaml").display()),
        format!("--listen=127.0.0.1:{port}"),
        "--prefix=/sovra".into(),
        format!("--tls-cert={}", d.join("ext.crt").display()),
        format!("--tls-key={}", d.join("ext.key").display()),
        format!("--tls-client-ca={}", d.join("ca.crt").display()),
        "--kube".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let kubeconfig = cp.admin_kubeconfig();
    let ext = Proc::spawn_env(
        "sovra-extender",
        Path::new(env!("CARGO_BIN_EXE_sovra-extender")),
        &args,
        &[("KUBECONFIG", kubeconfig.as_os_str()), ("RUST_LOG", "info".as_ref())],
        &d.join("extender.log"),
    )
    .expect("extender");
    let config = deploy_scheduler_config(
        &format!("https://127.0.0.1:{port}/sovra"),
        Some((&d.join("ca.crt"), &d.join("sched-ext.crt"), &d.join("sched-ext.key"))),
    )
    .expect("scheduler config");
    cp.start_scheduler(config).await.expect("kube-scheduler");
    (cp, ext)
}

fn gpu_pod(name: &str, class: &str, gpus: u32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"sovra.io/residency": class}},
        "spec": {"schedulerName": "sovra-scheduler", "containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
    }))
    .expect("pod")
}

/// Waits until every pod in `names` is bound; returns their nodes.
async fn bound(pods: &Api<Pod>, names: &[String], cp: &ControlPlane, ext: &Proc) -> Vec<String> {
    let start = Instant::now();
    loop {
        let mut nodes = Vec::new();
        for n in names {
            if let Some(node) = pods.get(n).await.expect("pod").spec.and_then(|s| s.node_name) {
                nodes.push(node);
            }
        }
        if nodes.len() == names.len() {
            return nodes;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{} of {} bound after 90 s\nscheduler:\n{}\nextender:\n{}",
            nodes.len(),
            names.len(),
            cp.scheduler_log().lines().rev().take(30).collect::<Vec<_>>().join("\n"),
            ext.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The messages of the pod's `FailedScheduling` events, waiting until there is one.
async fn failed_scheduling(client: &kube::Client, ns: &str, pod: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod},reason=FailedScheduling"));
    for _ in 0..300 {
        let list = events.list(&lp).await.expect("events");
        if !list.items.is_empty() {
            return list.items.into_iter().filter_map(|e| e.message).collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no FailedScheduling event for {pod}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulated_gpu_pods_land_only_on_permitted_nodes_and_events_carry_sovras_reasons() {
    let (cp, ext) = setup(&[]).await;
    let client = cp.client().await.expect("client");
    for i in 0..2 {
        TestNode::gpu(&format!("fr-{i}"), "fr-train", 8).create(&client).await.expect("fr node");
    }
    for i in 0..4 {
        TestNode::gpu(&format!("us-{i}"), "us-train", 8).create(&client).await.expect("us node");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = (0..4).map(|i| format!("health-{i}")).collect();
    for n in &names {
        pods.create(&PostParams::default(), &gpu_pod(n, "fr-health", 4)).await.expect("pod");
    }
    let nodes = bound(&pods, &names, &cp, &ext).await;
    assert!(nodes.iter().all(|n| n.starts_with("fr-")), "fr-health pods on {nodes:?}");
    // Packed: two 4-GPU pods per 8-GPU node.
    for n in ["fr-0", "fr-1"] {
        assert_eq!(nodes.iter().filter(|x| *x == n).count(), 2, "{nodes:?}");
    }
    // A fifth has no permitted room left: it stays pending, and the event says why, in Sovra's words.
    pods.create(&PostParams::default(), &gpu_pod("health-4", "fr-health", 4)).await.expect("pod");
    let messages = failed_scheduling(&client, "default", "health-4").await;
    let all = messages.join("\n");
    eprintln!("FailedScheduling of health-4: {all}");
    assert!(all.contains("fails residency class fr-health"), "{all}");
    assert!(pods.get("health-4").await.expect("pod").spec.and_then(|s| s.node_name).is_none());
    // An EU-wide pod may use the other zone.
    pods.create(&PostParams::default(), &gpu_pod("eu-0", "eu-any", 8)).await.expect("pod");
    let nodes = bound(&pods, &["eu-0".to_string()], &cp, &ext).await;
    assert!(nodes[0].starts_with("us-"), "{nodes:?}");
    // A pod naming a class the cluster does not have: never placed, and told so.
    pods.create(&PostParams::default(), &gpu_pod("typo", "fr-helth", 1)).await.expect("pod");
    let all = failed_scheduling(&client, "default", "typo").await.join("\n");
    assert!(all.contains("fr-helth") && all.contains("not in the Sovra cluster config"), "{all}");
}
