//! Compiles the protobuf API with protox (a pure-Rust protobuf compiler): builds need no system `protoc`.
//!
//! The messages the `sovra` CLI prints with `-o json` derive `serde::Serialize`, so their JSON is the messages'
//! own fields (proto names). The API has no enums, so no field needs a number-to-name mapping; the fields that
//! carry JSON as text (`explanation_json`, `blockers_json`, `preemption_records_json`, `exception_json`, `rules_json`) are written as
//! the JSON they hold, under the names without `_json` (`explanation`, `blockers`, `preemption_records`, `rules`).

/// The messages `sovra … -o json` prints.
const PRINTED: [&str; 10] = [
    "JobInfo",
    "Replica",
    "ReplicaStatus",
    "NodeInfo",
    "PoolInfo",
    "QueueInfo",
    "ZoneInfo",
    "ClassInfo",
    "ReloadResponse",
    "EventsResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["sovra/v1/scheduler.proto", "sovra/v1/promotion.proto"], ["proto"])?;
    let mut config = tonic_prost_build::configure();
    for m in PRINTED {
        config = config.type_attribute(format!(".sovra.v1.{m}"), "#[derive(serde::Serialize)]");
    }
    config
        .field_attribute(
            ".sovra.v1.JobInfo.explanation_json",
            r#"#[serde(rename = "explanation", serialize_with = "crate::json_text")]"#,
        )
        .field_attribute(
            ".sovra.v1.JobInfo.blockers_json",
            r#"#[serde(rename = "blockers", serialize_with = "crate::json_text")]"#,
        )
        .field_attribute(
            ".sovra.v1.JobInfo.preemption_records_json",
            r#"#[serde(rename = "preemption_records", serialize_with = "crate::json_text")]"#,
        )
        .field_attribute(
            ".sovra.v1.JobInfo.exception_json",
            r#"#[serde(rename = "exception", serialize_with = "crate::json_text")]"#,
        )
        .field_attribute(
            ".sovra.v1.ClassInfo.rules_json",
            r#"#[serde(rename = "rules", serialize_with = "crate::json_text")]"#,
        )
        .compile_fds(fds)?;
    Ok(())
}
