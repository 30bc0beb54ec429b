//! The harness itself: a real kube-apiserver serves, a real kube-scheduler binds a pod to the only node that fits.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use sovra_kube_testenv::ControlPlane;
use sovra_kube_testenv::nodes::TestNode;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_scheduler_binds_a_pod_to_the_node_that_fits() {
    let mut cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().await.expect("client");
    TestNode::gpu("small", "p", 2).create(&client).await.expect("node small");
    TestNode::gpu("big", "p", 8).create(&client).await.expect("node big");
    let config = serde_yaml_ng::from_str(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n  - schedulerName: default-scheduler\n",
    )
    .expect("config");
    cp.start_scheduler(config).await.expect("scheduler");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "four"},
        "spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let mut node = None;
    for _ in 0..200 {
        node = pods.get("four").await.expect("get").spec.and_then(|s| s.node_name);
        if node.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.as_deref(), Some("big"), "scheduler log:\n{}", cp.scheduler_log());
}
