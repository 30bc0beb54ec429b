//! The real NVML code path (`nvml-wrapper`), run against the test NVML library (`nvml-testlib`, built as a
//! dev-dependency) serving `fixtures/nvml-4gpu.json`.
//!
//! The test library reads its fixture from `SOVRA_TEST_NVML_FIXTURE` at `nvmlInit_v2`. Setting an environment
//! variable inside a running test is `unsafe` in Rust 2024 (and this workspace forbids `unsafe`), so the checks
//! that need the fixture run in a child process: the parent test re-runs this binary with the variable set,
//! selecting the `#[ignore]`d child test.

use sovra_domain::{
    ClusterConfig, Health, Job, NvlinkWish, PolicySpec, Pool, Purpose, ResidencyClass, Resources, Zone,
};
use sovra_node_daemon::inventory::GpuHealth;
use sovra_node_daemon::nvml::{XidWatch, apply_events, inventory, open};
use sovra_node_daemon::{BackendState, HealthPolicy, to_domain_node};
use sovra_placement::{ClusterState, Placer};
use std::path::{Path, PathBuf};

/// The test NVML library cargo built as a dev-dependency: next to this test binary (`target/debug/deps/`), or
/// one level up when it was also built on its own.
fn testlib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let candidates = [deps.join("libsovra_nvml_testlib.so"), deps.parent().unwrap().join("libsovra_nvml_testlib.so")];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
        panic!("libsovra_nvml_testlib.so is missing from {} (it is built as a dev-dependency)", deps.display())
    })
}

#[test]
fn nvml_missing_or_driver_not_loaded_is_a_state_not_a_crash() {
    let lib = testlib();
    // NVML missing altogether: a clear state, no crash.
    let missing = open(Some("/nonexistent/libnvidia-ml.so.1".as_ref()));
    let inv = inventory(missing.as_ref());
    match &inv.state {
        BackendState::Unavailable { reason } => assert!(reason.contains("NVML library not found"), "{reason}"),
        s => panic!("{s:?}"),
    }
    assert!(inv.gpus.is_empty());
    // The library loads but reports no driver (this process has no fixture): the reason says so.
    if std::env::var_os("SOVRA_TEST_NVML_FIXTURE").is_none() {
        let Err(err) = open(Some(lib.as_os_str())) else { panic!("no driver: open must fail") };
        assert!(err.contains("driver is not loaded"), "{err}");
    }
}

#[test]
fn nvml_backend_through_the_test_library() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nvml-4gpu.json");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["nvml_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("SOVRA_TEST_NVML_FIXTURE", &fixture)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child test ran:\n{text}");
}

/// Runs only as the child of `nvml_backend_through_the_test_library` (with the fixture variable set).
#[test]
#[ignore = "run by nvml_backend_through_the_test_library in a child process"]
fn nvml_child() {
    assert!(std::env::var_os("SOVRA_TEST_NVML_FIXTURE").is_some(), "run through the parent test");
    let lib = testlib();
    let nvml = open(Some(lib.as_os_str())).expect("the test library initialises");
    let mut inv = inventory(Ok(&nvml));
    assert_eq!(inv.state, BackendState::Ready);
    assert_eq!(inv.backend, "nvml");
    assert_eq!(inv.driver_version.as_deref(), Some("550.54.15"));
    assert_eq!(inv.cuda_driver_version.as_deref(), Some("12.4"));
    assert_eq!(inv.gpus.len(), 4);

    // Inventory fields.
    let h0 = &inv.gpus[0];
    assert_eq!(h0.uuid, "GPU-aaaa0000-0000-0000-0000-000000000000");
    assert_eq!(h0.name, "NVIDIA H100 80GB HBM3");
    assert_eq!((h0.memory_total_mib, h0.memory_used_mib), (81559, 1024));
    assert_eq!(h0.compute_capability, [9, 0]);
    assert_eq!(h0.pci_bus_id, "00000000:17:00.0");
    assert_eq!(h0.numa_node, Some(0));
    assert_eq!((h0.temperature_c, h0.power_mw, h0.utilization_pct), (Some(41), Some(72000), Some(3)));
    assert_eq!(inv.gpus[3].numa_node, None, "NUMA not supported on this GPU: left empty, not an error");
    // An NVLink pair: three links each way, deduplicated to one peer.
    assert_eq!(inv.gpus[0].nvlink_peers, vec!["00000000:2A:00.0".to_string()]);
    assert_eq!(inv.gpus[1].nvlink_peers, vec!["00000000:17:00.0".to_string()]);
    assert!(inv.gpus[3].nvlink_peers.is_empty());
    // A MIG-enabled GPU with two instances, each with its own UUID and memory.
    let a100 = &inv.gpus[2];
    assert!(a100.mig_enabled);
    assert_eq!(a100.mig_instances.len(), 2);
    assert_eq!(a100.mig_instances[1].uuid, "MIG-cccc0000-0000-0000-0000-000000000001");
    assert_eq!(a100.mig_instances[0].memory_total_mib, 40960);

    // XID events: 79 (fallen off the bus) marks GPU 1 unhealthy; 13 (application error) is ignored.
    let mut watch = XidWatch::new(&nvml).expect("events register");
    let mut events = Vec::new();
    for _ in 0..5 {
        events.extend(watch.poll(10));
    }
    assert_eq!(events.len(), 2, "{events:?}");
    let changed = apply_events(&mut inv, &events, &HealthPolicy::default());
    assert_eq!(changed.len(), 1);
    assert_eq!(inv.gpus[1].health, GpuHealth::Unhealthy { reason: "XID 79".into() });
    assert_eq!(inv.gpus[3].health, GpuHealth::Healthy, "XID 13 is in the default ignore list");

    // What the scheduler sees: NVLink peers by index, MIG profiles, health — and it stops placing on GPU 1.
    let node = to_domain_node(&inv, "gpu-node-1", "train", 128_000, 1_048_576);
    assert_eq!(node.gpus[0].model, "H100-80GB-HBM3");
    assert_eq!(node.gpus[0].nvlink_peers, vec![1]);
    assert_eq!(node.gpus[2].mig.len(), 2);
    assert_eq!(node.gpus[2].mig[0].profile, "3g.40gb");
    assert!(matches!(node.gpus[1].health, Health::Unhealthy { .. }));
    let cfg = ClusterConfig {
        zones: vec![Zone {
            id: "z".into(),
            country: "FR".into(),
            region: "r".into(),
            jurisdiction: "EU".into(),
            operator: "o".into(),
            operator_hq: "FR".into(),
            certifications: Default::default(),
        }],
        pools: vec![Pool { id: "train".into(), zone: "z".into(), purpose: Purpose::Training }],
        residency_classes: vec![ResidencyClass { name: "any".into(), ..Default::default() }],
        nodes: vec![node],
        ..Default::default()
    };
    let state = ClusterState::from_config(&cfg).unwrap();
    let job = |gpus: u32| Job {
        name: "j".into(),
        kind: Purpose::Training,
        queue: "q".into(),
        priority: 0,
        residency: "any".into(),
        replicas: 1,
        resources: Resources {
            gpus,
            gpu_milli: 1000,
            gpu_models: vec!["H100-80GB-HBM3".into()],
            cpu_milli: 1,
            memory_mib: 1,
        },
        nvlink: NvlinkWish::None,
        run: None,
        model: None,
        exception: None,
    };
    let d = Placer::new(PolicySpec::default(), 1).place(&state, &job(1)).unwrap();
    assert_eq!(d.replicas[0].devices[0].device, 0, "GPU 1 is unhealthy: only GPU 0 is offered");
    assert!(Placer::new(PolicySpec::default(), 1).place(&state, &job(2)).is_err(), "two healthy H100 no longer exist");
}

