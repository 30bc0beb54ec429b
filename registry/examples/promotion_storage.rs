//! Benchmark of the promotion storage path (issue #14), in one run:
//!
//! 1. AES-256-GCM (the chunked STREAM sealing of `sovra_registry::crypt`) and SHA-256 rates on one core;
//! 2. a promotion's storage work for one blob of SIZE bytes between two data zones on local disks — `copy`
//!    (decrypt under zone A's key, hash, re-encrypt under zone B's) and `verify` (decrypt and hash the copy, as
//!    the promotion service does) — against `cp` of the same plaintext bytes;
//! 3. the same between two Garage S3 servers when `$SOVRA_GARAGE` (or the cache path) has the binary.
//!
//! `cargo run --release -p sovra-registry --example promotion_storage -- [SIZE_MIB]` (default 1024). Prints a
//! Markdown table for BENCHMARKS.md.

use sha2::{Digest, Sha256};
use sovra_domain::datazone::{DataZone, Stage};
use sovra_registry::stores::{KeySpec, S3Spec, StoreSpec, Stores};
use sovra_registry::{BlobStore, FileKey, hex};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn main() {
    let size_mib: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let size = size_mib << 20;
    let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into())).unwrap();
    let fr = dir.path().join("fr.kek");
    let de = dir.path().join("de.kek");
    FileKey::generate(&fr).unwrap();
    FileKey::generate(&de).unwrap();

    // 1. Per-core rates over 512 MiB held in 1 MiB pieces.
    let piece = vec![0x5au8; 1 << 20];
    let n = 512u64;
    let kek = FileKey::load(&fr).unwrap();
    let (_, mut enc) = sovra_registry::crypt::seal_new(&kek, "fr", "fr/registry", "x").unwrap();
    let t = Instant::now();
    let mut sealed = 0usize;
    for _ in 0..n {
        for c in enc.push(&piece).unwrap() {
            sealed += c.len();
        }
    }
    sealed += enc.finish().unwrap().len();
    let aes = mib_s(n << 20, t.elapsed().as_secs_f64());
    assert!(sealed as u64 > n << 20);
    let t = Instant::now();
    let mut h = Sha256::new();
    for _ in 0..n {
        h.update(&piece);
    }
    let _ = h.finalize();
    let sha = mib_s(n << 20, t.elapsed().as_secs_f64());
    println!("| AES-256-GCM seal, 1 core | {aes:.0} MiB/s |");
    println!("| SHA-256, 1 core | {sha:.0} MiB/s |");
    println!("| ratio AES-GCM / SHA-256 | {:.2} |", aes / sha);

    // A model file of SIZE bytes (pseudo-random, so that nothing compresses it).
    let file = dir.path().join("model.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..size_mib {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
        f.flush().unwrap();
    }
    let digest = {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(&file).unwrap();
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        hex(&h.finalize())
    };
    let key = |p: &Path| Some(KeySpec { file: Some(p.to_path_buf()), pkcs11: None });

    // 2. Local disks.
    let mut stores = Stores::new();
    stores.insert("fr".into(), StoreSpec { local: Some(dir.path().join("disk-fr")), s3: None, key: key(&fr) });
    stores.insert("de".into(), StoreSpec { local: Some(dir.path().join("disk-de")), s3: None, key: key(&de) });
    run("local disks", dir.path(), &stores, &file, &digest, size);
    let cp_from = dir.path().join("cp-src");
    std::fs::create_dir_all(&cp_from).unwrap();
    std::fs::rename(&file, cp_from.join("model.bin")).unwrap();
    sync();
    let t = Instant::now();
    let st = std::process::Command::new("cp").arg("-r").arg(&cp_from).arg(dir.path().join("cp-dst")).status().unwrap();
    sync();
    assert!(st.success());
    let cp = t.elapsed().as_secs_f64();
    println!("| `cp -r` of the same bytes + sync, local disk | {:.2} s | {:.0} MiB/s |", cp, mib_s(size, cp));
    std::fs::remove_dir_all(dir.path().join("cp-dst")).unwrap();
    std::fs::rename(cp_from.join("model.bin"), &file).unwrap();
    std::fs::remove_dir_all(dir.path().join("disk-fr")).ok();
    std::fs::remove_dir_all(dir.path().join("disk-de")).ok();

    // 3. Garage.
    match (sovra_garage_testenv::Garage::start(), sovra_garage_testenv::Garage::start()) {
        (Ok(a), Ok(b)) => {
            a.create_bucket("sovra-fr").unwrap();
            b.create_bucket("sovra-de").unwrap();
            let mut stores = Stores::new();
            for (zone, g, k) in [("fr", &a, &fr), ("de", &b, &de)] {
                let creds = dir.path().join(format!("{zone}.json"));
                std::fs::write(
                    &creds,
                    format!("{{\"access_key_id\": \"{}\", \"secret_access_key\": \"{}\"}}", g.key_id(), g.secret()),
                )
                .unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
                let s3 = S3Spec {
                    endpoint: g.endpoint().into(),
                    bucket: format!("sovra-{zone}"),
                    region: "garage".into(),
                    prefix: None,
                    access_key_id_env: None,
                    secret_access_key_env: None,
                    credentials_file: Some(creds),
                };
                stores.insert(zone.into(), StoreSpec { local: None, s3: Some(s3), key: key(k) });
            }
            run("two Garage servers (loopback)", dir.path(), &stores, &file, &digest, size);
        }
        (Err(e), _) | (_, Err(e)) => println!("(Garage skipped: {e})"),
    }
}

fn sync() {
    let _ = std::process::Command::new("sync").status();
}

fn run(what: &str, dir: &Path, stores: &Stores, file: &Path, digest: &str, size: u64) {
    let blobs = BlobStore::configured(&dir.join("reg/blobs"), &dir.join("reg/keys"), stores).unwrap();
    let (a, b) = (DataZone::new("fr", Stage::Training).unwrap(), DataZone::new("de", Stage::Registry).unwrap());
    let t = Instant::now();
    blobs.put_file(&a, file, digest).unwrap();
    let push = t.elapsed().as_secs_f64();
    sync();
    let t = Instant::now();
    blobs.copy(&a, &b, digest).unwrap();
    let copy = t.elapsed().as_secs_f64();
    let t = Instant::now();
    blobs.verify(&b, digest).unwrap();
    let verify = t.elapsed().as_secs_f64();
    sync();
    println!("| push (hash + encrypt + write), {what} | {push:.2} s | {:.0} MiB/s |", mib_s(size, push));
    println!(
        "| copy zone → zone (decrypt + hash + re-encrypt), {what} | {copy:.2} s | {:.0} MiB/s |",
        mib_s(size, copy)
    );
    println!("| verify the copy (decrypt + hash), {what} | {verify:.2} s | {:.0} MiB/s |", mib_s(size, verify));
    println!(
        "| promote storage work (copy + verify), {what} | {:.2} s | {:.0} MiB/s |",
        copy + verify,
        mib_s(size, copy + verify)
    );
    blobs.delete(&a, digest).unwrap();
    blobs.delete(&b, digest).unwrap();
}
