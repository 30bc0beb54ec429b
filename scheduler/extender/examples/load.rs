//! Load test of the extender over loopback HTTP, as kube-scheduler drives it with `nodeCacheCapable: true`: per
//! pod, one filter call with every node's name, then one prioritize call with the nodes that passed.
//!
//! ```sh
//! cargo run --release -p sovra-extender --example load -- --nodes 5000 --seconds 20 --concurrency 2
//! cargo run --release -p sovra-extender --example load -- --nodes 5000 --candidates 500   # a 10% sample
//! ```
//!
//! Options: `--nodes N` (cluster size), `--candidates N` (names per filter; default all), `--concurrency N`
//! (clients, one connection each), `--server-threads N`, `--seconds S` (measured, after 2 s of warm-up),
//! `--pods N` (distinct pods cycled through). `SOVRA_PROFILE=1` first prints where one filter call's time goes.
//!
//! The server runs in this process on its own runtime (`--server-threads`) and listens on 127.0.0.1; the clients
//! keep one HTTP/1.1 connection each. Pods come from `sovra_placement::synth::jobs` (GPU shares, 1–8 GPUs, five
//! residency classes) on `synth::cluster(nodes)`. Nothing is bound, so every pod sees the same cluster.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sovra_domain::{Job, PolicySpec};
use sovra_extender::extender::{Binder, Extender};
use sovra_extender::{Cache, server};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    nodes: usize,
    seconds: f64,
    concurrency: usize,
    server_threads: usize,
    pods: usize,
    candidates: Option<usize>,
}

fn args() -> Args {
    let mut a = Args { nodes: 5000, seconds: 20.0, concurrency: 1, server_threads: 2, pods: 2000, candidates: None };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--nodes" => a.nodes = v.parse().expect("--nodes N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds S"),
            "--concurrency" => a.concurrency = v.parse().expect("--concurrency N"),
            "--server-threads" => a.server_threads = v.parse().expect("--server-threads N"),
            "--pods" => a.pods = v.parse().expect("--pods N"),
            "--candidates" => a.candidates = Some(v.parse().expect("--candidates N")),
            other => panic!("unknown argument {other}; see the example's documentation"),
        }
        i += 2;
    }
    a
}

/// A pod as kube-scheduler would send it for `job`.
fn pod_json(i: usize, job: &Job) -> serde_json::Value {
    let r = &job.resources;
    let mut requests = serde_json::Map::new();
    requests.insert("cpu".into(), format!("{}m", r.cpu_milli).into());
    requests.insert("memory".into(), format!("{}Mi", r.memory_mib).into());
    if r.is_sharing() {
        requests.insert("sovra.io/gpu-milli".into(), r.gpu_milli.to_string().into());
    } else if r.gpus > 0 {
        requests.insert("nvidia.com/gpu".into(), r.gpus.to_string().into());
    }
    let mut annotations = serde_json::Map::new();
    if !r.gpu_models.is_empty() {
        annotations.insert("sovra.io/gpu-models".into(), r.gpu_models.join(",").into());
    }
    serde_json::json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "load", "uid": format!("uid-{i}"),
            "creationTimestamp": null,
            "labels": {"sovra.io/residency": job.residency, "sovra.io/kind": job.kind.to_string()},
            "annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": "trainer:1", "resources": {"requests": requests}}],
                 "schedulerName": "sovra-scheduler", "priority": 0},
        "status": {"phase": "Pending"}
    })
}

