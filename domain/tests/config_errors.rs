//! Bad configuration and job files: every problem names the file, the field path and what to do; nothing panics.

use sovra_domain::{ClusterConfig, jobs_from_yaml};

const GOOD: &str = r#"
zones:
  - {id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR, certifications: [HDS]}
pools:
  - {id: fr-train, zone: fr, purpose: training}
residency_classes:
  - {name: fr-health, countries: [FR], certifications: [HDS]}
nodes:
  - {name: n, pool: fr-train, cpu_milli: 64000, memory_mib: 65536, gpus: {model: H100, count: 8, memory_mib: 81920}}
"#;

fn cluster_err(yaml: &str) -> String {
    ClusterConfig::from_yaml("cluster.yaml", yaml).unwrap_err().to_string()
}

fn job_err(yaml: &str) -> String {
    jobs_from_yaml("job.yaml", yaml).unwrap_err().to_string()
}

#[test]
fn good_files_load() {
    let c = ClusterConfig::from_yaml("cluster.yaml", GOOD).unwrap();
    assert_eq!(c.nodes[0].gpus.len(), 8);
    let jobs = jobs_from_yaml(
        "job.yaml",
        "name: j\nkind: training\nresidency: fr-health\nresources: {gpus: 2, cpu_milli: 1, memory_mib: 1}\n",
    )
    .unwrap();
    assert_eq!(jobs[0].resources.gpu_milli, 1000);
    assert_eq!(jobs[0].nvlink, sovra_domain::NvlinkWish::Prefer, "2+ GPUs prefer one NVLink island by default");
    assert!(c.check_job(&jobs[0], "").is_empty());
}

#[test]
fn cluster_errors_table() {
    // (edit of the good file, expected message fragment)
    let cases = [
        (GOOD.replace("pools:", "pools: [\n"), "cluster.yaml:"),
        (
            GOOD.replace("pool: fr-train, cpu", "pool: fr-nope, cpu"),
            "cluster.yaml: nodes[0].pool: unknown pool \"fr-nope\"; declared pools are [fr-train]",
        ),
        (GOOD.replace("zone: fr,", "zone: de,"), "pools[0].zone: unknown zone \"de\""),
        (GOOD.replace("count: 8", "count: -2"), "nodes[0].gpus.count: -2 is negative; it must be at least 1"),
        (GOOD.replace("cpu_milli: 64000", "cpu_milli: 0"), "nodes[0].cpu_milli: 0 is too small; it must be at least 1"),
        (GOOD.replace("cpu_milli: 64000", "cpu_milli: lots"), "nodes[0].cpu_milli: invalid type: string \"lots\""),
        (
            GOOD.replace("country: FR, region", "country: France, region"),
            "zones[0].country: \"France\" is not an ISO 3166 alpha-2 code",
        ),
        (
            GOOD.replace("memory_mib: 81920}", "memory_mib: 81920, colour: red}"),
            "nodes[0].gpus: unknown field `colour`",
        ),
        (GOOD.replace("purpose: training", "purpose: gaming"), "pools[0].purpose: unknown variant `gaming`"),
        (GOOD.replace("countries: [FR]", "countries: []"), "residency_classes[0].countries: is an empty list"),
        (
            GOOD.replace("memory_mib: 81920}", "memory_mib: 81920, nvlink_islands: [[0, 1], [1, 9]]}"),
            "nodes[0].gpus.nvlink_islands[1][0]: GPU 1 is in two islands",
        ),
        (
            format!("{GOOD}  - {{name: n, pool: fr-train, cpu_milli: 1, memory_mib: 1}}\n"),
            "nodes: node name \"n\" appears 2 times",
        ),
        (format!("{GOOD}scheduling: {{policy: fastest}}\n"), "scheduling.policy: unknown scorer \"fastest\""),
        ("".to_string(), "cluster.yaml: the file is empty"),
    ];
    for (yaml, want) in cases {
        let e = cluster_err(&yaml);
        assert!(e.contains(want), "got:\n{e}\nwant: {want}");
        assert!(e.starts_with("cluster.yaml"), "{e}");
    }
}

