//! The text tables of `sovra jobs | nodes | pools | queues | zones` (comfy-table) and the `-o json` of the API
//! messages (serde derives), against a scheduler service on loopback; and `sovra audit log`'s table.

use std::path::Path;
use std::process::{Command, Output};

const TOKEN: &str = "cli-tables-token";

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).display().to_string()
}

fn start_server() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let cluster = sovra_domain::ClusterConfig::load(Path::new(&example("cluster.yaml"))).unwrap();
            let s = sovra_scheduler::service::Scheduler::new(cluster, Default::default(), 42, None).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap())).unwrap();
            sovra_scheduler::service::serve(listener, s, TOKEN.into(), std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn sovra(server: &str, args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(args)
        .env("SOVRA_SERVER", server)
        .env("SOVRA_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Where each header word starts: (name, byte column).
fn header_columns<'a>(header: &'a str, names: &[&'a str]) -> Vec<(&'a str, usize)> {
    let mut from = 0;
    names
        .iter()
        .map(|n| {
            let at = from + header[from..].find(n).unwrap_or_else(|| panic!("no {n:?} in {header:?}"));
            from = at + n.len();
            (*n, at)
        })
        .collect()
}

#[test]
fn a_job_name_wider_than_its_column_does_not_shift_the_other_columns() {
    let server = start_server();
    let dir = tempfile::tempdir().unwrap();
    let long = "an-oncology-finetune-with-a-name-far-wider-than-twenty-four";
    let job = std::fs::read_to_string(example("job.yaml")).unwrap().replace("oncology-finetune", long);
    let file = dir.path().join("long.yaml");
    std::fs::write(&file, job).unwrap();
    sovra(&server, &["submit", file.to_str().unwrap()]);
    sovra(&server, &["submit", &example("job.yaml")]);

    let out = String::from_utf8(sovra(&server, &["jobs"]).stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two jobs:\n{out}");
    assert!(lines.iter().all(|l| l == &l.trim_end()), "no trailing blanks:\n{out}");
    let cols = header_columns(lines[0], &["name", "queue", "prio", "state", "nodes"]);
    for row in &lines[1..] {
        // Left-aligned text columns start where their header starts.
        for (name, at) in [cols[0], cols[1], cols[3], cols[4]] {
            assert_ne!(row.as_bytes()[at], b' ', "{name} starts at {at} in {row:?}:\n{out}");
            assert_eq!(row.as_bytes()[at - 1], b' ', "{name} starts at {at} in {row:?}:\n{out}");
        }
        // The right-aligned number ends where its header ends.
        let prio_end = cols[2].1 + "prio".len();
        assert_eq!(&row[prio_end - 3..prio_end], "100", "{row:?}:\n{out}");
    }
    assert!(lines[1].contains(long) && lines[1].contains(" default "), "{out}");
}

#[test]
fn every_remote_table_has_one_row_per_record_and_keeps_its_columns() {
    let server = start_server();
    let json = |args: &[&str]| -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_slice(&sovra(&server, &a).stdout).unwrap()
    };
    for (cmd, header, records) in [
        (
            "nodes",
            ["node", "pool", "zone", "ready", "GPUs", "healthy", "used GPU", "reported by"].as_slice(),
            json(&["nodes"]),
        ),
        ("pools", &["pool", "zone", "purpose", "nodes", "GPUs", "used"], json(&["pools"])),
        ("queues", &["queue", "weight", "pending", "running", "GPUs", "share", "quotas"], json(&["queues"])),
    ] {
        let out = String::from_utf8(sovra(&server, &[cmd]).stdout).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        header_columns(lines[0], header);
        // Under the nodes table, one line per unhealthy GPU or unreadable GPUs, naming the node.
        let problems: usize = records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["unhealthy"].as_array().map_or(0, Vec::len)
                    + usize::from(!r["gpu_error"].as_str().unwrap_or("").is_empty())
            })
            .sum();
        assert_eq!(lines.len(), 1 + records.as_array().unwrap().len() + problems, "{cmd}:\n{out}");
        if cmd == "nodes" {
            assert!(problems > 0 && out.contains("nl-ams-l4-0: unhealthy GPU 2: XID 79"), "{out}");
        }
        let first = records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.get("name").or_else(|| r.get("id")).and_then(|v| v.as_str()).unwrap().to_string());
        for (line, name) in lines[1..].iter().zip(first) {
            assert!(line.starts_with(&format!("{name} ")), "{cmd}: {line:?} starts with {name}:\n{out}");
        }
    }
    let zones = json(&["zones"]);
    let out = String::from_utf8(sovra(&server, &["zones"]).stdout).unwrap();
    let (z, c) = out.split_once("\n\n").unwrap();
    header_columns(z.lines().next().unwrap(), &["zone", "country", "jurisdiction", "operator", "HQ", "certifications"]);
    assert_eq!(z.lines().count(), 1 + zones["zones"].as_array().unwrap().len(), "{out}");
    header_columns(c.lines().next().unwrap(), &["residency class", "zones that satisfy it"]);
    assert_eq!(c.lines().count(), 1 + zones["residency_classes"].as_array().unwrap().len(), "{out}");
    // The JSON-in-text fields are embedded as JSON under the names the CLI always used.
    assert!(zones["residency_classes"][0]["rules"].is_object(), "{zones}");
    assert!(zones["residency_classes"][0].get("rules_json").is_none(), "{zones}");
}

