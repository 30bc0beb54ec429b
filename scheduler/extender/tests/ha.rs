//! High availability (issue 13, item 5): two in-process extenders elect one leader through a Lease on a fake API
//! server with real optimistic concurrency (resourceVersion, 409 Conflict on a stale write, 409 AlreadyExists on a
//! second create, RFC 3339 MicroTime checked); the leader fails over when it stops renewing and the two never lead
//! at once; a follower refuses to bind; a replica started afterwards rebuilds exactly the leader's device
//! accounting from the pods' annotations.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::*;
use sovra_domain::PolicySpec;
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::leader::{Attempt, Elector, Leadership, LeaseSettings};
use sovra_extender::{Cache, k8s};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the fake API server holds: objects by path, a global resourceVersion, and a log of (method, path).
#[derive(Default)]
struct Store {
    rv: u64,
    leases: BTreeMap<String, serde_json::Value>,
    pods: BTreeMap<String, serde_json::Value>,
    log: Vec<(String, String)>,
    /// Milliseconds each pod PATCH waits (to make binds overlap).
    patch_delay_ms: u64,
}

type Api = Arc<Mutex<Store>>;

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": reason, "message": message, "code": code});
    (StatusCode::from_u16(code).unwrap(), [(header::CONTENT_TYPE, "application/json")], body.to_string())
        .into_response()
}