/// Runs the `nvswitch_child` test in a child process with the test library serving `fixture`.
fn child_with(fixture: &str, expect: &str) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["nvswitch_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("SOVRA_TEST_NVML_FIXTURE", &fixture)
        .env("SOVRA_TEST_EXPECT", expect)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "child ({expect}) failed:\n{text}");
}

#[test]
fn gpus_behind_nvswitch_form_one_island_and_pcie_gpus_none() {
    // HGX H100 8-GPU: every link of every GPU ends at one of 4 NVSwitches, never at another GPU.
    child_with("nvml-hgx-h100-nvswitch.json", "hgx");
    child_with("nvml-8gpu-pcie.json", "pcie");
}

/// Runs only as the child of `gpus_behind_nvswitch_form_one_island_and_pcie_gpus_none`.
#[test]
#[ignore = "run by gpus_behind_nvswitch_form_one_island_and_pcie_gpus_none in a child process"]
fn nvswitch_child() {
    let expect = std::env::var("SOVRA_TEST_EXPECT").expect("run through the parent test");
    let nvml = open(Some(testlib().as_os_str())).expect("the test library initialises");
    let inv = inventory(Ok(&nvml));
    assert_eq!(inv.gpus.len(), 8);
    let node = to_domain_node(&inv, "hgx-1", "train", 256_000, 2_097_152);
    let others = |i: u32| (0..8).filter(|&p| p != i).collect::<Vec<u32>>();
    for (i, g) in node.gpus.iter().enumerate() {
        let want = if expect == "hgx" { others(i as u32) } else { vec![] };
        assert_eq!(g.nvlink_peers, want, "GPU {i} ({expect})");
    }
    let mut cfg = ClusterConfig::from_yaml(
        "c.yaml",
        "zones: [{id: z, country: FR, region: r, jurisdiction: EU, operator: o, operator_hq: FR}]\n\
         pools: [{id: train, zone: z, purpose: training}]\nresidency_classes: [{name: any}]\nnodes: []\n",
    )
    .unwrap();
    cfg.nodes.push(node);
    let state = ClusterState::from_config(&cfg).unwrap();
    let job = Job {
        name: "allreduce".into(),
        kind: Purpose::Training,
        queue: "q".into(),
        priority: 0,
        residency: "any".into(),
        replicas: 1,
        resources: Resources { gpus: 8, gpu_milli: 1000, gpu_models: vec![], cpu_milli: 1, memory_mib: 1 },
        nvlink: NvlinkWish::Require,
        run: None,
        model: None,
        exception: None,
    };
    let placed = Placer::new(PolicySpec::default(), 1).place(&state, &job);
    if expect == "hgx" {
        assert_eq!(placed.expect("fits one NVLink island").replicas[0].devices.len(), 8);
    } else {
        assert!(placed.is_err(), "8 PCIe GPUs are no NVLink island");
    }
}
