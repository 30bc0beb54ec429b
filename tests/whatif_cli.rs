//! `sovra plan --what-if`: the example cluster when fr-par-secnum loses HDS (every fr-health job and model version
//! is left without a compliant home), a class tightening with a zone down (one job re-homed, one short of capacity
//! with the GPUs to add), and bad change files refused naming the field.

use serde_json::Value;
use std::process::Command;

fn sovra(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_sovra")).args(args).output().unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.code().unwrap_or(-1), s(&o.stdout), s(&o.stderr))
}

fn example(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).display().to_string()
}

const MODELS: &str = r#"[{"model": "radiology", "digest": "3f9c2a1b00112233", "residency_class": "fr-health",
  "locations": [{"zone": "fr-par-secnum", "stage": "training", "since": 1, "promotion": null},
                {"zone": "fr-par-secnum", "stage": "inference", "since": 2, "promotion": 1}]},
 {"model": "chat", "digest": "aaaa0000bbbb1111", "residency_class": "eu-any",
  "locations": [{"zone": "de-fra-c5", "stage": "inference", "since": 2, "promotion": 3}]}]"#;

#[test]
fn losing_hds_strands_every_fr_health_job_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models.json");
    std::fs::write(&models, MODELS).unwrap();
    let (code, out, err) =
        sovra(&["plan", "--what-if", &example("what-if.yaml"), "--models", models.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{out}");
    assert!(jobs.iter().all(|j| j["class"] == "fr-health" && j["outcome"] == "no compliant home"), "{out}");
    assert!(jobs.iter().all(|j| j["why"][0].as_str().unwrap().contains("lacks certification HDS")), "{out}");
    let m = r["models"].as_array().unwrap();
    assert_eq!(m.len(), 1, "only the fr-health version's inference data zone (training is not checked): {out}");
    assert_eq!(m[0]["data_zone"], "fr-par-secnum/inference");
    assert_eq!(m[0]["compliant_home_left"], false);
    assert_eq!(r["gpus_to_add"]["fr-health"][0], 9.5, "8 + 0.5 + 1 GPUs: {out}");
    let (code, text, _) = sovra(&["plan", "--what-if", &example("what-if.yaml")]);
    assert_eq!(code, 0);
    assert!(text.contains("a new compliant zone is needed"), "{text}");
}

#[test]
fn a_tighter_class_and_a_zone_down_rehome_or_ask_for_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("change.yaml");
    std::fs::write(
        &f,
        "changes:\n  - {class: eu-restricted, countries: [FR]}\n  - {zone: nl-ams-general, down: true}\n",
    )
    .unwrap();
    let (code, out, err) = sovra(&["plan", "--what-if", f.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let by = |name: &str| r["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).cloned().unwrap();
    assert_eq!(by("chatbot-serve")["outcome"], "re-homed in fr-par-secnum", "{out}");
    assert_eq!(by("credit-risk-train")["outcome"], "short of capacity", "{out}");
    assert_eq!(r["gpus_to_add"]["eu-restricted"][0], 16.0);
    assert_eq!(r["gpus_to_add"]["eu-restricted"][1][0], "fr-par-secnum");
}

#[test]
fn bad_change_files_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        ("changes:\n  - {zone: nowhere, down: true}\n", "changes[0].zone`: no zone `nowhere`"),
        ("changes:\n  - {zone: de-fra-c5, countries: [FR]}\n", "changes[0].zone`: countries"),
        ("changes:\n  - {class: fr-health, down: true}\n", "changes[0].class`: lose_certifications"),
        ("changes:\n  - {zone: de-fra-c5}\n", "changes[0]`: it changes nothing"),
        ("changes:\n  - {zone: de-fra-c5, loses: [C5]}\n", "unknown field `loses`"),
        ("changes: []\n", "list at least one change"),
        ("changes:\n  - {down: true}\n", "exactly one `zone` or `class`"),
    ] {
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, text).unwrap();
        let (code, _, err) = sovra(&["plan", "--what-if", f.to_str().unwrap()]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(want), "{text}: {err}");
    }
}
