//! Fuzzes the Kubernetes extender's request decoder and verbs: the first byte picks the verb (filter, prioritize,
//! preempt, bind), the rest is the HTTP body. Decoding never panics and a refusal says which request it could not
//! decode; a decoded request is answered without panicking, and the answer keeps the protocol's rules: filter
//! names only nodes it was asked about (passing ones in input order, each node in one outcome) and its fast
//! encoding equals serde's, prioritize scores every candidate in 0..=10, preempt answers nodes it was offered, each
//! with at least one victim offered there.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_extender::extender::{Binder, Extender, candidate_names};
use sovra_extender::{Cache, wire};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

const CLUSTER: &str = include_str!("../../scheduler/extender/tests/fixtures/cluster.yaml");

fn extender() -> Extender {
    static CONFIG: OnceLock<ClusterConfig> = OnceLock::new();
    let cfg = CONFIG.get_or_init(|| ClusterConfig::from_yaml("cluster.yaml", CLUSTER).expect("fixture cluster"));
    Extender::new(Arc::new(Cache::new(cfg.clone()).expect("cache")), PolicySpec::default(), 0, Binder::DryRun)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

fn refused(e: wire::DecodeError, verb: &str) {
    let text = e.to_string();
    assert!(text.starts_with(&format!("cannot decode the {verb} request")), "{text}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&verb, body)) = data.split_first() else { return };
    let ext = extender();
    match verb % 4 {
        0 => match wire::decode_args("filter", body) {
            Err(e) => refused(e, "filter"),
            Ok(args) => {
                let input = candidate_names(&args);
                let out = ext.filter(&args);
                let encoded = serde_json::to_vec(&out).expect("filter answer encodes");
                assert_eq!(wire::encode_filter_result(&out), encoded, "fast encoding differs from serde's");
                let asked: BTreeSet<&str> = input.iter().copied().collect();
                let mut outcome: BTreeMap<String, u32> = BTreeMap::new();
                let passed: Vec<String> = match (&out.node_names, &out.nodes) {
                    (Some(n), None) => n.iter().map(|s| s.to_string()).collect(),
                    (None, Some(list)) => {
                        assert!(args.node_names.is_none(), "Nodes answered to a NodeNames request");
                        let names: Vec<String> = list
                            .items
                            .iter()
                            .map(|raw| {
                                let h: wire::NodeHeader = serde_json::from_str(raw.get()).expect("echoed node");
                                h.metadata.name
                            })
                            .collect();
                        names
                    }
                    (None, None) => {
                        assert!(args.pod.is_none() && !out.error.is_empty(), "no answer without an error");
                        vec![]
                    }
                    (Some(_), Some(_)) => panic!("both NodeNames and Nodes answered"),
                };
                // Passing names keep the input order.
                let mut at = 0;
                for p in &passed {
                    let pos =
                        input[at..].iter().position(|n| n == p).expect("passing node not asked about, or reordered");
                    at += pos + 1;
                }
                for n in passed
                    .iter()
                    .map(String::as_str)
                    .chain(out.failed_nodes.keys())
                    .chain(out.failed_and_unresolvable_nodes.keys())
                {
                    assert!(asked.contains(n), "answered about node {n} it was not asked about");
                    *outcome.entry(n.to_string()).or_default() += 1;
                }
                let dup_input = input.len() != asked.len();
                if !dup_input {
                    assert!(outcome.values().all(|&c| c == 1), "a node in two outcomes: {outcome:?}");
                }
                for r in out.failed_nodes.values().chain(out.failed_and_unresolvable_nodes.values()) {
                    assert!(!r.is_empty(), "a failure without a reason");
                }
            }
        },
        1 => match wire::decode_args("prioritize", body) {
            Err(e) => refused(e, "prioritize"),
            Ok(args) => {
                let input = candidate_names(&args);
                let out = ext.prioritize(&args);
                assert_eq!(out.len(), input.len(), "one score per candidate");
                for (h, n) in out.iter().zip(&input) {
                    assert_eq!(h.host, *n);
                    assert!((0..=10).contains(&h.score), "score {}", h.score);
                }
                assert!(out.iter().filter(|h| h.score == 10).count() <= input.len());
            }
        },
        2 => match wire::decode_preemption(body) {
            Err(e) => refused(e, "preempt"),
            Ok(args) => {
                let out = ext.preempt(&args);
                let offered: BTreeMap<String, BTreeSet<String>> =
                    match (&args.node_name_to_meta_victims, &args.node_name_to_victims) {
                        (Some(m), _) => m
                            .iter()
                            .map(|(n, v)| {
                                let uids =
                                    v.iter().flat_map(|v| v.pods.iter().flatten().map(|p| p.uid.clone())).collect();
                                (n.clone(), uids)
                            })
                            .collect(),
                        (None, Some(f)) => f
                            .iter()
                            .map(|(n, v)| {
                                let uids = v
                                    .iter()
                                    .flat_map(|v| v.pods.iter().flatten().map(|p| p.metadata.uid.clone()))
                                    .collect();
                                (n.clone(), uids)
                            })
                            .collect(),
                        (None, None) => BTreeMap::new(),
                    };
                for (node, v) in &out.node_name_to_meta_victims {
                    let allowed = offered.get(node).expect("a node that was not offered");
                    assert!(!v.pods.is_empty(), "node {node} without victims");
                    for p in &v.pods {
                        assert!(allowed.contains(&p.uid), "victim {} not offered on {node}", p.uid);
                    }
                }
            }
        },
        _ => match wire::decode_binding(body) {
            Err(e) => refused(e, "bind"),
            Ok(args) => {
                let out = runtime().block_on(ext.bind(&args));
                if args.pod_name.is_empty() || args.node.is_empty() {
                    assert!(!out.error.is_empty(), "bind without a pod or node accepted");
                }
            }
        },
    }
});
