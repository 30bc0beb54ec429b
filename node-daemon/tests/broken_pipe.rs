//! `sovra-node-daemon watch … | head`: a reader that closes the pipe early ends the daemon quietly (status 0),
//! never with a panic (issue 11, item 10); nor does a bad `--duration-s`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-8gpu.yaml").display().to_string()
}

#[test]
fn watch_into_a_closed_pipe_ends_quietly_without_a_panic() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sovra-node-daemon"))
        .args(["watch", "--backend", "fake", "--fixture", &fixture(), "--interval-ms", "10", "--duration-s", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away at once, as `head -0` would.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.status.success(), "{:?}: {err}", o.status);
    assert!(started.elapsed() < Duration::from_secs(15), "it stopped at the broken pipe, not at --duration-s");
}

#[test]
fn a_negative_or_nan_duration_is_refused_not_a_panic() {
    // Before: `--duration-s=-1` and `--duration-s NaN` panicked in Duration::from_secs_f64.
    for v in ["-1", "NaN", "inf"] {
        let o = Command::new(env!("CARGO_BIN_EXE_sovra-node-daemon"))
            .args(["watch", "--backend", "fake", "--fixture", &fixture(), &format!("--duration-s={v}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{v}: {err}");
        assert!(!err.contains("panicked") && err.contains("--duration-s"), "{v}: {err}");
    }
}
