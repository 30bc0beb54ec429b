//! The extender and the scheduler service decide alike (issue 12): for the same cluster, the same pods in the same
//! order and the default seed, the node the extender's prioritize verb ranks first (served over loopback HTTP, bound
//! through its bind verb) is the node the scheduler service's engine places the job on — for best-fit and for FGD
//! with the config's target workload. Before, the extender used seed 0 (42 elsewhere) and no FGD target.

mod common;

use common::{fixture, json, post, start};
use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_engine::{Engine, QueueSpec};
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, pod::pod_request, wire::ExtenderArgs};
use sovra_placement::DEFAULT_SEED;
use std::sync::Arc;

const NODES: [&str; 6] = ["gpu-fr-1", "gpu-fr-2", "gpu-fr-small", "gpu-fr-infer-1", "gpu-hyper-1", "gpu-nl-1"];

/// The fixture cluster with a declared FGD target mix (mostly single GPUs, some 2- and 4-GPU replicas).
fn cluster() -> ClusterConfig {
    let mut text = String::from_utf8(fixture("cluster.yaml")).unwrap();
    text.push_str(
        "scheduling:\n  fgd_target_workload:\n    \
         - {gpus: 1, cpu_milli: 8000, memory_mib: 16384, weight: 6}\n    \
         - {gpus: 2, cpu_milli: 16000, memory_mib: 32768, weight: 3}\n    \
         - {gpus: 4, cpu_milli: 32000, memory_mib: 65536, weight: 1}\n",
    );
    ClusterConfig::from_yaml("cluster.yaml", &text).unwrap()
}

/// A prioritize/filter body for pod `i`: `gpus` GPUs, residency class `class`, all six nodes offered.
fn request(i: usize, gpus: u32, class: &str) -> serde_json::Value {
    let mut req = json(&fixture("prioritize_cache_mode.json"));
    let pod = &mut req["Pod"];
    pod["metadata"]["name"] = format!("p-{i}").into();
    pod["metadata"]["uid"] = format!("uid-{i}").into();
    pod["metadata"]["labels"]["sovra.io/residency"] = class.into();
    let res = &mut pod["spec"]["containers"][0]["resources"];
    res["limits"]["nvidia.com/gpu"] = gpus.to_string().into();
    res["requests"]["nvidia.com/gpu"] = gpus.to_string().into();
    res["requests"]["cpu"] = (4 * gpus).to_string().into();
    req["NodeNames"] = serde_json::json!(NODES);
    req
}

#[tokio::test]
async fn extender_and_scheduler_choose_the_same_node() {
    let cfg = cluster();
    for policy in ["best-fit,topology", "fgd", "fgd=2,best-fit", "first-fit"] {
        let policy: PolicySpec = policy.parse().unwrap();
        let cache = Arc::new(Cache::new(cfg.clone()).unwrap());
        let ext = Arc::new(Extender::new(cache, policy.clone(), DEFAULT_SEED, Binder::DryRun));
        assert_eq!(ext.policy_and_seed(), (policy.clone(), DEFAULT_SEED));
        let (addr, _server) = start(ext).await;
        let mut engine: Option<Engine> = None;
        let mut compared = 0;
        for i in 0..24 {
            let gpus = [1, 2, 1, 4, 1, 1, 2, 1][i % 8];
            let class = if i % 3 == 2 { "eu-any" } else { "eu-restricted" };
            let req = request(i, gpus, class);
            let body = serde_json::to_vec(&req).unwrap();
            // The job as the extender reads the pod; the engine gets exactly that job.
            let args: ExtenderArgs = serde_json::from_slice(&body).unwrap();
            let job = pod_request(args.pod.as_ref().unwrap()).unwrap().job;
            let engine = engine.get_or_insert_with(|| {
                Engine::new(&cfg, vec![QueueSpec::new(&job.queue)], policy.clone(), DEFAULT_SEED).unwrap()
            });
            let id = engine.submit(job.clone(), None).unwrap();
            engine.schedule();
            let engine_node = engine.job(id).unwrap().placement.as_ref().map(|d| d.replicas[0].node_name.clone());

            post(addr, "/sovra/filter", body.clone()).await;
            let (s, b) = post(addr, "/sovra/prioritize", body).await;
            assert_eq!(s, 200);
            let scores = json(&b);
            let top: Vec<String> = scores
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h["Score"] == 10)
                .map(|h| h["Host"].as_str().unwrap().to_string())
                .collect();
            let ext_node = top.first().cloned();
            assert!(top.len() <= 1, "one best node: {top:?}");
            assert_eq!(ext_node, engine_node, "policy {policy}, pod {i} ({gpus} GPUs, {class})");
            if let Some(node) = &ext_node {
                let bind = serde_json::json!({"PodName": format!("p-{i}"), "PodNamespace": "ml",
                    "PodUID": format!("uid-{i}"), "Node": node});
                let (s, b) = post(addr, "/sovra/bind", serde_json::to_vec(&bind).unwrap()).await;
                assert_eq!((s, json(&b)), (200, serde_json::json!({"Error": ""})));
                compared += 1;
            } else {
                // The engine now holds a backfill reservation for the waiting job, which kube-scheduler (the
                // extender's queue) does not: from here on the queues differ, not the placement core.
                break;
            }
        }
        assert!(compared >= 10, "policy {policy}: only {compared} pods were placed, the test compares too little");
    }
}

#[test]
fn extender_default_seed_is_the_shared_default() {
    let o =
        std::process::Command::new(env!("CARGO_BIN_EXE_sovra-extender")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    let want = format!("[default: {DEFAULT_SEED}]");
    let seed_help = help.split("--seed").nth(1).unwrap_or_default();
    assert!(seed_help.split("--").next().unwrap_or_default().contains(&want), "{help}");
}
