//! Fuzzes the scheduler's submit path in-process: the input is up to eight submits separated by lines `%%`; the
//! first byte of each picks a request id (`0`–`3`: one of four, anything else: none) and the rest is the job YAML.
//! Each goes to `Scheduler::submit_yaml`, the handler the gRPC `Submit` calls, on the example cluster
//! (`examples/cluster.yaml`), one fresh scheduler per input.
//!
//! Checks: nothing panics, hangs or allocates without bound (e.g. `replicas: 4000000000`); a refusal is
//! INVALID_ARGUMENT, FAILED_PRECONDITION or ALREADY_EXISTS with a message naming the field (`job`, `request_id`);
//! an accepted job is placed or pending; a request id always answers the job it first created, and a different
//! job under it is ALREADY_EXISTS naming that job; afterwards (through the gRPC `List` handler) every placed job
//! holds all its replicas, no GPU is given more than 1000 milli, and ids are unique.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sovra_api::v1::ListRequest;
use sovra_api::v1::jobs_server::Jobs;
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_scheduler::service::Scheduler;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use tonic::Code;

const CLUSTER: &str = include_str!("../../examples/cluster.yaml");

fn scheduler() -> Scheduler {
    static CONFIG: OnceLock<ClusterConfig> = OnceLock::new();
    let cfg = CONFIG.get_or_init(|| ClusterConfig::from_yaml("cluster.yaml", CLUSTER).expect("example cluster"));
    Scheduler::new(cfg.clone(), PolicySpec::default(), 42, None).expect("scheduler")
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let s = scheduler();
    // Request id → the job it created.
    let mut requests: BTreeMap<String, u64> = BTreeMap::new();
    for chunk in text.split("\n%%\n").take(8) {
        let mut chars = chunk.chars();
        let request_id = match chars.next() {
            Some(c @ '0'..='3') => format!("r{c}"),
            _ => String::new(),
        };
        let yaml = chars.as_str();
        match s.submit_yaml(yaml, &request_id) {
            Ok(r) => {
                assert!(r.id >= 1);
                assert!(r.state == "placed" || r.state == "pending", "state {:?}", r.state);
                if !request_id.is_empty() {
                    let first = *requests.entry(request_id.clone()).or_insert(r.id);
                    assert_eq!(first, r.id, "request id {request_id} answered two jobs");
                }
            }
            Err(e) => {
                let m = e.message();
                match e.code() {
                    Code::InvalidArgument => {
                        assert!(m.starts_with("job") || m.starts_with("request_id: "), "{m}")
                    }
                    Code::FailedPrecondition => {
                        // A refused job is recorded too: its request id answers it from now on.
                        let id: Option<u64> = m.strip_prefix("job ").and_then(|r| r.split(' ').next()?.parse().ok());
                        let id = id.unwrap_or_else(|| panic!("a refusal that names no job: {m}"));
                        assert!(m.contains(&format!("job {id} refused: ")), "{m}");
                        if !request_id.is_empty() {
                            let first = *requests.entry(request_id.clone()).or_insert(id);
                            assert_eq!(first, id, "request id {request_id} answered two jobs");
                        }
                    }
                    Code::AlreadyExists => {
                        let first = requests.get(&request_id).expect("ALREADY_EXISTS for a request id never used");
                        assert!(m.contains(&format!("already used for job {first} with different content")), "{m}");
                    }
                    other => panic!("unexpected {other:?}: {m}"),
                }
            }
        }
    }
    let list = runtime()
        .block_on(Jobs::list(&s, tonic::Request::new(ListRequest::default())))
        .expect("list answers")
        .into_inner();
    let mut ids: Vec<u64> = list.jobs.iter().map(|j| j.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), list.jobs.len(), "ids are unique and in order");
    let mut per_device: BTreeMap<(String, u32), u32> = BTreeMap::new();
    for j in &list.jobs {
        if j.state == "placed" {
            assert!(!j.replicas.is_empty(), "job {} placed without replicas", j.id);
        }
        for r in &j.replicas {
            for d in &r.devices {
                let used = per_device.entry((r.node.clone(), *d)).or_default();
                *used += r.milli_per_device;
                assert!(*used <= 1000, "GPU {d} of {} given {used} milli", r.node);
            }
        }
    }
});
