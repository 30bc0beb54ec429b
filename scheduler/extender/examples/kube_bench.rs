//! Benchmarks against a real kube-apiserver and kube-scheduler (sovra-kube-testenv; BENCHMARKS.md, "Kubernetes"):
//!
//! - `throughput`: pods/s scheduled end to end by kube-scheduler, without and with the Sovra extender (in this
//!   process, HTTP, binding through the API), at each `--nodes` count, each in a fresh control plane. Time runs from
//!   the first pod created to the last pod bound.
//! - `memory`: the extender binary's resident memory once its watches have synced, with `--nodes` Node objects and
//!   `--pods` bound pods (8 one-GPU pods per node) stored in the API server, against the same binary with the nodes
//!   and no pods. Measured 2 s after `/readyz` answers 200 (both watches listed).
//!
//! `cargo run --release -p sovra-extender --example kube_bench -- throughput --nodes 500,5000 --pods 1000`
//! `cargo build --release -p sovra-extender && cargo run --release -p sovra-extender --example kube_bench -- memory`

use futures_util::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, k8s, server};
use sovra_kube_testenv::nodes::TestNode;
use sovra_kube_testenv::process::{Proc, free_port};
use sovra_kube_testenv::{ControlPlane, deploy_scheduler_config};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: Hexa SAS, operator_hq: FR, certifications: [HDS]}
pools:
  - {id: fr-train, zone: fr, purpose: training}
residency_classes:
  - {name: fr-health, countries: [FR]}
nodes: []
"#;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
}

async fn create_nodes(client: &kube::Client, n: usize) {
    stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            async move { TestNode::gpu(&format!("node-{i:05}"), "fr-train", 8).create(&client).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("nodes");
}

fn pod(i: usize, scheduler: &str, node: Option<String>) -> Pod {
    let mut spec = json!({"schedulerName": scheduler, "containers": [{"name": "c", "image": "x",
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "100m", "memory": "64Mi"}}}]});
    if let Some(n) = node {
        spec["nodeName"] = n.into();
    }
    serde_json::from_value(json!({"metadata": {"name": format!("p-{i:06}"),
        "labels": {"sovra.io/residency": "fr-health"}}, "spec": spec}))
    .expect("pod")
}

async fn create_pods(client: &kube::Client, n: usize, scheduler: &str, bind: impl Fn(usize) -> Option<String>) {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    stream::iter((0..n).map(|i| pod(i, scheduler, bind(i))))
        .map(|p| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &p).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("pods");
}

async fn count_bound(client: &kube::Client) -> usize {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = api.list(&ListParams::default()).await.expect("list");
    list.items.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()).count()
}