#[test]
fn a_missing_field_is_named_once() {
    let e = cluster_err(&GOOD.replace("operator: o, ", ""));
    assert!(e.contains("cluster.yaml:3:5: zones[0]: missing field `operator`"), "{e}");
    assert_eq!(e.matches("zones[0]").count(), 1, "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = GOOD.replace("pool: fr-train, cpu_milli: 64000", "pool: x, cpu_milli: -1");
    let e = ClusterConfig::from_yaml("c.yaml", &yaml).unwrap_err();
    assert_eq!(e.problems.len(), 2, "{e}");
}

#[test]
fn malformed_yaml_has_a_location() {
    let e = ClusterConfig::from_yaml("c.yaml", "zones: [\n  {id: a\n").unwrap_err();
    assert!(e.problems[0].location.is_some(), "{e}");
    assert!(e.to_string().starts_with("c.yaml:"), "{e}");
}

#[test]
fn job_errors_table() {
    let job = |res: &str| format!("name: j\nkind: training\nresidency: fr-health\nresources: {{{res}}}\n");
    let cases = [
        (
            job("gpus: 1, gpu_milli: 1500, cpu_milli: 1, memory_mib: 1"),
            "resources.gpu_milli: 1500 is out of range; a GPU has 1000 milli, so use 1 to 1000",
        ),
        (
            job("gpus: 2, gpu_milli: 500, cpu_milli: 1, memory_mib: 1"),
            "resources.gpu_milli: 500 with gpus 2: only a single GPU can be shared",
        ),
        (job("gpus: -1, cpu_milli: 1, memory_mib: 1"), "resources.gpus: -1 is negative"),
        (job("gpus: 1, cpu_milli: 0, memory_mib: 1"), "resources.cpu_milli: 0 is too small"),
        (job("gpus: 1, cpu_milli: 1, memory_mib: -5"), "resources.memory_mib: -5 is negative"),
        (job("gpus: 1, gpu_milli: 0, cpu_milli: 1, memory_mib: 1"), "resources.gpu_milli: 0 is out of range"),
        (job("gpus: 0, gpu_milli: 300, cpu_milli: 1, memory_mib: 1"), "resources.gpu_milli: is 300 but gpus is 0"),
        (job("gpus: 1, cpu_milli: 1"), "missing field `memory_mib`"),
        (job("gpus: 1, cpu_milli: 1, memory_mib: 1, gpu_mili: 5"), "unknown field `gpu_mili`"),
        (
            "name: j\nkind: training\nresidency: fr-health\nreplicas: 0\nresources: {gpus: 1, cpu_milli: 1, memory_mib: 1}\n"
                .into(),
            "replicas: 0 is too small",
        ),
        (
            "name: j\nkind: training\nresidency: fr-health\nresources: {gpus: 1, cpu_milli: 1, memory_mib: 1}\ntopology: {nvlink: require}\n"
                .into(),
            "topology.nvlink: an NVLink wish needs gpus of 2 or more",
        ),
        ("jobs: []\n".into(), "job.yaml: jobs: the list is empty"),
        (
            "jobs:\n  - {name: a, kind: training, residency: r, resources: {gpus: 9, gpu_milli: 10, cpu_milli: 1, memory_mib: 1}}\n"
                .into(),
            "jobs[0].resources.gpu_milli",
        ),
        ("- just\n- a list\n".into(), "job.yaml"),
    ];
    for (yaml, want) in cases {
        let e = job_err(&yaml);
        assert!(e.contains(want), "got:\n{e}\nwant: {want}");
    }
}

#[test]
fn unknown_residency_class_is_a_problem_of_the_job() {
    let c = ClusterConfig::from_yaml("cluster.yaml", GOOD).unwrap();
    let jobs = jobs_from_yaml(
        "job.yaml",
        "name: j\nkind: training\nresidency: us-anywhere\nresources: {gpus: 1, cpu_milli: 1, memory_mib: 1}\n",
    )
    .unwrap();
    let p = c.check_job(&jobs[0], "");
    assert_eq!(p[0].field, "residency");
    assert!(p[0].message.contains("unknown residency class \"us-anywhere\"; the cluster defines [fr-health]"));
}

const RUN_JOB: &str =
    "name: j\nkind: training\nresidency: fr-health\nresources: {gpus: 1, cpu_milli: 1, memory_mib: 1}\n";

#[test]
fn a_run_section_is_read_with_its_defaults() {
    let yaml = format!(
        "{RUN_JOB}run:\n  command: python3\n  args: [train.py]\n  env: {{HF_HOME: /data}}\n  workdir: /data\n  \
         user: trainer\n  walltime: 2h\n  grace: 45\n  restart: {{policy: on-failure}}\n"
    );
    let job = &jobs_from_yaml("job.yaml", &yaml).unwrap()[0];
    let run = job.run.as_deref().unwrap();
    assert_eq!((run.command.as_str(), run.args.as_slice()), ("python3", ["train.py".to_string()].as_slice()));
    assert_eq!((run.walltime_s, run.grace_s), (Some(7200), 45));
    assert_eq!((run.restart, run.max_restarts), (sovra_domain::RestartPolicy::OnFailure, 3));
    let plain = &jobs_from_yaml("job.yaml", &format!("{RUN_JOB}run: {{command: /bin/true}}\n")).unwrap()[0];
    let run = plain.run.as_deref().unwrap();
    assert_eq!((run.walltime_s, run.grace_s, run.max_restarts), (None, 30, 0), "no walltime, 30 s grace, no restarts");
    assert!(jobs_from_yaml("job.yaml", RUN_JOB).unwrap()[0].run.is_none());
}

#[test]
fn run_section_errors_table() {
    for (run, fragment) in [
        ("{command: ''}", "run.command"),
        ("{command: x, walltime: 0}", "run.walltime: is 0"),
        ("{command: x, walltime: -5}", "run.walltime: -5 is negative"),
        ("{command: x, walltime: soon}", "run.walltime"),
        ("{command: x, grace: 2h}", "run.grace: 7200 s is over the limit"),
        ("{command: x, env: {CUDA_VISIBLE_DEVICES: '0'}}", "run.env.CUDA_VISIBLE_DEVICES"),
        ("{command: x, env: {SOVRA_JOB_ID: '1'}}", "run.env.SOVRA_JOB_ID"),
        ("{command: x, workdir: data}", "run.workdir: \"data\" is relative"),
        ("{command: x, user: 'a b'}", "run.user"),
        ("{command: x, restart: {policy: on-failure, max: 101}}", "run.restart.max: 101 is out of range"),
        ("{command: x, restart: {policy: never, max: 2}}", "run.restart.max: is 2 but the policy is never"),
        ("{command: x, restart: {policy: always}}", "always"),
        ("{command: x, shell: bash}", "shell"),
    ] {
        let e = job_err(&format!("{RUN_JOB}run: {run}\n"));
        assert!(e.contains("job.yaml") && e.contains(fragment), "{run}: {e}");
    }
}

#[test]
fn a_grace_period_over_the_clusters_maximum_is_refused_naming_both() {
    let c = ClusterConfig::from_yaml("cluster.yaml", &format!("{GOOD}scheduling: {{max_grace: 60s}}\n")).unwrap();
    let job = &jobs_from_yaml("job.yaml", &format!("{RUN_JOB}run: {{command: x, grace: 90s}}\n")).unwrap()[0];
    let problems: Vec<String> = c.check_job(job, "").iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
    let problems = problems.join("; ");
    assert!(problems.contains("run.grace") && problems.contains("60"), "{problems}");
    let ok = &jobs_from_yaml("job.yaml", &format!("{RUN_JOB}run: {{command: x, grace: 60s}}\n")).unwrap()[0];
    assert!(c.check_job(ok, "").is_empty());
}