/// The `NodeNames` of a filter answer as raw JSON and their number, read without decoding the (large) failure maps
/// that follow: the client's work is not what is measured (kube-scheduler runs on another machine).
fn node_names(out: &[u8]) -> (&[u8], usize) {
    let key = b"\"NodeNames\":";
    let at = out.windows(key.len()).position(|w| w == key).expect("NodeNames in the answer") + key.len();
    let mut values = serde_json::Deserializer::from_slice(&out[at..]).into_iter::<Option<Vec<&str>>>();
    let n = values.next().expect("a value").expect("NodeNames decodes").map_or(0, |v| v.len());
    (&out[at..at + values.byte_offset()], n)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

fn main() {
    let a = args();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cfg = sovra_placement::synth::cluster(a.nodes, 1);
    let names: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
    // `--candidates N`: each pod's filter gets N names, a different window of the node list per pod (as
    // kube-scheduler sends a sample of the feasible nodes when percentageOfNodesToScore is below 100).
    let window = |i: usize| -> Vec<&String> {
        match a.candidates {
            None => names.iter().collect(),
            Some(n) => names.iter().cycle().skip(i * 7919 % names.len()).take(n.min(names.len())).collect(),
        }
    };
    let jobs = sovra_placement::synth::jobs(a.pods, 2);
    let gpu_jobs: Vec<&Job> = jobs.iter().filter(|j| j.resources.gpus > 0).collect();
    // Filter bodies, prepared up front (kube-scheduler's encoding work is not the extender's).
    let bodies: Vec<(Vec<u8>, Bytes)> = gpu_jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let pod = pod_json(i, j);
            let body = serde_json::json!({"Pod": pod, "Nodes": null, "NodeNames": window(i)});
            (serde_json::to_vec(&pod).unwrap(), Bytes::from(serde_json::to_vec(&body).unwrap()))
        })
        .collect();
    let bodies = Arc::new(bodies);

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.server_threads)
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let cache = Arc::new(Cache::new(cfg).unwrap());
    let ext = Arc::new(Extender::new(cache, PolicySpec::default(), 0, Binder::DryRun));
    if std::env::var_os("SOVRA_PROFILE").is_some() {
        for (_, body) in bodies.iter().take(5) {
            profile(&ext, body);
        }
    }
    let addr = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = server::serve(listener, server::router(ext, "/sovra", server::DEFAULT_MAX_BODY), None).unwrap();
        let addr = running.local_addr;
        std::mem::forget(running);
        addr
    });

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.concurrency.clamp(1, 4))
        .thread_name("client")
        .enable_all()
        .build()
        .unwrap();
    let deadline = Duration::from_secs_f64(a.seconds);
    let warmup = Duration::from_secs(2);
    let results = client_rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..a.concurrency {
            let bodies = bodies.clone();
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                let mut call = async |path: &str, body: Bytes| -> Vec<u8> {
                    let req = hyper::Request::post(path)
                        .header("host", "127.0.0.1")
                        .header("content-type", "application/json")
                        .body(Full::new(body))
                        .unwrap();
                    let resp = send.send_request(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.into_body().collect().await.unwrap().to_bytes().to_vec()
                };
                let (mut cycle, mut filter, mut prio) = (Vec::new(), Vec::new(), Vec::new());
                let mut passed_total = 0usize;
                let start = Instant::now();
                let mut i = w;
                loop {
                    let now = start.elapsed();
                    if now > warmup + deadline {
                        break;
                    }
                    let measuring = now > warmup;
                    let (pod, body) = &bodies[i % bodies.len()];
                    i += a.concurrency;
                    let t0 = Instant::now();
                    let out = call("/sovra/filter", body.clone()).await;
                    let t1 = Instant::now();
                    let (passed, n) = node_names(&out);
                    // kube-scheduler skips prioritize when one node or none is left.
                    let t2 = Instant::now();
                    if n > 1 {
                        let mut p = Vec::with_capacity(pod.len() + passed.len() + 48);
                        p.extend_from_slice(b"{\"Pod\":");
                        p.extend_from_slice(pod);
                        p.extend_from_slice(b",\"Nodes\":null,\"NodeNames\":");
                        p.extend_from_slice(passed);
                        p.push(b'}');
                        let out = call("/sovra/prioritize", Bytes::from(p)).await;
                        assert!(out.starts_with(b"["));
                    }
                    let t3 = Instant::now();
                    if measuring {
                        filter.push((t1 - t0).as_nanos() as u64);
                        if n > 1 {
                            prio.push((t3 - t2).as_nanos() as u64);
                        }
                        // The round trips only: the client's own JSON work between them is not the extender's.
                        cycle.push(((t1 - t0) + (t3 - t2)).as_nanos() as u64);
                        passed_total += n;
                    }
                }
                (cycle, filter, prio, passed_total)
            }));
        }
        let mut all = (Vec::new(), Vec::new(), Vec::new(), 0usize);
        for t in tasks {
            let (c, f, p, n) = t.await.unwrap();
            all.0.extend(c);
            all.1.extend(f);
            all.2.extend(p);
            all.3 += n;
        }
        all
    });
    let (mut cycle, mut filter, mut prio, passed) = results;
    cycle.sort_unstable();
    filter.sort_unstable();
    prio.sort_unstable();
    let pods = cycle.len();
    println!(
        "nodes {} | candidates per filter {} | concurrency {} | server threads {} | {:.1} s measured after {:.0} s warm-up",
        a.nodes,
        a.candidates.unwrap_or(a.nodes).min(a.nodes),
        a.concurrency,
        a.server_threads,
        a.seconds,
        warmup.as_secs_f64()
    );
    println!(
        "pods (filter + prioritize round trips): {pods} → {:.0} pods/s; mean nodes passing filter {:.0}",
        pods as f64 / a.seconds,
        passed as f64 / pods.max(1) as f64
    );
    for (what, v) in [("cycle (filter + prioritize)", &cycle), ("filter", &filter), ("prioritize", &prio)] {
        println!(
            "{what:<28} p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (n = {})",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0),
            v.len()
        );
    }
}

/// `--profile`: where one filter call's time goes, in process (no HTTP).
#[allow(dead_code)]
pub fn profile(ext: &Extender, body: &[u8]) {
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sovra_extender::wire::decode_args("filter", body).unwrap());
    }
    let decode = t.elapsed() / n;
    let args = sovra_extender::wire::decode_args("filter", body).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(ext.filter(&args));
    }
    let filter = t.elapsed() / n;
    let out = ext.filter(&args);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sovra_extender::wire::encode_filter_result(&out));
    }
    let encode = t.elapsed() / n;
    let bytes = serde_json::to_vec(&out).unwrap().len();
    if std::env::var_os("SOVRA_PROFILE_REASONS").is_some() {
        let mut hist: std::collections::BTreeMap<&str, usize> = Default::default();
        for r in out.failed_nodes.values().chain(out.failed_and_unresolvable_nodes.values()) {
            *hist.entry(r).or_default() += 1;
        }
        for (r, c) in hist {
            eprintln!("{c:>6} × {r}");
        }
    }
    eprintln!(
        "profile: decode {decode:?}, filter {filter:?}, encode {encode:?} ({bytes} bytes out, {} in)",
        body.len()
    );
}