#[test]
fn audit_log_text_is_a_table_whose_columns_line_up_with_their_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| dir.path().join(rel);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(repo.join("examples/promotion.yaml")).unwrap();
    std::fs::write(p("promotion.yaml"), config.replace("require_receipts: true", "require_receipts: false")).unwrap();
    std::fs::copy(repo.join("examples/cluster.yaml"), p("cluster.yaml")).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_sovra"))
            .current_dir(dir.path())
            .env("SOVRA_REGISTRY", p("registry"))
            .env("SOVRA_PROMOTION_CONFIG", p("promotion.yaml"))
            .env_remove("SOVRA_AUDIT_WITNESS")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    for k in ["trainer", "alice", "bob", "carol", "secops", "service", "scheduler"] {
        run(&["model", "keygen", &format!("keys/{k}")]);
    }
    std::fs::create_dir_all(p("model")).unwrap();
    std::fs::write(p("model/config.json"), b"{\"layers\": 2}\n").unwrap();
    std::fs::write(p("provenance.yaml"), "training_job: j1\ntraining_zone: fr-par-secnum\n").unwrap();
    std::fs::write(p("metrics.json"), "{\"accuracy\": 0.95, \"toxicity\": 0.01}").unwrap();
    run(&["model", "sign", "model", "--private-key", "keys/trainer.pem", "--signature", "model.sig"]);
    for name in ["radiology", "a-model-whose-name-is-far-wider-than-forty-characters-across"] {
        run(&[
            "model",
            "push",
            name,
            "model",
            "--signature",
            "model.sig",
            "--residency-class",
            "fr-health",
            "--provenance",
            "provenance.yaml",
            "--metrics",
            "metrics.json",
        ]);
    }
    let out = run(&["audit", "log"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 3, "a header and an entry per push:\n{out}");
    let cols = header_columns(lines[0], &["seq", "time", "event", "subject", "by"]);
    for row in &lines[1..] {
        for (name, at) in &cols[1..] {
            assert_ne!(row.as_bytes()[*at], b' ', "{name} starts at {at} in {row:?}:\n{out}");
            assert_eq!(row.as_bytes()[at - 1], b' ', "{name} starts at {at} in {row:?}:\n{out}");
        }
        assert!(row[cols[1].1..].starts_with("20"), "an RFC 3339 time: {row:?}");
    }
}
