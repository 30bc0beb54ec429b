//! The plugin in-process with a test pod source (the `PodSource` trait), against the test kubelet: the lookup's
//! fail-closed answers over the real protocol, several containers in one Allocate, CDI names, an unreadable
//! inventory, and a kubelet that refuses the registration.

mod common;

use common::{TestKubelet, inventory_json};
use sovra_device_plugin::api::{AllocateRequest, ContainerAllocateRequest};
use sovra_device_plugin::devices::{UNHEALTHY, device_id};
use sovra_device_plugin::inventory;
use sovra_device_plugin::kubelet::{self, Options, RunError};
use sovra_device_plugin::lookup::{ContainerView, LookupError, PodSource, PodView};
use sovra_device_plugin::plugin::{Cdi, Plugin};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pods held by the test; `None` plays an API server that cannot be reached.
#[derive(Clone, Default)]
struct TestPods(Arc<Mutex<Option<Vec<PodView>>>>);

impl PodSource for TestPods {
    async fn pods_on_node(&self) -> Result<Vec<PodView>, LookupError> {
        self.0
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| LookupError { node: "node-a".into(), message: "connection refused".into() })
    }
}

fn pod(name: &str, annotation: &str, containers: &[(&str, u64)]) -> PodView {
    PodView {
        namespace: "ml".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        created_s: 1,
        starting: true,
        gpu_devices: Some(annotation.into()),
        gpu_devices_node: Some("node-a".into()),
        containers: containers.iter().map(|(n, m)| ContainerView { name: n.to_string(), gpu_milli: *m }).collect(),
    }
}

fn ids(n: u32) -> ContainerAllocateRequest {
    ContainerAllocateRequest { devices_ids: (0..n).map(|u| device_id(0, u)).collect() }
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    inv: PathBuf,
    pods: TestPods,
    kubelet: TestKubelet,
}

fn setup(refuse: Option<&str>) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dp");
    std::fs::create_dir(&dir).unwrap();
    let inv = tmp.path().join("inv.json");
    std::fs::write(&inv, inventory_json(true)).unwrap();
    let kubelet = TestKubelet::start(&dir, refuse);
    Setup { _tmp: tmp, dir, inv, pods: TestPods::default(), kubelet }
}

fn options(dir: &Path, inv: &Path) -> Options {
    Options {
        socket_dir: dir.to_path_buf(),
        socket_name: "sovra-gpu-milli.sock".into(),
        inventory: inv.to_path_buf(),
        watch: Duration::from_millis(50),
        inventory_poll: Duration::from_millis(50),
    }
}

fn start(s: &Setup, cdi: Cdi) -> tokio::task::JoinHandle<Result<(), RunError>> {
    let plugin = Plugin::new("node-a", s.pods.clone(), inventory::load(&s.inv).unwrap(), cdi);
    tokio::spawn(kubelet::run(plugin, options(&s.dir, &s.inv), std::future::pending()))
}

