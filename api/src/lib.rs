//! Sovra's gRPC API (`proto/sovra/v1/*.proto`): messages, tonic clients and servers, generated at build time by
//! protox + tonic-prost-build (no `protoc` needed).

/// Version 1 of the API.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("sovra.v1");
}