fn object(v: &serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// `2026-12-02T05:46:37.123456Z`: the MicroTime form the API server writes and reads.
fn is_micro_time(v: &serde_json::Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    s.len() == 27
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && b[20..26].iter().all(u8::is_ascii_digit)
}

fn bad_lease(body: &serde_json::Value) -> Option<Response> {
    let spec = &body["spec"];
    for f in ["acquireTime", "renewTime"] {
        if !spec[f].is_null() && !is_micro_time(&spec[f]) {
            return Some(status(400, "BadRequest", &format!("spec.{f}: not an RFC 3339 MicroTime: {}", spec[f])));
        }
    }
    None
}

async fn fake_api(State(api): State<Api>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let delay = {
        let mut s = api.lock().unwrap();
        s.log.push((method.to_string(), path.clone()));
        if method == Method::PATCH { s.patch_delay_ms } else { 0 }
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if query.contains("watch=true") {
        return Response::new(Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>()));
    }
    let mut s = api.lock().unwrap();
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/sovra-system/leases";
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), path.as_str()) {
        ("POST", LEASES) => {
            if let Some(r) = bad_lease(&body) {
                return r;
            }
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
            if s.leases.contains_key(&name) {
                return status(409, "AlreadyExists", &format!("leases.coordination.k8s.io \"{name}\" already exists"));
            }
            s.rv += 1;
            let mut v = body.clone();
            v["metadata"]["resourceVersion"] = s.rv.to_string().into();
            v["metadata"]["uid"] = format!("lease-uid-{name}").into();
            s.leases.insert(name, v.clone());
            (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
        }
        (m, p) if p.starts_with(LEASES) && p.len() > LEASES.len() => {
            let name = p[LEASES.len() + 1..].to_string();
            match m {
                "GET" => match s.leases.get(&name) {
                    Some(v) => object(v),
                    None => status(404, "NotFound", &format!("leases.coordination.k8s.io \"{name}\" not found")),
                },
                "PUT" => {
                    if let Some(r) = bad_lease(&body) {
                        return r;
                    }
                    let Some(cur) = s.leases.get(&name) else { return status(404, "NotFound", "not found") };
                    if body["metadata"]["resourceVersion"] != cur["metadata"]["resourceVersion"] {
                        return status(
                            409,
                            "Conflict",
                            "Operation cannot be fulfilled on leases.coordination.k8s.io: the object has been \
                             modified; please apply your changes to the latest version and try again",
                        );
                    }
                    s.rv += 1;
                    let mut v = body.clone();
                    v["metadata"]["resourceVersion"] = s.rv.to_string().into();
                    s.leases.insert(name, v.clone());
                    object(&v)
                }
                _ => status(405, "MethodNotAllowed", m),
            }
        }
        ("GET", "/api/v1/nodes") => object(&serde_json::json!({"apiVersion": "v1", "kind": "NodeList",
            "metadata": {"resourceVersion": s.rv.to_string()}, "items": []})),
        ("GET", "/api/v1/pods") => {
            let items: Vec<serde_json::Value> = s.pods.values().cloned().collect();
            object(&serde_json::json!({"apiVersion": "v1", "kind": "PodList",
                "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}))
        }
        // /api/v1/namespaces/{ns}/pods/{name}[/binding]
        (m, _) if parts.len() >= 6 && parts[..3] == ["api", "v1", "namespaces"] && parts[4] == "pods" => {
            let key = format!("{}/{}", parts[3], parts[5]);
            let rv = s.rv + 1;
            let Some(pod) = s.pods.get_mut(&key) else { return status(404, "NotFound", "pod not found") };
            match (m, parts.get(6)) {
                ("GET", None) => object(pod),
                ("PATCH", None) => {
                    if let Some(uid) = body["metadata"]["uid"].as_str()
                        && pod["metadata"]["uid"] != uid
                    {
                        // What kube-apiserver answers (checked against v1.37): the UID is immutable.
                        return status(422, "Invalid", "metadata.uid: Invalid value: field is immutable");
                    }
                    if let Some(a) = body["metadata"]["annotations"].as_object() {
                        for (k, v) in a {
                            pod["metadata"]["annotations"][k] = v.clone();
                        }
                    }
                    pod["metadata"]["resourceVersion"] = rv.to_string().into();
                    let out = pod.clone();
                    s.rv = rv;
                    object(&out)
                }
                ("POST", Some(&"binding")) => {
                    if !pod["spec"]["nodeName"].is_null() {
                        return status(409, "Conflict", "pod is already assigned to a node");
                    }
                    pod["spec"]["nodeName"] = body["target"]["name"].clone();
                    pod["metadata"]["resourceVersion"] = rv.to_string().into();
                    s.rv = rv;
                    status(201, "", "")
                }
                _ => status(405, "MethodNotAllowed", m),
            }
        }
        _ => status(404, "NotFound", &format!("no route for {method} {path}")),
    }
}

async fn api_server() -> (kube::Client, Api) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let api: Api = Arc::default();
    let app = axum::Router::new().fallback(fake_api).with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (kube::Client::try_from(config).unwrap(), api)
}

/// Fast settings for tests: lease 1 s, renew deadline 600 ms, retry 50 ms.
fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: "sovra-system".into(),
        name: "sovra-extender".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(50),
    }
}

fn elect(client: &kube::Client, identity: &str) -> (Arc<Elector>, Leadership, tokio::task::JoinHandle<()>) {
    let (elector, leadership) = Elector::new(client.clone(), settings(identity)).unwrap();
    let elector = Arc::new(elector);
    let task = tokio::spawn({
        let e = elector.clone();
        async move { e.run().await }
    });
    (elector, leadership, task)
}

