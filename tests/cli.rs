//! Black-box tests of the `sovra` binary: what a user or a CI pipeline sees (stdout, stderr, exit code).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sovra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra")).args(args).output().expect("the sovra binary runs")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("sovra-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn file(&self, name: &str, contents: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).display().to_string()
}

#[test]
fn the_built_in_tour_places_and_refuses_as_documented() {
    let o = sovra(&["place"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "two jobs of the tour are refused by design\n{out}\n{err}");
    assert!(out.contains("6 of 8 job(s) placed"), "{out}");
    // Health data lands only in the French SecNumCloud + HDS zone.
    let onco = out.split("\noncology-finetune").nth(1).unwrap().split("\n\n").next().unwrap();
    assert_eq!(onco.matches("zone fr-par-secnum").count(), 2, "{onco}");
    // EU-restricted training never lands with the US-owned operator.
    let credit = out.split("\ncredit-risk-train").nth(1).unwrap().split("\n\n").next().unwrap();
    assert!(!credit.contains("de-fra-hyperscaler"), "{credit}");
    assert!(out.contains(
        "fails residency class eu-restricted: operator Hyperscale Inc. sovereign region is headquartered in US"
    ));
    // The German C5 job may use the US-owned C5 zone.
    assert!(out.contains("radiology-serve-h100 (inference, class fr-health)"));
    assert!(!err.contains("panicked"));
}

#[test]
fn json_output_is_machine_readable_and_respects_residency() {
    let o = sovra(&["place", "--config", &example("cluster.yaml"), "--job", &example("jobs.yaml"), "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON document");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    let zone_of_class = |class: &str, zone: &str| match class {
        "fr-health" => zone == "fr-par-secnum",
        "eu-restricted" => zone != "de-fra-hyperscaler",
        "de-c5" => zone.starts_with("de-"),
        _ => true,
    };
    let classes = [
        "fr-health",
        "fr-health",
        "fr-health",
        "eu-restricted",
        "de-c5",
        "fr-health",
        "eu-restricted",
        "eu-restricted",
    ];
    for (r, class) in results.iter().zip(classes) {
        if r["placed"].as_bool().unwrap() {
            for rep in r["decision"]["replicas"].as_array().unwrap() {
                let zone = rep["zone"].as_str().unwrap();
                assert!(zone_of_class(class, zone), "{} placed in {zone}", r["job"]);
            }
        } else {
            let e = &r["explanation"];
            assert!(e["summary"].as_str().unwrap().len() > 20);
            assert!(e["filters"].as_array().unwrap().iter().any(|f| f["rejected_nodes"].as_u64().unwrap() > 0));
        }
    }
    let refused: Vec<&str> =
        results.iter().filter(|r| !r["placed"].as_bool().unwrap()).map(|r| r["job"].as_str().unwrap()).collect();
    assert_eq!(refused, ["radiology-serve-h100", "foundation-pretrain"]);
}

#[test]
fn same_inputs_and_seed_give_the_same_output() {
    for policy in ["best-fit", "fgd", "random", "spread,topology"] {
        let a = sovra(&["place", "--policy", policy, "--seed", "7", "-o", "json"]);
        let b = sovra(&["place", "--policy", policy, "--seed", "7", "-o", "json"]);
        assert_eq!(a.stdout, b.stdout, "{policy}");
    }
}

#[test]
fn a_single_job_file_that_fits_exits_zero() {
    let s = Scratch::new("single");
    let job = s.file(
        "job.yaml",
        "name: small\nkind: inference\nresidency: eu-any\nresources: {gpus: 1, gpu_milli: 300, cpu_milli: 1000, memory_mib: 2048}\n",
    );
    let o = sovra(&["place", "--config", &example("cluster.yaml"), "--job", &job]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("replica 0 → "), "{out}");
}

#[test]
fn validate_reports_counts() {
    let o = sovra(&["validate", "--config", &example("cluster.yaml"), "--job", &example("jobs.yaml")]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(out.contains("4 zones, 8 pools, 4 residency classes, 39 nodes"), "{out}");
    assert!(out.contains("ok (8 job(s))"), "{out}");
}

/// Bad input: exit code 2, a message naming the file and the field, no panic, and nothing placed.
#[test]
fn bad_input_exits_2_with_file_and_field() {
    let s = Scratch::new("bad");
    let cluster = std::fs::read_to_string(example("cluster.yaml")).unwrap();
    let good_job =
        "name: j\nkind: training\nresidency: eu-any\nresources: {gpus: 1, cpu_milli: 1000, memory_mib: 1024}\n";
    let job = |res: &str| format!("name: j\nkind: training\nresidency: eu-any\nresources: {{{res}}}\n");
    // (cluster text, job text, expected stderr fragments)
    let cases: Vec<(String, String, Vec<&str>)> = vec![
        ("zones: [\n  {id: x\n".into(), good_job.into(), vec!["cluster.yaml:3:1: ", "did not find expected"]),
        (
            cluster.clone(),
            good_job.replace("eu-any", "us-anywhere"),
            vec!["job.yaml: residency: unknown residency class \"us-anywhere\""],
        ),
        (
            cluster.clone(),
            job("gpus: 1, gpu_milli: 1200, cpu_milli: 1, memory_mib: 1"),
            vec!["job.yaml: resources.gpu_milli: 1200 is out of range"],
        ),
        (
            cluster.clone(),
            job("gpus: 4, gpu_milli: 250, cpu_milli: 1, memory_mib: 1"),
            vec!["resources.gpu_milli: 250 with gpus 4"],
        ),
        (cluster.clone(), job("gpus: 1, cpu_milli: 0, memory_mib: 1"), vec!["resources.cpu_milli: 0 is too small"]),
        (cluster.clone(), job("gpus: -3, cpu_milli: 1, memory_mib: 1"), vec!["resources.gpus: -3 is negative"]),
        (
            cluster.replacen("pool: fr-par-infer\n    cpu_milli: 64000", "pool: atlantis\n    cpu_milli: 64000", 1),
            good_job.into(),
            vec!["cluster.yaml: nodes[1].pool: unknown pool \"atlantis\""],
        ),
        (cluster.clone(), "".into(), vec!["job.yaml: the file is empty"]),
    ];
    for (i, (c, j, want)) in cases.into_iter().enumerate() {
        let cf = s.file(&format!("cluster{i}.yaml"), &c);
        let jf = s.file(&format!("job{i}.yaml"), &j);
        let o = sovra(&["place", "--config", &cf, "--job", &jf]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "case {i}: {out}{err}");
        assert!(out.is_empty(), "case {i}: nothing is placed on bad input: {out}");
        assert!(!err.contains("panicked"), "case {i}: {err}");
        for w in want {
            let w = w.replace("cluster.yaml", &format!("cluster{i}.yaml")).replace("job.yaml", &format!("job{i}.yaml"));
            assert!(err.contains(&w), "case {i}: stderr should contain {w:?}:\n{err}");
        }
    }
    // Flags too.
    let o = sovra(&["place", "--policy", "fastest"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o)
            .1
            .contains("--policy: unknown scorer \"fastest\"; choose from best-fit, fgd, random, spread, topology, dot-product, gpu-packing, gpu-clustering, first-fit, adaptive-first-fit")
    );
    let o = sovra(&["place", "--config", "/does/not/exist.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("/does/not/exist.yaml: cannot read the file"));
}

#[test]
fn simulate_reports_policies_and_rejects_garbage() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/alibaba-gpu-v2023");
    let data = data.display().to_string();
    let o = sovra(&[
        "simulate",
        "--data",
        &data,
        "-p",
        "best-fit",
        "-p",
        "sovra",
        "--seeds",
        "42",
        "-o",
        "json",
        "--ceiling",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let policies = doc["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    let best = &policies[0]["summary"];
    let alloc = best["alloc_at_100"]["median"].as_f64().unwrap();
    let ceiling = best["ceiling_at_100"]["median"].as_f64().unwrap();
    assert!((90.0..97.0).contains(&alloc), "best-fit allocates ~93% at 100% arrived: {alloc}");
    assert!(ceiling > alloc && ceiling < 100.0, "the ceiling bounds it: {ceiling}");
    assert_eq!(best["published_alloc_at_100"].as_f64(), Some(92.91));
    // Without --ceiling no ceiling is computed; the published figures of the eight later files are found too.
    let o = sovra(&["simulate", "--data", &data, "-t", "cpu250", "-p", "fgd", "--seeds", "42", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let fgd = &doc["policies"][0]["summary"];
    assert!(fgd["ceiling_at_100"].is_null());
    assert_eq!(fgd["published_alloc_at_100"].as_f64(), Some(93.2));

    let s = Scratch::new("garbage");
    let bad =
        s.file("tasks.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,1024,1,500\np1,lots,1024,1,500\n");
    let o = sovra(&["simulate", "--data", &data, "-t", &bad, "--seeds", "42"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("tasks.csv:3:2: cpu_milli is \"lots\", not a whole number"), "{}", text(&o).1);
    let o = sovra(&["simulate", "--seeds", "9..1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn replay_and_plan_the_example_scenario() {
    let scenario = example("scenario.yaml");
    let o = sovra(&["replay", &scenario, "-o", "json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["residency_violations"], 0);
    assert_eq!(r["refused_by_stream"]["radiology-h100"], 10, "impossible jobs are refused, not queued");
    assert!(r["wait_minutes_by_stream"]["oncology-ft"]["p95"].as_f64().unwrap() > 30.0, "the health queue waits");

    let o = sovra(&["plan", &scenario, "-o", "json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    let counts: Vec<u64> = p["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    assert!(counts[0] > 0, "French H100 nodes must be added: {counts:?}");
    assert!(p["metric"].as_f64().unwrap() <= 30.0);
    let worse: Vec<u64> = counts.iter().enumerate().map(|(i, &c)| if i == 0 { c - 1 } else { c }).collect();
    let evals = p["evaluations"].as_array().unwrap();
    let miss = evals
        .iter()
        .find(|e| e["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect::<Vec<_>>() == worse);
    assert_eq!(miss.map(|e| e["meets"].as_bool().unwrap()), Some(false), "one H100 node fewer misses the target");

    let s = Scratch::new("badscenario");
    let f = s.file("s.yaml", "cluster: nowhere.yaml\nhorizon_hours: 1\nstreams: []\n");
    let o = sovra(&["replay", &f]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("nowhere.yaml: cannot read the file"), "{}", text(&o).1);
}