/// One run: (pods/s, seconds).
async fn throughput_run(nodes: usize, pods: usize, with_extender: bool) -> (f64, f64) {
    let mut cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().await.expect("client");
    create_nodes(&client, nodes).await;
    let mut _server = None;
    let mut config = if with_extender {
        let cache =
            Arc::new(Cache::new(ClusterConfig::from_yaml("cluster.yaml", CLUSTER).expect("cluster")).expect("cache"));
        tokio::spawn(k8s::watch(client.clone(), cache.clone()));
        let ext = Arc::new(Extender::new(cache.clone(), PolicySpec::default(), 0, Binder::Kube(client.clone())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let running = server::serve(listener, server::router(ext, "/sovra", 64 << 20), None).expect("serve");
        let url = format!("http://{}/sovra", running.local_addr);
        _server = Some(running);
        // Wait until the extender's cache holds every node.
        while cache.snapshot().index.len() < nodes {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        deploy_scheduler_config(&url, None).expect("config")
    } else {
        let mut c = deploy_scheduler_config("http://127.0.0.1:1/sovra", None).expect("config");
        c.as_mapping_mut().expect("mapping").remove("extenders");
        c
    };
    // kube-scheduler's client defaults (qps 50, burst 100) would cap both runs at the client; raised alike.
    config["clientConnection"] = serde_yaml_ng::to_value(json!({"qps": 5000, "burst": 10000})).expect("yaml");
    cp.start_scheduler(config).await.expect("scheduler");
    let start = Instant::now();
    create_pods(&client, pods, "sovra-scheduler", |_| None).await;
    loop {
        let b = count_bound(&client).await;
        if b == pods {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "{b}/{pods} bound after 600 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    (pods as f64 / secs, secs)
}

fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// Whether `GET /readyz` on 127.0.0.1:`port` answers 200 (one raw HTTP/1.1 request).
async fn ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200")
}

/// Starts the extender binary next to this example and waits until it is ready (its cache synced).
async fn extender_rss(cp: &ControlPlane, expect_pods: usize) -> (f64, f64) {
    let exe = std::env::current_exe().expect("exe");
    let bin = exe.parent().and_then(|p| p.parent()).expect("target dir").join("sovra-extender");
    assert!(bin.is_file(), "{} missing: cargo build --release -p sovra-extender first", bin.display());
    let d = cp.dir();
    std::fs::write(d.join("cluster.yaml"), CLUSTER).expect("cluster");
    let port = free_port().expect("port");
    let args = vec![
        "serve".to_string(),
        format!("--config={}", d.join("cluster.yaml").display()),
        format!("--listen=127.0.0.1:{port}"),
        "--kube".into(),
    ];
    let kubeconfig = cp.admin_kubeconfig();
    let p = Proc::spawn_env(
        "sovra-extender",
        &bin,
        &args,
        &[("KUBECONFIG", kubeconfig.as_os_str()), ("RUST_LOG", "warn".as_ref())],
        &d.join(format!("extender-{expect_pods}.log")),
    )
    .expect("extender");
    let pid = p.pid().expect("pid");
    // Ready (/readyz 200) once both watches have listed: the cache then holds every node and pod.
    let t = Instant::now();
    while !ready(port).await {
        assert!(t.elapsed() < Duration::from_secs(600), "extender not ready:\n{}", p.log_tail(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("  (ready {:.1} s after start)", t.elapsed().as_secs_f64());
    rss_mib(pid)
}

async fn memory(nodes: usize, pods: usize) {
    let cp = ControlPlane::start_with(&["--max-requests-inflight=2000"]).await.expect("control plane");
    let client = cp.client().await.expect("client");
    let t = Instant::now();
    create_nodes(&client, nodes).await;
    let (rss0, hwm0) = extender_rss(&cp, 0).await;
    create_pods(&client, pods, "sovra-scheduler", |i| Some(format!("node-{:05}", (i / 8) % nodes))).await;
    let (rss1, hwm1) = extender_rss(&cp, pods).await;
    println!("memory: {nodes} nodes, set up in {:.0} s", t.elapsed().as_secs_f64());
    println!("  extender, no pods:        RSS {rss0:.0} MiB (peak {hwm0:.0} MiB)");
    println!("  extender, {pods} pods:  RSS {rss1:.0} MiB (peak {hwm1:.0} MiB)");
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("throughput") => {
            let pods: usize = arg(&args, "--pods", "1000").parse().expect("--pods");
            for nodes in arg(&args, "--nodes", "500,5000").split(',').map(|n| n.parse::<usize>().expect("--nodes")) {
                for with in [false, true] {
                    let (rate, secs) = throughput_run(nodes, pods, with).await;
                    println!(
                        "throughput: {nodes} nodes, {pods} pods, {}: {rate:.1} pods/s ({secs:.1} s)",
                        if with { "with the Sovra extender" } else { "kube-scheduler alone" }
                    );
                }
            }
        }
        Some("memory") => {
            let nodes = arg(&args, "--nodes", "5000").parse().expect("--nodes");
            let pods = arg(&args, "--pods", "40000").parse().expect("--pods");
            memory(nodes, pods).await;
        }
        _ => eprintln!(
            "usage: kube_bench throughput [--nodes 500,5000] [--pods 1000] | memory [--nodes 5000] [--pods 40000]"
        ),
    }
}