#[tokio::test]
async fn ambiguous_pods_are_refused_until_they_can_be_told_apart() {
    let mut s = setup(None);
    *s.pods.0.lock().unwrap() = Some(vec![pod("a", "0:300", &[("c", 300)]), pod("b", "2:300", &[("c", 300)])]);
    let _run = start(&s, Cdi::Off);
    let mut reg = s.kubelet.next(20).await;
    let req = || AllocateRequest { container_requests: vec![ids(300)] };
    let e = reg.client.allocate(req()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("cannot tell which pod") && e.message().contains("ml/a: GPU 0"), "{}", e.message());
    // Pod a starts running (it got its GPU elsewhere, or left): only b is starting now.
    s.pods.0.lock().unwrap().as_mut().unwrap()[0].starting = false;
    let ok = reg.client.allocate(req()).await.unwrap().into_inner();
    assert_eq!(ok.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"], "GPU-22222222-cccc");
    // The API cannot be reached: refused as unavailable, nothing handed out.
    *s.pods.0.lock().unwrap() = None;
    let e = reg.client.allocate(req()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("connection refused"), "{}", e.message());
}

#[tokio::test]
async fn containers_of_one_call_are_answered_together_or_not_at_all_with_cdi_names() {
    let mut s = setup(None);
    *s.pods.0.lock().unwrap() = Some(vec![pod("two", "2:300", &[("init", 100), ("main", 200)])]);
    let _run = start(&s, Cdi::Uuid);
    let mut reg = s.kubelet.next(20).await;
    // 200 + 500: the second has no pod, so the call fails and the first is not recorded either.
    let bad = AllocateRequest { container_requests: vec![ids(200), ids(500)] };
    assert!(reg.client.allocate(bad).await.is_err());
    let good = AllocateRequest { container_requests: vec![ids(100), ids(200)] };
    let r = reg.client.allocate(good).await.unwrap().into_inner();
    assert_eq!(r.container_responses.len(), 2);
    for (c, milli) in r.container_responses.iter().zip(["100", "200"]) {
        assert_eq!(c.envs["NVIDIA_VISIBLE_DEVICES"], "GPU-22222222-cccc");
        assert_eq!(c.envs["SOVRA_GPU_MILLI"], milli);
        assert_eq!(c.cdi_devices.len(), 1);
        assert_eq!(c.cdi_devices[0].name, "nvidia.com/gpu=GPU-22222222-cccc");
    }
    // Foreign device IDs are refused as a bad request.
    let foreign =
        AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_ids: vec!["GPU-x".into()] }] };
    assert_eq!(reg.client.allocate(foreign).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn an_unreadable_inventory_makes_every_share_unhealthy_until_it_reads_again() {
    let mut s = setup(None);
    *s.pods.0.lock().unwrap() = Some(vec![pod("p", "0:100", &[("c", 100)])]);
    let _run = start(&s, Cdi::Off);
    let mut reg = s.kubelet.next(20).await;
    std::fs::write(&s.inv, "{ truncated").unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), reg.stream.message()).await.unwrap().unwrap().unwrap();
    assert!(next.devices.iter().all(|d| d.health == UNHEALTHY));
    let e = reg.client.allocate(AllocateRequest { container_requests: vec![ids(100)] }).await.unwrap_err();
    assert!(e.message().contains("inventory cannot be read"), "{}", e.message());
    std::fs::write(&s.inv, inventory_json(true)).unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), reg.stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(back.devices.iter().filter(|d| d.health == UNHEALTHY).count(), 1000);
}

#[tokio::test]
async fn a_refused_registration_stops_the_plugin_with_the_kubelets_reason() {
    let s = setup(Some("resource name sovra.io/gpu-milli is already registered"));
    let run = start(&s, Cdi::Off);
    let r = tokio::time::timeout(Duration::from_secs(20), run).await.unwrap().unwrap();
    let e = r.unwrap_err().to_string();
    assert!(e.contains("kubelet refused") && e.contains("already registered"), "{e}");
}

#[tokio::test]
async fn bad_socket_settings_are_refused_naming_the_flag() {
    let s = setup(None);
    let plugin = || Plugin::new("node-a", s.pods.clone(), inventory::load(&s.inv).unwrap(), Cdi::Off);
    let mut o = options(&s.dir, &s.inv);
    o.socket_name = "../evil.sock".into();
    let e = kubelet::run(plugin(), o, std::future::pending()).await.unwrap_err().to_string();
    assert!(e.contains("--socket-name"), "{e}");
    // A regular file where the plugin's socket goes is not removed.
    std::fs::write(s.dir.join("sovra-gpu-milli.sock"), "keep me").unwrap();
    let e = kubelet::run(plugin(), options(&s.dir, &s.inv), std::future::pending()).await.unwrap_err().to_string();
    assert!(e.contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(s.dir.join("sovra-gpu-milli.sock")).unwrap(), "keep me");
    let e = kubelet::run(plugin(), options(&s.dir.join("nope"), &s.inv), std::future::pending()).await.unwrap_err();
    assert!(e.to_string().starts_with("--socket-dir"), "{e}");
}
