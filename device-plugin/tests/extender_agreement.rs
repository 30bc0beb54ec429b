//! The plugin reads the annotations the scheduler extender writes at bind (scheduler/extender/src/assign.rs): the
//! same keys, and the share values the extender's tests record parse as shares here.

use sovra_domain::gpu_devices::{self, GPU_DEVICES_ANNOTATION, GPU_DEVICES_NODE_ANNOTATION, GpuDevices};

#[test]
fn the_extender_writes_the_keys_the_plugin_reads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let assign = std::fs::read_to_string(root.join("scheduler/extender/src/assign.rs")).unwrap();
    assert!(assign.contains(&format!("pub const DEVICES_ANNOTATION: &str = \"{GPU_DEVICES_ANNOTATION}\";")));
    assert!(assign.contains(&format!("pub const DEVICES_NODE_ANNOTATION: &str = \"{GPU_DEVICES_NODE_ANNOTATION}\";")));
    // Values the extender writes (its docs and tests): a share `index:milli`, whole GPUs ascending.
    assert_eq!(gpu_devices::parse("0:250"), Ok(GpuDevices::Share { gpu: 0, milli: 250 }));
    assert_eq!(gpu_devices::parse("0,1,2,3,4,5,6,7"), Ok(GpuDevices::Whole((0..8).collect())));
}