/// Polls `f` every 10 ms for up to `secs`, asserting `never` at each step; true when `f` held.
async fn until(secs: u64, mut f: impl FnMut() -> bool, mut never: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        assert!(!never(), "a forbidden state was reached");
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn holder(api: &Api) -> serde_json::Value {
    api.lock().unwrap().leases.get("sovra-extender").map(|l| l["spec"].clone()).unwrap_or_default()
}

#[tokio::test]
async fn one_of_two_replicas_leads_and_the_other_takes_over_when_it_stops_renewing() {
    let (client, api) = api_server().await;
    let (_ea, a, task_a) = elect(&client, "replica-a");
    let (_eb, b, task_b) = elect(&client, "replica-b");
    let both = || a.is_leader() && b.is_leader();
    assert!(until(5, || a.is_leader() || b.is_leader(), both).await, "nobody became the leader");
    // Stable: the same one leads for two lease durations, the other follows.
    let (leader, follower, leader_task, follower_task) =
        if a.is_leader() { (&a, &b, task_a, task_b) } else { (&b, &a, task_b, task_a) };
    assert!(!until(2, || !leader.is_leader() || follower.is_leader(), both).await, "leadership flapped");
    let spec = holder(&api);
    assert_eq!(spec["holderIdentity"], leader.identity());
    assert_eq!(spec["leaseDurationSeconds"], 1);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(is_micro_time(&spec["renewTime"]) && is_micro_time(&spec["acquireTime"]), "{spec}");
    assert!(
        follower.not_leader().contains(&format!("the leader is {}", leader.identity())),
        "{}",
        follower.not_leader()
    );
    // The leader stops renewing (as a crashed or partitioned replica does): it stops leading on its own by its
    // renew deadline, and the follower takes over after the lease duration; never both at once.
    leader_task.abort();
    let stopped = tokio::time::Instant::now();
    assert!(until(5, || follower.is_leader(), both).await, "no failover");
    let took = stopped.elapsed();
    assert!(!leader.is_leader(), "the old leader no longer believes it leads");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "failover after {took:?}");
    let spec = holder(&api);
    assert_eq!(spec["holderIdentity"], follower.identity());
    assert_eq!(spec["leaseTransitions"], 1);
    follower_task.abort();
}

#[tokio::test]
async fn concurrent_candidates_get_conflicts_and_exactly_one_wins() {
    let (client, api) = api_server().await;
    let candidates: Vec<(Elector, Leadership)> =
        (0..4).map(|i| Elector::new(client.clone(), settings(&format!("c{i}"))).unwrap()).collect();
    let attempts = futures_util::future::join_all(candidates.iter().map(|(e, _)| e.try_once())).await;
    let attempts: Vec<Attempt> = attempts.into_iter().map(Result::unwrap).collect();
    let winners = attempts.iter().filter(|a| **a == Attempt::Leading).count();
    assert_eq!(winners, 1, "{attempts:?}");
    assert_eq!(candidates.iter().filter(|(_, l)| l.is_leader()).count(), 1);
    // A second round: the holder renews, the others follow (the lease has not expired by their clocks).
    let attempts = futures_util::future::join_all(candidates.iter().map(|(e, _)| e.try_once())).await;
    let leading = attempts.iter().filter(|a| matches!(a, Ok(Attempt::Leading))).count();
    assert_eq!(leading, 1, "{attempts:?}");
    let puts = api.lock().unwrap().log.iter().filter(|(m, _)| m == "PUT").count();
    assert!(puts >= 1, "renewals are PUTs with the resourceVersion read");
    // An elector that released gives the lease up at once: another takes it on its next try.
    let (holder_idx, _) = candidates.iter().enumerate().find(|(_, (_, l))| l.is_leader()).unwrap();
    candidates[holder_idx].0.release().await.unwrap();
    assert!(!candidates[holder_idx].1.is_leader());
    let other = (holder_idx + 1) % candidates.len();
    assert_eq!(candidates[other].0.try_once().await.unwrap(), Attempt::Leading, "a released lease is free");
}

/// A pending pod in the fake API, and the filter request kube-scheduler would send for it.
fn add_pod(api: &Api, name: &str, resources: serde_json::Value) -> Vec<u8> {
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}"), "resourceVersion": "1",
                     "labels": {"sovra.io/residency": "eu-restricted"}, "annotations": {}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": resources}}]},
        "status": {"phase": "Pending"}});
    api.lock().unwrap().pods.insert(format!("ml/{name}"), pod.clone());
    serde_json::to_vec(&serde_json::json!({"Pod": pod, "NodeNames": ["gpu-fr-1", "gpu-fr-2"]})).unwrap()
}

