//! The webhook against a real kube-apiserver and kube-scheduler (sovra-kube-testenv): regulated pods are confined,
//! preset nodeNames and Bindings outside the class refused, pool and residency labels guarded, and a webhook that
//! is down refuses regulated pods rather than admit them. The webhook configuration is deploy/admission.yaml's,
//! pointed at the test webhook.

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sovra_kube_testenv::nodes::{POOL_LABEL, TestNode};
use sovra_kube_testenv::process::{Proc, free_port};
use sovra_kube_testenv::{ControlPlane, deploy_scheduler_config};
use std::path::Path;
use std::time::Duration;

const CLUSTER: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: Hexa SAS, operator_hq: FR, certifications: [HDS, SecNumCloud]}
  - {id: us, country: DE, region: Frankfurt, jurisdiction: EU, operator: Hyper Inc., operator_hq: US, certifications: [C5]}
pools:
  - {id: fr-train, zone: fr, purpose: training}
  - {id: us-train, zone: us, purpose: training}
residency_classes:
  - {name: fr-health, countries: [FR], certifications: [HDS]}
nodes: []
"#;

/// Starts `sovra-admission serve` with the admin kubeconfig and a serving certificate from the test CA.
fn start_webhook(cp: &ControlPlane, port: u16) -> Proc {
    let d = cp.dir();
    std::fs::write(d.join("cluster.yaml"), CLUSTER).expect("cluster file");
    let ck = cp.pki().server(&[]).expect("cert");
    std::fs::write(d.join("hook.crt"), &ck.cert_pem).expect("cert");
    std::fs::write(d.join("hook.key"), &ck.key_pem).expect("key");
    let args: Vec<String> = vec![
        "serve".into(),
        format!("--config={}", d.join("cluster.yaml").display()),
        format!("--listen=127.0.0.1:{port}"),
        format!("--tls-cert={}", d.join("hook.crt").display()),
        format!("--tls-key={}", d.join("hook.key").display()),
        "--admin=group:system:masters".into(),
    ];
    let kubeconfig = cp.admin_kubeconfig();
    Proc::spawn_env(
        "sovra-admission",
        Path::new(env!("CARGO_BIN_EXE_sovra-admission")),
        &args,
        &[("KUBECONFIG", kubeconfig.as_os_str())],
        &d.join("admission.log"),
    )
    .expect("webhook")
}

/// deploy/admission.yaml's two WebhookConfigurations, pointed at `https://127.0.0.1:port` with the test CA.
fn webhook_configurations(
    cp: &ControlPlane,
    port: u16,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/admission.yaml"))
        .expect("deploy/admission.yaml");
    let ca = base64::engine::general_purpose::STANDARD.encode(cp.pki().ca_pem());
    let mut docs: Vec<Value> = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if matches!(v["kind"].as_str(), Some("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration")) {
            for w in v["webhooks"].as_array_mut().expect("webhooks") {
                let path = w["clientConfig"]["service"]["path"].as_str().expect("path").to_string();
                w["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}{path}"), "caBundle": ca});
            }
            docs.push(v);
        }
    }
    let m = docs.iter().find(|d| d["kind"] == "MutatingWebhookConfiguration").cloned().expect("mutating");
    let v = docs.iter().find(|d| d["kind"] == "ValidatingWebhookConfiguration").cloned().expect("validating");
    (serde_json::from_value(m).expect("mutating"), serde_json::from_value(v).expect("validating"))
}

fn pod(name: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod")
}

fn cpu_spec() -> Value {
    json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "1"}}}]})
}

fn namespace(name: &str, class: Option<&str>) -> Namespace {
    let labels = class.map(|c| json!({"sovra.io/residency": c})).unwrap_or(json!({}));
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("namespace")
}

