//! Compiles the kubelet device plugin API (`proto/deviceplugin/v1beta1/api.proto`) with protox, a pure-Rust
//! protobuf compiler, so builds need no system `protoc`; tonic-prost-build writes the messages, the `Registration`
//! client and server (the tests play the kubelet) and the `DevicePlugin` client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["deviceplugin/v1beta1/api.proto"], ["proto"])?;
    // Maps as BTreeMap: an Allocate answer lists its environment in one order, every time.
    tonic_prost_build::configure().btree_map(".").compile_fds(fds)?;
    Ok(())
}