fn kube_ext(client: &kube::Client, leadership: Option<Leadership>) -> Arc<Extender> {
    let cache = Arc::new(Cache::new(cluster()).unwrap());
    let e = Extender::new(cache, PolicySpec::default(), 0, Binder::Kube(client.clone()));
    Arc::new(match leadership {
        Some(l) => e.with_leadership(l),
        None => e,
    })
}

async fn bind(addr: std::net::SocketAddr, name: &str, node: &str) -> String {
    let b = serde_json::json!({"PodName": name, "PodNamespace": "ml", "PodUID": format!("uid-{name}"), "Node": node});
    json(&post(addr, "/sovra/bind", serde_json::to_vec(&b).unwrap()).await.1)["Error"].as_str().unwrap().to_string()
}

/// Every device's used milli-GPU on the config's nodes.
fn usage(ext: &Extender) -> Vec<(String, Vec<u16>)> {
    let snap = ext.cache().snapshot();
    let topo = snap.state.topology();
    topo.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), topo.device_range(i as u32).map(|d| snap.state.device_used(d)).collect()))
        .collect()
}

#[tokio::test]
async fn only_the_leader_binds_and_a_new_replica_rebuilds_its_exact_accounting_from_the_annotations() {
    let (client, api) = api_server().await;
    let (_ea, a, task_a) = elect(&client, "replica-a");
    assert!(until(5, || a.is_leader(), || false).await);
    let (_eb, b, task_b) = elect(&client, "replica-b");
    let leader = kube_ext(&client, Some(a.clone()));
    let follower = kube_ext(&client, Some(b.clone()));
    let (la, _ls) = start(leader.clone()).await;
    let (fa, _fs) = start(follower.clone()).await;
    // Pods bound in an order whose devices differ from the core's choice in UID order: a share first, then whole
    // GPUs, then a share of another device. Rebuilt without the annotations, the devices would move.
    let pods = [
        ("z-share", serde_json::json!({"sovra.io/gpu-milli": "250"})),
        ("a-share", serde_json::json!({"sovra.io/gpu-milli": "900"})),
        ("y-two", serde_json::json!({"nvidia.com/gpu": "2"})),
        ("b-one", serde_json::json!({"nvidia.com/gpu": "1"})),
    ];
    for (name, res) in &pods {
        let req = add_pod(&api, name, res.clone());
        // Both replicas answer filter (kube-scheduler's Service reaches either).
        for addr in [la, fa] {
            let v = json(&post(addr, "/sovra/filter", req.clone()).await.1);
            assert_eq!(v["NodeNames"], serde_json::json!(["gpu-fr-1", "gpu-fr-2"]), "{v}");
        }
        let refused = bind(fa, name, "gpu-fr-1").await;
        assert!(
            refused.contains("sovra-extender replica-b is not the leader of Lease sovra-system/sovra-extender"),
            "{refused}"
        );
        assert!(refused.contains("the leader is replica-a"), "{refused}");
        assert_eq!(bind(la, name, "gpu-fr-1").await, "", "the leader binds {name}");
    }
    {
        let s = api.lock().unwrap();
        let bindings = s.log.iter().filter(|(m, p)| m == "POST" && p.ends_with("/binding")).count();
        assert_eq!(bindings, pods.len(), "one Binding per pod, none from the follower");
        // The devices were recorded before each Binding.
        for (name, _) in &pods {
            let patch = s.log.iter().position(|(m, p)| m == "PATCH" && p.ends_with(&format!("/pods/{name}")));
            let post = s.log.iter().position(|(m, p)| m == "POST" && p.ends_with(&format!("/pods/{name}/binding")));
            assert!(patch.unwrap() < post.unwrap(), "{name}: annotation first");
            let pod = &s.pods[&format!("ml/{name}")];
            assert_eq!(pod["spec"]["nodeName"], "gpu-fr-1");
            assert_eq!(pod["metadata"]["annotations"]["sovra.io/gpu-devices-node"], "gpu-fr-1");
        }
        assert_eq!(s.pods["ml/z-share"]["metadata"]["annotations"]["sovra.io/gpu-devices"], "0:250");
    }
    // A replica started now (a new leader after a failover, or a restart) lists the pods and accounts them on the
    // recorded devices: exactly the leader's accounting.
    let fresh = kube_ext(&client, None);
    let watch = tokio::spawn(k8s::watch(client.clone(), fresh.cache().clone()));
    assert!(
        until(5, || fresh.cache().accounted_pods() == pods.len(), || false).await,
        "the watch did not list the pods"
    );
    assert_eq!(usage(&fresh), usage(&leader), "the rebuilt accounting equals the leader's");
    // Guard: without the annotations the same pods would be accounted differently (the test can fail).
    let bare = Cache::new(cluster()).unwrap();
    let mut names: Vec<&str> = pods.iter().map(|(n, _)| *n).collect();
    names.sort(); // the order a watch lists them in
    for name in names {
        let mut pod = api.lock().unwrap().pods[&format!("ml/{name}")].clone();
        pod["metadata"]["annotations"] = serde_json::json!({});
        bare.upsert_pod(k8s::pod_record(&serde_json::from_value(pod).unwrap()).unwrap());
    }
    let snap = bare.snapshot();
    let fr1 = snap.node_index("gpu-fr-1").unwrap();
    let bare_fr1: Vec<u16> = snap.state.topology().device_range(fr1).map(|d| snap.state.device_used(d)).collect();
    let leader_fr1 = usage(&leader).into_iter().find(|(n, _)| n == "gpu-fr-1").unwrap().1;
    assert_ne!(bare_fr1, leader_fr1, "the annotations are what makes the accounting equal");
    // Failover: the leader stops; the other replica binds the next pod.
    task_a.abort();
    let req = add_pod(&api, "after", serde_json::json!({"nvidia.com/gpu": "1"}));
    post(fa, "/sovra/filter", req).await;
    assert!(until(5, || b.is_leader(), || false).await, "no failover");
    assert_eq!(bind(fa, "after", "gpu-fr-1").await, "");
    assert!(bind(la, "after", "gpu-fr-1").await.contains("is not the leader"), "the old leader no longer binds");
    watch.abort();
    task_b.abort();
}

