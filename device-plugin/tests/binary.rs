//! The real `sovra-device-plugin` binary against a test kubelet that speaks the device plugin API v1beta1 and a
//! test Kubernetes API server: registration, the advertised devices and their health, the preferred
//! allocation, Allocate naming exactly the GPU Sovra chose, and registering again after a kubelet restart.

mod common;

use common::{FakeApi, TestKubelet, inventory_json, kubeconfig, share_pod};
use sovra_device_plugin::api::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, PreferredAllocationRequest,
};
use sovra_device_plugin::devices::{UNHEALTHY, device_id};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sovra-device-plugin");

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alloc(ids: impl IntoIterator<Item = String>) -> AllocateRequest {
    AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_ids: ids.into_iter().collect() }] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_registers_advertises_shares_and_hands_out_exactly_the_chosen_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device-plugins");
    std::fs::create_dir(&dir).unwrap();
    let inv = tmp.path().join("inv.json");
    std::fs::write(&inv, inventory_json(true)).unwrap();
    let api = FakeApi::default();
    *api.pods.lock().unwrap() = vec![
        // Sovra chose GPU 2 for this share pod, which the kubelet is now starting.
        share_pod("infer-0", "node-a", 250, "Pending", Some("2:250")),
        // Already running: never a candidate, whatever it asks for.
        share_pod("old-0", "node-a", 250, "Running", Some("0:250")),
        // Bound to this node without Sovra's annotation: no GPU for it.
        share_pod("stray-0", "node-a", 500, "Pending", None),
    ];
    let url = api.serve().await;
    let kubeconfig = kubeconfig(tmp.path(), &url);
    let mut kubelet = TestKubelet::start(&dir, None);

    let _plugin = Running(
        Command::new(BIN)
            .args(["--inventory", inv.to_str().unwrap(), "--node", "node-a", "--socket-dir", dir.to_str().unwrap()])
            .args(["--watch-ms", "100", "--inventory-poll-ms", "100"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("NODE_NAME")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Registration as the kubelet sees it.
    let mut reg = kubelet.next(60).await;
    assert_eq!(reg.request.version, "v1beta1");
    assert_eq!(reg.request.resource_name, "sovra.io/gpu-milli");
    assert_eq!(reg.request.endpoint, "sovra-gpu-milli.sock");
    assert!(reg.request.options.unwrap().get_preferred_allocation_available);
    assert!(!reg.options.pre_start_required && reg.options.get_preferred_allocation_available);

    // 1 ID per milli-GPU: GPUs 0, 1, 2 (GPU 3 is in MIG mode, not shared); GPU 1's IDs unhealthy.
    let list = &reg.first_list;
    assert_eq!(list.len(), 3000);
    let unhealthy: Vec<&str> = list.iter().filter(|d| d.health == UNHEALTHY).map(|d| d.id.as_str()).collect();
    assert_eq!(unhealthy.len(), 1000);
    assert!(unhealthy.iter().all(|id| id.starts_with("gpu1-")), "{:?}", &unhealthy[..3]);
    assert!(list.iter().all(|d| !d.id.starts_with("gpu3-")));

    // Preferred allocation: the chosen GPU's IDs first.
    let available: Vec<String> = (0..1000).flat_map(|u| [device_id(0, u), device_id(2, u)]).collect();
    let pref = reg
        .client
        .get_preferred_allocation(PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: available,
                must_include_device_i_ds: vec![],
                allocation_size: 250,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let ids = &pref.container_responses[0].device_i_ds;
    assert_eq!(ids.len(), 250);
    assert!(ids.iter().all(|id| id.starts_with("gpu2-")), "{:?}", &ids[..3]);

    // Allocate: whichever IDs the kubelet picked (here GPU 0's), the container gets the GPU Sovra chose.
    let answer = reg.client.allocate(alloc((0..250).map(|u| device_id(0, u)))).await.unwrap().into_inner();
    assert_eq!(answer.container_responses.len(), 1);
    let envs = &answer.container_responses[0].envs;
    assert_eq!(envs.get("NVIDIA_VISIBLE_DEVICES").map(String::as_str), Some("GPU-22222222-cccc"));
    assert_eq!(envs.get("SOVRA_GPU_MILLI").map(String::as_str), Some("250"));
    assert!(answer.container_responses[0].cdi_devices.is_empty());
    let queries = api.queries.lock().unwrap().clone();
    assert!(queries.iter().any(|q| q.contains("fieldSelector=spec.nodeName%3Dnode-a")), "{queries:?}");

    // The same pod is not handed a GPU twice; a pod without the annotation gets none.
    let again = reg.client.allocate(alloc((0..250).map(|u| device_id(0, u)))).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(again.message().contains("no pending pod on node node-a"), "{}", again.message());
    let stray = reg.client.allocate(alloc((0..500).map(|u| device_id(0, u)))).await.unwrap_err();
    assert!(stray.message().contains("pod ml/stray-0") && stray.message().contains("no sovra.io/gpu-devices"));

    // GPU 2 fails: ListAndWatch sends a new list with its IDs unhealthy.
    std::fs::write(&inv, inventory_json(false)).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(20), reg.stream.message()).await.unwrap().unwrap().unwrap();
    let bad = next.devices.iter().filter(|d| d.health == UNHEALTHY).count();
    assert_eq!(bad, 2000);
    assert!(next.devices.iter().filter(|d| d.id.starts_with("gpu2-")).all(|d| d.health == UNHEALTHY));
    // A new pod annotated for the failed GPU is refused, not given another one.
    api.pods.lock().unwrap().push(share_pod("infer-1", "node-a", 100, "Pending", Some("2:100")));
    let e = reg.client.allocate(alloc((0..100).map(|u| device_id(0, u)))).await.unwrap_err();
    assert!(e.message().contains("GPU 2") && e.message().contains("unhealthy"), "{}", e.message());

    // The kubelet restarts (its sockets are removed, a new kubelet.sock appears): the plugin serves and
    // registers again.
    kubelet.stop_and_clean(&dir).await;
    let mut kubelet = TestKubelet::start(&dir, None);
    let reg2 = kubelet.next(30).await;
    assert_eq!(reg2.request.resource_name, "sovra.io/gpu-milli");
    assert_eq!(reg2.first_list.len(), 3000);
}

fn run_to_end(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).env_remove("NODE_NAME").env("KUBECONFIG", "/nonexistent").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_input_is_refused_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("inv.json");
    std::fs::write(&good, inventory_json(true)).unwrap();
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"gpus": [{"index": 0, "name": "NVIDIA L4"}]}"#).unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    let missing = tmp.path().join("no-such-dir");
    for (args, want) in [
        (vec!["--inventory", bad.to_str().unwrap(), "--node", "n", "--socket-dir", &dir], "--inventory"),
        (vec!["--inventory", "/nonexistent.json", "--node", "n", "--socket-dir", &dir], "cannot read it"),
        (
            vec!["--inventory", good.to_str().unwrap(), "--node", "n", "--socket-dir", missing.to_str().unwrap()],
            "--socket-dir",
        ),
        (vec!["--inventory", good.to_str().unwrap(), "--node", " ", "--socket-dir", &dir], "--node"),
        (
            vec!["--inventory", good.to_str().unwrap(), "--node", "n", "--socket-dir", &dir],
            "cannot reach the Kubernetes API",
        ),
    ] {
        let (code, err) = run_to_end(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{args:?}: {err}");
    }
}
