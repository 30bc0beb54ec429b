//! Criterion benchmark of OMS model signing (`sovra_oms::sign_model`): a synthetic 256 MiB model of five
//! files (one of 128 MiB), hashed in parallel, signed with the P-256 test key. The 4 GiB measurement against
//! `sha256sum` and `model_signing` is in docs/signing.md ("Measured").
//!
//! `receipts`: what one signed placement receipt costs the scheduler's writer (docs/receipts.md): the DSSE
//! signature of a receipt-sized in-toto statement, and the audit entry around it (RFC 8785 form + SHA-256).
//!
//! Run: `cargo bench --bench signing` (`-- receipts` for those alone).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sovra_oms::{SignOptions, sign_model};
use std::io::Write;
use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;

/// Writes `size` bytes of cheap pseudo-random data (SHA-256 speed does not depend on the content).
fn write_file(path: &Path, size: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut block = vec![0u8; MIB];
    for _ in 0..size / MIB {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

fn model_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sovra-bench-signing-{}", std::process::id()));
    let model = dir.join("model");
    std::fs::create_dir_all(model.join("shards")).unwrap();
    write_file(&model.join("shards/model-00001.safetensors"), 128 * MIB, 1);
    write_file(&model.join("shards/model-00002.safetensors"), 64 * MIB, 2);
    write_file(&model.join("shards/model-00003.safetensors"), 48 * MIB, 3);
    write_file(&model.join("embeddings.bin"), 16 * MIB, 4);
    std::fs::write(model.join("config.json"), b"{\"layers\": 32}\n").unwrap();
    dir
}

fn signing(c: &mut Criterion) {
    let dir = model_dir();
    let model = dir.join("model");
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("oms/tests/data/key.pem");
    let sig = dir.join("model.sig");
    let bytes = 256 * MIB as u64 + 15;
    let mut g = c.benchmark_group("oms_sign");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("sign_256MiB_5_files_p256", |b| {
        b.iter(|| sign_model(&model, &key, &sig, &SignOptions::default()).unwrap())
    });
    g.bench_function("sign_256MiB_5_files_p256_1_thread", |b| {
        let one = SignOptions { threads: Some(1), ..SignOptions::default() };
        b.iter(|| sign_model(&model, &key, &sig, &one).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn receipts(c: &mut Criterion) {
    let key_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("oms/tests/data/key.pem");
    let key = sovra_oms::keys::SigningKey::from_pem_file(&key_file).unwrap();
    let zone = serde_json::json!({"id": "fr-par-secnum", "country": "FR", "region": "Paris", "jurisdiction": "EU",
        "operator": "Hexacloud SAS", "operator_hq": "FR", "certifications": ["HDS", "ISO27001", "SecNumCloud"]});
    let statement = serde_json::json!({"_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "sovra-job/7/replica/0", "digest": {"sha256": "ab".repeat(32)}}],
        "predicateType": "https://sovra.dev/placement-receipt/v1",
        "predicate": {"event": "placed", "job": 7, "jobName": "radiology-train", "replica": 0, "replicas": 2,
            "attempt": 1, "node": "fr-par-h100-2", "pool": "fr-par-train",
            "zone": {"id": "fr-par-secnum", "definition": zone, "digest": "cd".repeat(32)},
            "devices": [{"device": 0, "milli": 1000}],
            "residencyClass": {"name": "fr-health", "definition": {"name": "fr-health", "countries": ["FR"],
                "certifications": ["HDS", "SecNumCloud"]}, "digest": "ef".repeat(32)},
            "satisfiesClass": true, "violations": [], "policyDigest": "01".repeat(32),
            "startedAt": 1_764_763_200_000u64, "endedAt": null}})
    .to_string();
    let mut g = c.benchmark_group("receipts");
    g.bench_function("dsse_sign_p256", |b| {
        b.iter(|| sovra_oms::dsse::Envelope::sign("application/vnd.in-toto+json", statement.as_bytes(), &key).unwrap())
    });
    let env = sovra_oms::dsse::Envelope::sign("application/vnd.in-toto+json", statement.as_bytes(), &key).unwrap();
    let event = sovra_audit::AuditEvent {
        kind: "placement-receipt".into(),
        subject: "job 7 replica 0".into(),
        actor: "scheduler".into(),
        details: serde_json::json!({"job": 7, "replica": 0, "envelope": env}),
    };
    let head = sovra_audit::AuditHead::empty();
    g.bench_function("audit_entry", |b| b.iter(|| sovra_audit::next_entry_at(&head, event.clone(), 1).unwrap()));
    g.finish();
}

criterion_group!(benches, signing, receipts);
criterion_main!(benches);
