//! Sovra's gRPC API (`proto/sovra/v1/*.proto`): messages, tonic clients and servers, generated at build time by
//! protox + tonic-prost-build (no `protoc` needed).

/// Version 1 of the API.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("sovra.v1");
}

/// Writes a string field that holds JSON text (`JobInfo.explanation_json`, `ClassInfo.rules_json`) as the JSON it
/// holds, or `null` when it holds none (empty or not JSON), for the messages' `serde::Serialize`.
pub fn json_text<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => serde::Serialize::serialize(&v, s),
        Err(_) => s.serialize_none(),
    }
}
