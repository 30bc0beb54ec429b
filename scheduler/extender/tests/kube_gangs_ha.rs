//! Gangs and leader failover behind a real kube-scheduler on a real kube-apiserver (sovra-kube-testenv):
//! a gang of 4 binds all together or not at all, a gang that can never fit binds none, and killing the leading
//! extender (SIGKILL) lets binds continue on the other replica within the lease time plus kube-scheduler's retry,
//! with no GPU booked twice (the device annotations are checked pod by pod).

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use sovra_kube_testenv::nodes::TestNode;
use sovra_kube_testenv::process::{Proc, free_port};
use sovra_kube_testenv::{ControlPlane, deploy_scheduler_config};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: Hexa SAS, operator_hq: FR, certifications: [HDS, SecNumCloud]}
pools:
  - {id: fr-train, zone: fr, purpose: training}
residency_classes:
  - {name: eu-any, jurisdictions: [EU]}
nodes: []
"#;

/// Lease settings of the test replicas (short, so that a failover fits in a test).
const LEASE: [&str; 3] = ["--lease-duration=3s", "--renew-deadline=2s", "--retry-period=500ms"];

async fn control_plane(nodes: usize) -> (ControlPlane, kube::Client) {
    let cp = ControlPlane::start().await.expect("control plane");
    std::fs::write(cp.dir().join("cluster.yaml"), CLUSTER).expect("cluster");
    let client = cp.client().await.expect("client");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "sovra-system"}})).expect("ns");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    for i in 0..nodes {
        TestNode::gpu(&format!("fr-{i}"), "fr-train", 8).create(&client).await.expect("node");
    }
    (cp, client)
}

fn extender(cp: &ControlPlane, id: &str, port: u16) -> Proc {
    let d = cp.dir();
    let mut args: Vec<String> = vec![
        "serve".into(),
        format!("--config={}", d.join("cluster.yaml").display()),
        format!("--listen=127.0.0.1:{port}"),
        "--prefix=/sovra".into(),
        "--kube".into(),
        "--leader-elect".into(),
        "--lease-namespace=sovra-system".into(),
        format!("--lease-identity={id}"),
    ];
    args.extend(LEASE.iter().map(|s| s.to_string()));
    let kubeconfig = cp.admin_kubeconfig();
    Proc::spawn_env(
        "sovra-extender",
        Path::new(env!("CARGO_BIN_EXE_sovra-extender")),
        &args,
        &[("KUBECONFIG", kubeconfig.as_os_str()), ("RUST_LOG", "info".as_ref())],
        &d.join(format!("extender-{id}.log")),
    )
    .expect("extender")
}

fn pod(name: &str, gpus: u32, group: Option<(&str, u32)>) -> Pod {
    let mut labels = json!({"sovra.io/residency": "eu-any"});
    let mut annotations = json!({});
    if let Some((g, min)) = group {
        labels["sovra.io/pod-group"] = g.into();
        annotations["sovra.io/pod-group-min-member"] = min.to_string().into();
    }
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"schedulerName": "sovra-scheduler", "containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]}}))
    .expect("pod")
}

async fn nodes_of(pods: &Api<Pod>, names: &[String]) -> Vec<Option<String>> {
    let mut out = vec![];
    for n in names {
        out.push(pods.get(n).await.expect("pod").spec.and_then(|s| s.node_name));
    }
    out
}

