//! A scheduler service on loopback for the CLI tests: the example cluster, real gRPC, a fixed token, and the
//! `sovra` command pointed at it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The token the test scheduler takes.
pub const TOKEN: &str = "test-scheduler-token";

/// Starts a scheduler on the example cluster with `opts` in a background thread; its `http://` address.
pub fn start(opts: sovra_scheduler::service::Options) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    start_on(sovra_domain::ClusterConfig::load(&repo.join("examples/cluster.yaml")).unwrap(), opts)
}

/// Starts a scheduler on `cluster` with `opts` in a background thread; its `http://` address.
pub fn start_on(cluster: sovra_domain::ClusterConfig, opts: sovra_scheduler::service::Options) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let s =
                sovra_scheduler::service::Scheduler::with_options(cluster, Default::default(), 42, None, opts).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap())).unwrap();
            sovra_scheduler::service::serve(listener, s, TOKEN.into(), std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// Runs `cmd` (a `sovra` command) against the scheduler at `server`: (exit code, stdout, stderr).
pub fn run(mut cmd: Command, server: &str) -> (i32, String, String) {
    let o = cmd.env("SOVRA_SERVER", server).env("SOVRA_TOKEN", TOKEN).env_remove("SOVRA_CA").output().unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.code().unwrap_or(-1), s(&o.stdout), s(&o.stderr))
}