#[tokio::test]
async fn concurrent_binds_through_the_api_never_record_the_same_device_twice() {
    // Each PATCH takes 30 ms, so the eight binds overlap: each must still get its own device.
    let (client, api) = api_server().await;
    api.lock().unwrap().patch_delay_ms = 30;
    let ext = kube_ext(&client, None);
    let (addr, _srv) = start(ext.clone()).await;
    for i in 0..9 {
        post(addr, "/sovra/filter", add_pod(&api, &format!("one-{i}"), serde_json::json!({"nvidia.com/gpu": "1"})))
            .await;
    }
    let binds: Vec<_> =
        (0..9).map(|i| tokio::spawn(async move { bind(addr, &format!("one-{i}"), "gpu-fr-2").await })).collect();
    let mut refused = 0;
    for b in binds {
        let e = b.await.unwrap();
        if !e.is_empty() {
            assert!(e.contains("no room for ml/one-") && e.contains("on node gpu-fr-2"), "{e}");
            refused += 1;
        }
    }
    assert_eq!(refused, 1, "eight GPUs, nine pods");
    let s = api.lock().unwrap();
    let mut devices: Vec<String> = s
        .pods
        .values()
        .filter(|p| !p["spec"]["nodeName"].is_null())
        .map(|p| p["metadata"]["annotations"]["sovra.io/gpu-devices"].as_str().unwrap().to_string())
        .collect();
    devices.sort();
    assert_eq!(devices, ["0", "1", "2", "3", "4", "5", "6", "7"]);
}

