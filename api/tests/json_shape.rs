//! The JSON that `sovra … -o json` prints comes from the serde derives on the generated messages: field names,
//! JSON-in-text fields written as JSON, sorted map keys.

use sovra_api::v1::{ClassInfo, JobInfo, QueueInfo, Replica};

#[test]
fn job_json_keeps_the_cli_field_names_and_embeds_the_explanation() {
    let job = JobInfo {
        id: 7,
        name: "train".into(),
        queue: "research".into(),
        priority: 50,
        residency: "eu".into(),
        state: "pending".into(),
        replicas: vec![Replica {
            node: "n1".into(),
            pool: "p".into(),
            zone: "z".into(),
            devices: vec![0, 1],
            milli_per_device: 1000,
        }],
        explanation_json: r#"{"filters":[{"filter":"residency","rejected_nodes":3}]}"#.into(),
        explanation_summary: "no room now".into(),
        preemptions: 1,
        revision: 3,
        blockers_json: r#"[{"blocker":"position","queue":"research","position":2,"pending":3}]"#.into(),
        preemption_records_json: r#"[{"victim":7,"by":9}]"#.into(),
        ended_reason: String::new(),
        runs: vec![sovra_api::v1::ReplicaStatus { job: 7, state: "running".into(), ..Default::default() }],
        model: "radiology@3f9c2a1b".into(),
        exception_json: String::new(),
    };
    let v = serde_json::to_value(&job).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "blockers",
            "ended_reason",
            "exception",
            "explanation",
            "explanation_summary",
            "id",
            "model",
            "name",
            "preemption_records",
            "preemptions",
            "priority",
            "queue",
            "replicas",
            "residency",
            "revision",
            "runs",
            "state"
        ]
    );
    assert_eq!(v["explanation"]["filters"][0]["rejected_nodes"], 3);
    assert_eq!(v["blockers"][0]["position"], 2);
    assert_eq!(v["preemption_records"][0]["by"], 9);
    assert!(v["exception"].is_null(), "no exception: null");
    assert_eq!(v["replicas"][0]["devices"], serde_json::json!([0, 1]));
    assert_eq!(v["replicas"][0]["milli_per_device"], 1000);
    assert_eq!(v["runs"][0]["state"], "running");
    assert_eq!(v["model"], "radiology@3f9c2a1b");
}

#[test]
fn text_that_is_not_json_is_written_as_null_not_as_a_string() {
    let job = JobInfo { explanation_json: String::new(), ..Default::default() };
    assert_eq!(serde_json::to_value(&job).unwrap()["explanation"], serde_json::Value::Null);
    let class = ClassInfo { name: "eu".into(), rules_json: "{not json".into(), zones: vec!["z".into()] };
    let v = serde_json::to_value(&class).unwrap();
    assert_eq!(v, serde_json::json!({"name": "eu", "rules": null, "zones": ["z"]}));
}

#[test]
fn quota_map_keys_come_out_sorted_whatever_the_hash_order() {
    let q = QueueInfo {
        name: "q".into(),
        quota_milli: [("zz", 1), ("aa", 2), ("mm", 3)].into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Default::default()
    };
    let text = serde_json::to_value(&q).unwrap()["quota_milli"].to_string();
    assert_eq!(text, r#"{"aa":2,"mm":3,"zz":1}"#);
}
