//! The registry tours of `tests/registry_cli.rs` and `tests/registry_hardening.rs`: a scratch directory with keys,
//! the example cluster and promotion config and a signed model, and the `sovra` binary run in it. Included by both
//! with `#[path]` (each test file is its own crate, so not every helper is used by each).
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("sovra-registry-tour-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Keys, the example cluster and promotion config, and a signed model with provenance and metrics.
pub struct Tour {
    /// Where everything lives; the commands run there.
    pub dir: Scratch,
}

impl Tour {
    pub fn new() -> Tour {
        let t = Tour { dir: Scratch::new() };
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(repo.join("examples/cluster.yaml"), t.p("cluster.yaml")).unwrap();
        // The tours push self-declared provenance (receipts: tests/receipts_gate.rs, scripts/auditor-flow.sh).
        let config = std::fs::read_to_string(repo.join("examples/promotion.yaml")).unwrap();
        let config = config.replace("require_receipts: true", "require_receipts: false");
        std::fs::write(t.p("promotion.yaml"), config).unwrap();
        for k in ["trainer", "alice", "bob", "carol", "secops", "service", "scheduler"] {
            t.ok(&["model", "keygen", &format!("keys/{k}")]);
        }
        std::fs::create_dir_all(t.p("model/weights")).unwrap();
        std::fs::write(t.p("model/config.json"), b"{\"layers\": 2}\n").unwrap();
        std::fs::write(t.p("model/weights/w0.bin"), vec![7u8; 100_000]).unwrap();
        std::fs::write(t.p("provenance.yaml"), "training_job: j1\ntraining_zone: fr-par-secnum\n").unwrap();
        std::fs::write(t.p("metrics.json"), "{\"accuracy\": 0.95, \"toxicity\": 0.01}").unwrap();
        t.ok(&["model", "sign", "model", "--private-key", "keys/trainer.pem", "--signature", "model.sig"]);
        t
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.0.join(rel)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sovra"));
        c.current_dir(&self.dir.0)
            .env("SOVRA_REGISTRY", self.p("registry"))
            .env("SOVRA_PROMOTION_CONFIG", self.p("promotion.yaml"))
            .env_remove("SOVRA_AUDIT_WITNESS")
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn code(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.run(args);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into(),
            String::from_utf8_lossy(&o.stderr).into(),
        )
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.code(args);
        assert_eq!(code, 0, "sovra {args:?}\nstdout: {out}\nstderr: {err}");
        out
    }

    pub fn expect(&self, args: &[&str], want: i32) -> (String, String) {
        let (code, out, err) = self.code(args);
        assert_eq!(code, want, "sovra {args:?}\nstdout: {out}\nstderr: {err}");
        (out, err)
    }

    pub fn json(&self, args: &[&str], want: i32) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let (out, _) = self.expect(&a, want);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    pub fn push_model(&self, dir: &str, sig: &str) -> String {
        let v = self.json(
            &[
                "model",
                "push",
                "radiology",
                dir,
                "--signature",
                sig,
                "--residency-class",
                "fr-health",
                "--provenance",
                "provenance.yaml",
                "--metrics",
                "metrics.json",
            ],
            0,
        );
        v["digest"].as_str().unwrap().to_string()
    }

    pub fn push(&self) -> String {
        self.push_model("model", "model.sig")
    }

    /// A push, a denial, a promotion, two approvals: five audit entries.
    pub fn history(&self) {
        self.push();
        self.expect(&["model", "promote", "radiology", "--to", "inference"], 1);
        self.ok(&["model", "promote", "radiology", "--to", "registry"]);
        self.ok(&["model", "approve", "radiology", "--to", "inference", "--key", "keys/alice.pem"]);
        self.ok(&["model", "approve", "radiology", "--to", "inference", "--key", "keys/bob.pem"]);
    }

    pub fn verify(&self, extra: &[&str]) -> (i32, Value) {
        let mut a = vec!["audit", "verify", "--output", "json"];
        a.extend_from_slice(extra);
        let (code, out, err) = self.code(&a);
        let v = serde_json::from_str(&out).unwrap_or(Value::String(format!("{out}{err}")));
        (code, v)
    }
}