async fn wait_bound(pods: &Api<Pod>, names: &[String], limit: Duration, why: impl Fn() -> String) -> Duration {
    let t = Instant::now();
    loop {
        if nodes_of(pods, names).await.iter().all(Option::is_some) {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "not all of {names:?} bound within {limit:?}\n{}", why());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete_all(pods: &Api<Pod>, names: &[String]) {
    for n in names {
        pods.delete(n, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_of_four_binds_all_together_or_none() {
    let (mut cp, client) = control_plane(2).await;
    let port = free_port().expect("port");
    let ext = extender(&cp, "a", port);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cp.start_scheduler(deploy_scheduler_config(&format!("http://127.0.0.1:{port}/sovra"), None).expect("config"))
        .await
        .expect("kube-scheduler");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Four 8-GPU members on two 8-GPU nodes can never fit together: none is bound, none holds a GPU.
    let never: Vec<String> = (0..4).map(|i| format!("never-{i}")).collect();
    for n in &never {
        pods.create(&PostParams::default(), &pod(n, 8, Some(("never", 4)))).await.expect("pod");
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let got = nodes_of(&pods, &never).await;
    assert!(got.iter().all(Option::is_none), "part of a gang that cannot fit was bound: {got:?}");
    delete_all(&pods, &never).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Four 4-GPU members (all 16 GPUs) racing two 4-GPU solo pods: the gang binds whole or not at all, and no
    // node holds more than its 8 GPUs.
    let gang: Vec<String> = (0..4).map(|i| format!("gang-{i}")).collect();
    let solos = ["solo-0".to_string(), "solo-1".to_string()];
    for n in &gang {
        pods.create(&PostParams::default(), &pod(n, 4, Some(("four", 4)))).await.expect("pod");
    }
    for n in &solos {
        pods.create(&PostParams::default(), &pod(n, 4, None)).await.expect("pod");
    }
    let all: Vec<String> = gang.iter().chain(&solos).cloned().collect();
    let t = Instant::now();
    let mut last = vec![];
    // Settled: the gang whole, or both solos bound and the gang waiting.
    while t.elapsed() < Duration::from_secs(60) {
        last = nodes_of(&pods, &all).await;
        let g = last[..4].iter().flatten().count();
        let s = last[4..].iter().flatten().count();
        if g == 4 || (s == 2 && t.elapsed() > Duration::from_secs(8)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let g = last[..4].iter().flatten().count();
    assert!(g == 0 || g == 4, "a partial gang: {last:?}\n{}", ext.log_tail(30));
    let mut per_node = std::collections::BTreeMap::<&str, u32>::new();
    for n in last.iter().flatten() {
        *per_node.entry(n.as_str()).or_default() += 4;
    }
    assert!(per_node.values().all(|&gpus| gpus <= 8), "a node over its 8 GPUs: {per_node:?}");
    eprintln!("gang of 4 with 2 solo pods racing, after {:?}: {last:?}", t.elapsed());
    // With the solos gone the gang completes.
    if g == 0 {
        delete_all(&pods, &solos).await;
        wait_bound(&pods, &gang, Duration::from_secs(60), || ext.log_tail(30)).await;
    }
}

/// A TCP balancer picking a backend per connection (as kube-proxy does), deterministic xorshift order.
async fn balancer(backends: [u16; 2]) -> (u16, Arc<AtomicU64>) {
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = lb.local_addr().expect("addr").port();
    let conns = Arc::new(AtomicU64::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        while let Ok((mut inbound, _)) = lb.accept().await {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let backend = backends[(seed % 2) as usize];
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                // A dead backend: the connection fails, as with a dead endpoint.
                if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (port, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_lets_binds_continue_within_the_lease_time_and_books_nothing_twice() {
    let (mut cp, client) = control_plane(3).await;
    let (pa, pb) = (free_port().expect("port"), free_port().expect("port"));
    let mut a = extender(&cp, "a", pa);
    tokio::time::sleep(Duration::from_secs(2)).await; // a leads
    let b = extender(&cp, "b", pb);
    let (lport, conns) = balancer([pa, pb]).await;
    cp.start_scheduler(deploy_scheduler_config(&format!("http://127.0.0.1:{lport}/sovra"), None).expect("config"))
        .await
        .expect("kube-scheduler");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let first: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    for n in &first {
        pods.create(&PostParams::default(), &pod(n, 1, None)).await.expect("pod");
    }
    let took = wait_bound(&pods, &first, Duration::from_secs(90), || a.log_tail(20)).await;
    eprintln!("12 pods bound through the balancer in {took:?} ({} connections)", conns.load(Ordering::Relaxed));

    a.kill();
    let killed = Instant::now();
    let second: Vec<String> = (0..6).map(|i| format!("q{i}")).collect();
    for n in &second {
        pods.create(&PostParams::default(), &pod(n, 1, None)).await.expect("pod");
    }
    let took = wait_bound(&pods, &second, Duration::from_secs(60), || b.log_tail(30)).await;
    eprintln!("6 more bound {:?} after SIGKILL of the leader (lease 3 s)", killed.elapsed());
    // The lease (3 s) plus kube-scheduler's backoff of the pods refused meanwhile (1 s, doubling, at most 10 s).
    assert!(took < Duration::from_secs(30), "binds resumed only after {took:?}");
    let mut seen = BTreeSet::new();
    for n in first.iter().chain(&second) {
        let p = pods.get(n).await.expect("pod");
        let ann = p.metadata.annotations.unwrap_or_default();
        let node = p.spec.and_then(|s| s.node_name).expect("bound");
        assert_eq!(ann.get("sovra.io/gpu-devices-node"), Some(&node), "{n}: devices recorded for its node");
        let key = (node, ann.get("sovra.io/gpu-devices").cloned().unwrap_or_default());
        assert!(seen.insert(key.clone()), "GPU {key:?} booked twice");
    }
    assert_eq!(seen.len(), 18);
}
