//! The fixture of the promotion tests: keys, the example cluster, a promotion config and a signed model in a
//! scratch directory, and helpers that read denials.
#![allow(dead_code)] // each test binary uses a part

use sovra_domain::ClusterConfig;
use sovra_domain::datazone::Stage;
use sovra_oms::keys::generate_p256;
use sovra_oms::{SignOptions, sign_model};
use sovra_promotion::{PromoteError, Promoter, PromotionConfig, PushRequest};
use sovra_registry::Registry;
use std::path::{Path, PathBuf};

/// A scratch directory with everything a promotion needs.
pub struct Fx {
    /// The scratch directory.
    pub dir: tempfile::TempDir,
}

pub const KEYS: [&str; 8] = ["signer", "rogue", "alice", "bob", "carol", "mallory", "admin", "service"];

impl Fx {
    pub fn new() -> Fx {
        Self::with_config("")
    }

    /// A scratch directory with keys, a cluster (the example one), a promotion config (plus `extra` YAML) and a
    /// small model signed by `signer`.
    pub fn with_config(extra: &str) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("keys")).unwrap();
        for k in KEYS {
            let (private, public) = generate_p256().unwrap();
            std::fs::write(root.join(format!("keys/{k}.pem")), private).unwrap();
            std::fs::write(root.join(format!("keys/{k}.pub.pem")), public).unwrap();
        }
        let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml");
        std::fs::copy(cluster, root.join("cluster.yaml")).unwrap();
        let base = "cluster: cluster.yaml
stages:
  training: [fr-par-secnum, de-fra-c5, nl-ams-general]
  registry: [fr-par-secnum, de-fra-c5]
  inference: [fr-par-secnum, de-fra-c5, de-fra-hyperscaler]
training_zones: [fr-par-secnum, de-fra-c5]
signers:
  - {name: trainer, key: keys/signer.pub.pem}
approvers:
  - {name: alice, key: keys/alice.pub.pem}
  - {name: bob, key: keys/bob.pub.pem}
  - {name: carol, key: keys/carol.pub.pem}
admins:
  - {name: secops, key: keys/admin.pub.pem}
service_key: keys/service.pem
approvals: {registry: 0, inference: 2, max_age: 7d}
provenance: {require_receipts: false}  # these tests push self-declared provenance; receipts: tests/receipts_gate.rs
evaluation:
  accuracy: {min: 0.9}
";
        std::fs::write(root.join("promotion.yaml"), format!("{base}{extra}")).unwrap();
        let fx = Fx { dir };
        let root = fx.dir.path();
        fx.make_model("model", b"weights-v1");
        fx.sign("model", "signer");
        std::fs::write(root.join("provenance.yaml"), "training_job: job-42\ntraining_zone: fr-par-secnum\n").unwrap();
        std::fs::write(root.join("metrics.json"), "{\"accuracy\": 0.93}").unwrap();
        fx
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn make_model(&self, name: &str, weights: &[u8]) {
        let m = self.p(name);
        std::fs::create_dir_all(m.join("weights")).unwrap();
        std::fs::write(m.join("config.json"), b"{\"layers\": 2}\n").unwrap();
        std::fs::write(m.join("weights/w0.bin"), weights).unwrap();
    }

    pub fn sign(&self, model: &str, key: &str) {
        let sig = self.p(&format!("{model}.sig"));
        sign_model(&self.p(model), &self.p(&format!("keys/{key}.pem")), &sig, &SignOptions::default()).unwrap();
    }

    pub fn promoter(&self) -> Promoter {
        let config = PromotionConfig::load(&self.p("promotion.yaml")).unwrap();
        let cluster = ClusterConfig::load(&self.p("cluster.yaml")).unwrap();
        let registry = Registry::open(&self.p("registry")).unwrap();
        Promoter::new(registry, config, cluster).unwrap()
    }

    pub fn push_req(&self, class: &str) -> PushRequest {
        PushRequest {
            name: "resnet".into(),
            model: self.p("model"),
            signature: self.p("model.sig"),
            public_key: None,
            residency_class: class.into(),
            provenance: Some(self.p("provenance.yaml")),
            metrics: Some(self.p("metrics.json")),
            zone: None,
        }
    }

    pub fn key(&self, k: &str) -> PathBuf {
        self.p(&format!("keys/{k}.pem"))
    }
}

pub fn denied(r: Result<sovra_promotion::Promoted, PromoteError>) -> Vec<(String, Vec<String>)> {
    match r {
        Err(PromoteError::Denied { failed, .. }) => failed.into_iter().map(|g| (g.gate, g.reasons)).collect(),
        Err(e) => panic!("expected a denial, got error {e}"),
        Ok(p) => panic!("expected a denial, got a promotion to {}", p.to),
    }
}

pub fn failed_gates(r: Result<sovra_promotion::Promoted, PromoteError>) -> Vec<String> {
    denied(r).into_iter().map(|(g, _)| g).collect()
}

/// Pushes and promotes to the registry stage.
pub fn at_registry(fx: &Fx, p: &Promoter, class: &str) {
    p.push(&fx.push_req(class)).unwrap();
    p.promote("resnet", None, Stage::Registry, None, &[]).unwrap();
}