/// deploy/: two replicas with leader election, flags the binary knows, the replica's identity from the downward
/// API, and the RBAC the election and the device annotations need.
#[test]
fn deploy_runs_two_replicas_with_leader_election_and_the_rbac_it_needs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let docs = |file: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_json::Value| !v.is_null())
            .collect()
    };
    let ext = docs("extender.yaml");
    let deploy = ext.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert!(deploy["spec"]["replicas"].as_u64().unwrap() >= 2);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--leader-elect") && args.contains(&"--kube"), "{args:?}");
    let help =
        std::process::Command::new(env!("CARGO_BIN_EXE_sovra-extender")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for a in args.iter().skip(1) {
        let flag = a.split('=').next().unwrap();
        assert!(help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")), "{flag} is not a flag");
    }
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?)))
        .collect();
    assert!(env.contains(&("POD_NAME", "metadata.name")) && env.contains(&("POD_NAMESPACE", "metadata.namespace")));
    let rbac = docs("rbac.yaml");
    let verbs = |kind: &str, name: &str, group: &str, resource: &str| -> Vec<String> {
        let role = rbac.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap();
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["apiGroups"].as_array().unwrap().iter().any(|g| g == group))
            .filter(|r| r["resources"].as_array().unwrap().iter().any(|x| x == resource))
            .flat_map(|r| r["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()))
            .collect()
    };
    let lease = verbs("Role", "sovra-extender-lease", "coordination.k8s.io", "leases");
    for v in ["get", "create", "update"] {
        assert!(lease.iter().any(|x| x == v), "leases: {v} in {lease:?}");
    }
    assert!(verbs("ClusterRole", "sovra-extender", "", "pods").iter().any(|v| v == "patch"), "pods: patch");
    let binding = rbac.iter().find(|d| d["kind"] == "RoleBinding" && d["metadata"]["name"] == "sovra-extender-lease");
    assert_eq!(binding.unwrap()["subjects"][0]["name"], "sovra-extender");
}

/// One connection that stays open: (request sender, the connection's task, which ends when the server closes it).
async fn keep_alive(
    addr: std::net::SocketAddr,
) -> (hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>, tokio::task::JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    (send, tokio::spawn(async move { conn.await.unwrap() }))
}

async fn send(
    s: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    path: &str,
    body: Vec<u8>,
) -> serde_json::Value {
    use http_body_util::BodyExt;
    let req = hyper::Request::post(path).header("host", "localhost").body(http_body_util::Full::new(Bytes::from(body)));
    let resp = s.send_request(req.unwrap()).await.unwrap();
    json(&resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn a_follower_closes_the_connection_of_a_refused_bind_so_that_the_retry_dials_again() {
    // kube-scheduler keeps its connection to the Service; a follower that kept it open would get every retry.
    let (client, api) = api_server().await;
    let (_ea, a, task_a) = elect(&client, "replica-a");
    assert!(until(5, || a.is_leader(), || false).await);
    let (_eb, b, task_b) = elect(&client, "replica-b");
    let follower = kube_ext(&client, Some(b));
    let (fa, _fs) = start(follower).await;
    let req = add_pod(&api, "p", serde_json::json!({"nvidia.com/gpu": "1"}));
    let (mut s, conn) = keep_alive(fa).await;
    let v = send(&mut s, "/sovra/filter", req.clone()).await;
    assert_eq!(v["NodeNames"], serde_json::json!(["gpu-fr-1", "gpu-fr-2"]));
    let v = send(&mut s, "/sovra/filter", req).await;
    assert_eq!(v["Error"], "", "filter keeps the connection");
    let bind = serde_json::json!({"PodName": "p", "PodNamespace": "ml", "PodUID": "uid-p", "Node": "gpu-fr-1"});
    let v = send(&mut s, "/sovra/bind", serde_json::to_vec(&bind).unwrap()).await;
    assert!(v["Error"].as_str().unwrap().contains("is not the leader"), "{v}");
    tokio::time::timeout(Duration::from_secs(2), conn).await.expect("the follower closed the connection").unwrap();
    task_a.abort();
    task_b.abort();
}