async fn refused(api: &Api<Pod>, p: &Pod) -> String {
    match api.create(&PostParams::default(), p).await {
        Ok(created) => panic!("expected a refusal, the pod was admitted: {:?}", created.spec.and_then(|s| s.node_name)),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulated_pods_are_confined_and_refused_outside_their_class_against_a_real_api_server() {
    let mut cp = ControlPlane::start().await.expect("control plane");
    let admin = cp.client().await.expect("client");
    let port = free_port().expect("port");
    let mut hook = start_webhook(&cp, port);
    let (m, v) = webhook_configurations(&cp, port);
    Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &m)
        .await
        .expect("mutating configuration");
    Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &v)
        .await
        .expect("validating configuration");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for (n, c) in [("health", Some("fr-health")), ("typo", Some("fr-helth")), ("open", None)] {
        // Wait until the webhook answers (the namespace webhook guards this very label).
        let mut last = String::new();
        for _ in 0..100 {
            match namespaces.create(&PostParams::default(), &namespace(n, c)).await {
                Ok(_) => break,
                Err(e) => last = e.to_string(),
            }
            hook.check_alive().expect("webhook alive");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        namespaces.get(n).await.unwrap_or_else(|_| panic!("namespace {n}: {last}\n{}", hook.log_tail(20)));
    }
    TestNode::gpu("fr-1", "fr-train", 8).create(&admin).await.expect("fr-1");
    for i in 0..5 {
        TestNode::gpu(&format!("us-{i}"), "us-train", 8).create(&admin).await.expect("us node");
    }
    let health: Api<Pod> = Api::namespaced(admin.clone(), "health");

    // 1. A CPU-only pod gets the class, Sovra's scheduler and the affinity.
    let created = health.create(&PostParams::default(), &pod("cpu-only", cpu_spec())).await.expect("cpu-only admitted");
    let spec = created.spec.clone().expect("spec");
    assert_eq!(spec.scheduler_name.as_deref(), Some("sovra-scheduler"));
    assert_eq!(
        created.metadata.labels.as_ref().and_then(|l| l.get("sovra.io/residency")).map(String::as_str),
        Some("fr-health")
    );
    let affinity = serde_json::to_value(spec.affinity).expect("affinity");
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": ["fr-train"]}]}])
    );

    // 2. nodeName preset to a forbidden node: refused, with the reason.
    let mut preset = cpu_spec();
    preset["nodeName"] = "us-0".into();
    let why = refused(&health, &pod("preset", preset)).await;
    assert!(why.contains("us-0") && why.contains("us-train") && why.contains("spec.nodeName"), "{why}");

    // 3. A Binding to a forbidden node (bypassing every scheduler): refused.
    let bind = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "cpu-only"}, "target": {"kind": "Node", "name": "us-1"}});
    let err = health
        .create_subresource::<_, Value>("binding", "cpu-only", &PostParams::default(), &bind)
        .await
        .expect_err("binding refused");
    assert!(err.to_string().contains("us-train"), "{err}");

    // 4. An unknown class on a namespace: every pod there is refused, naming the label.
    let why = refused(&Api::namespaced(admin.clone(), "typo"), &pod("p", cpu_spec())).await;
    assert!(why.contains("fr-helth") && why.contains("sovra.io/residency"), "{why}");

    // 5. The pool label: an identity allowed to patch nodes by RBAC is still refused; the admin may.
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "node-patcher"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch", "update"]}]}))
    .expect("role");
    Api::<ClusterRole>::all(admin.clone()).create(&PostParams::default(), &role).await.expect("role");
    let rb: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": "node-patcher"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-patcher"},
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]}))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(admin.clone()).create(&PostParams::default(), &rb).await.expect("binding");
    let mallory: Api<Node> = Api::all(cp.client_as("mallory", &[]).await.expect("mallory"));
    let move_to = |pool: &str| json!({"metadata": {"labels": {POOL_LABEL: pool}}});
    let mut err = String::new();
    for _ in 0..50 {
        // RBAC bindings take effect within a moment.
        match mallory.patch("us-0", &PatchParams::default(), &Patch::Merge(move_to("fr-train"))).await {
            Err(e) if e.to_string().contains("forbidden") && !e.to_string().contains("sovra") => {}
            Err(e) => {
                err = e.to_string();
                break;
            }
            Ok(_) => panic!("mallory moved us-0 into fr-train"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(err.contains("may be changed only by") && err.contains("mallory"), "{err}");
    // Other labels still change freely (the webhook is not even called: matchConditions).
    mallory
        .patch("us-0", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})))
        .await
        .expect("other label");
    let nodes: Api<Node> = Api::all(admin.clone());
    nodes.patch("us-4", &PatchParams::default(), &Patch::Merge(move_to("us-train"))).await.expect("unchanged pool");

    // 6. The real kube-scheduler, with the deploy/ configuration, places the CPU-only pod (which never reaches the
    // extender: it asks for no managed resource) on the one permitted node among six.
    let config = deploy_scheduler_config("http://127.0.0.1:1/sovra", None).expect("scheduler config");
    cp.start_scheduler(config).await.expect("kube-scheduler");
    for i in 0..3 {
        health.create(&PostParams::default(), &pod(&format!("cpu-{i}"), cpu_spec())).await.expect("cpu pod");
    }
    for name in ["cpu-only", "cpu-0", "cpu-1", "cpu-2"] {
        let mut node = None;
        for _ in 0..300 {
            node = health.get(name).await.expect("pod").spec.and_then(|s| s.node_name);
            if node.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(node.as_deref(), Some("fr-1"), "{name}; scheduler log:\n{}", cp.scheduler_log());
    }

    // 7. The webhook down: regulated pods are refused, others admitted.
    hook.kill();
    let why = refused(&health, &pod("while-down", cpu_spec())).await;
    assert!(why.contains("failed calling webhook") || why.contains("connection refused"), "{why}");
    Api::<Pod>::namespaced(admin.clone(), "open")
        .create(&PostParams::default(), &pod("free", cpu_spec()))
        .await
        .expect("unregulated pod admitted");
}
