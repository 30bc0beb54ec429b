//! Black-box tests of a store per data zone through the `sovra` CLI: `stores:` in the promotion config, push in
//! France → promote into Germany → pull, what the stores hold (ciphertext), `sovra registry rotate-key`, gc over
//! every zone's store, the wrong zone key. Once on two local disks, once on two real Garage S3 servers (the garage
//! binary is needed; without it that test fails, saying how to install it).

use sovra_garage_testenv::Garage;
use std::path::{Path, PathBuf};

#[path = "support/registry_tour.rs"]
mod registry_tour;

use registry_tour::Tour;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-radiology-weights-under-French-law";

fn holds_marker(dir: &Path) -> bool {
    walkdir(dir).iter().any(|f| std::fs::read(f).unwrap().windows(MARKER.len()).any(|w| w == MARKER))
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// A tour whose model holds the marker (re-signed), keys for both zones, and `stores:` appended to the config.
fn tour(stores_yaml: &str) -> Tour {
    let t = Tour::new();
    let weights: Vec<u8> = MARKER.iter().copied().cycle().take(3 << 20).collect();
    std::fs::write(t.p("model/weights/w0.bin"), weights).unwrap();
    t.ok(&["model", "sign", "model", "--private-key", "keys/trainer.pem", "--signature", "model.sig"]);
    std::fs::create_dir_all(t.p("kek-volume")).unwrap();
    for z in ["fr", "de", "de-2"] {
        sovra_registry::FileKey::generate(&t.p(&format!("kek-volume/{z}.kek"))).unwrap();
    }
    let mut config = std::fs::read_to_string(t.p("promotion.yaml")).unwrap();
    config.push_str(stores_yaml);
    std::fs::write(t.p("promotion.yaml"), config).unwrap();
    t
}

fn flow(t: &Tour) -> String {
    let v = t.json(
        &[
            "model",
            "push",
            "radiology",
            "model",
            "--signature",
            "model.sig",
            "--residency-class",
            "eu-any",
            "--provenance",
            "provenance.yaml",
            "--metrics",
            "metrics.json",
        ],
        0,
    );
    assert_eq!(v["data_zone"], "fr-par-secnum/training");
    let p = t.json(&["model", "promote", "radiology", "--to", "registry", "--zone", "de-fra-c5"], 0);
    assert_eq!(p["to"], "de-fra-c5/registry");
    t.ok(&["model", "pull", "radiology", "pulled", "--stage", "registry"]);
    t.ok(&["model", "verify", "pulled", "--signature", "pulled.sig", "--public-key", "keys/trainer.pub.pem"]);
    assert_eq!(
        std::fs::read(t.p("pulled/weights/w0.bin")).unwrap(),
        std::fs::read(t.p("model/weights/w0.bin")).unwrap()
    );
    v["digest"].as_str().unwrap().to_string()
}

fn set_de_key(t: &Tour, key: &str) {
    let c = std::fs::read_to_string(t.p("promotion.yaml")).unwrap();
    let c = c.replace("kek-volume/de.kek", key).replace("kek-volume/de-2.kek", key);
    std::fs::write(t.p("promotion.yaml"), c).unwrap();
}

/// Rotation, the wrong key and gc: the same on local disks and on S3. The de zone holds three blobs (the two
/// files and the bundle).
fn keys_and_gc(t: &Tour) {
    let (out, _) = t.expect(&["registry", "rotate-key", "--zone", "de-fra-c5", "--new-key", "kek-volume/de-2.kek"], 0);
    assert!(out.contains("3 data key(s) re-wrapped"), "{out}");
    // Until the config names the new key, reads are refused, saying why.
    let (code, _, err) = t.code(&["model", "pull", "radiology", "pulled-2", "--stage", "registry"]);
    assert_ne!(code, 0);
    assert!(err.contains("rotated"), "{err}");
    set_de_key(t, "kek-volume/de-2.kek");
    t.ok(&["model", "pull", "radiology", "pulled-2", "--stage", "registry"]);
    // fr's key named for de: refused.
    set_de_key(t, "kek-volume/fr.kek");
    let (code, _, err) = t.code(&["model", "pull", "radiology", "pulled-3", "--stage", "registry"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("de-fra-c5"), "{err}");
    set_de_key(t, "kek-volume/de-2.kek");
    // gc (which reads no promotion config) sees both zones' stores: nothing is an orphan.
    let g = t.json(&["registry", "gc"], 0);
    assert_eq!(g["orphans"].as_array().unwrap().len(), 0, "{g}");
}

#[test]
fn stores_on_two_local_disks_through_the_cli() {
    let t = tour(
        "stores:\n  fr-par-secnum:\n    local: disk-fr\n    key: {file: kek-volume/fr.kek}\n  de-fra-c5:\n    local: \
         disk-de\n    key: {file: kek-volume/de.kek}\n",
    );
    flow(&t);
    for disk in ["disk-fr", "disk-de"] {
        assert!(t.p(disk).join("zones").is_dir(), "{disk} holds its zone's blobs");
        assert!(!holds_marker(&t.p(disk)), "{disk} holds plaintext");
    }
    assert!(!t.p("registry/blobs/zones").exists(), "nothing in the default store");
    assert!(t.p("disk-de/zones/de-fra-c5/registry").is_dir() && !t.p("disk-fr/zones/de-fra-c5").exists());
    keys_and_gc_local(&t);
}

fn keys_and_gc_local(t: &Tour) {
    let keys = walkdir(&t.p("disk-de")).iter().filter(|p| p.extension().is_some_and(|e| e == "key")).count();
    assert_eq!(keys, 3, "each blob has its key object");
    keys_and_gc(t);
    // A blob left in de's store by a killed promotion is an orphan that gc finds there.
    let stray = t.p("disk-de/zones/de-fra-c5/inference/sha256/ab");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("ab".repeat(32)), b"x").unwrap();
    let g = t.json(&["registry", "gc"], 0);
    assert_eq!(g["orphans"][0]["data_zone"], "de-fra-c5/inference", "{g}");
    assert!(g["orphans"][0]["location"].as_str().unwrap().contains("disk-de"), "{g}");
}

#[test]
fn stores_on_two_garage_servers_in_two_countries_through_the_cli() {
    let fr = Garage::start().unwrap_or_else(|e| panic!("{e}"));
    let de = Garage::start().unwrap_or_else(|e| panic!("{e}"));
    fr.create_bucket("fr-models").unwrap();
    de.create_bucket("de-models").unwrap();
    let creds = |g: &Garage, dir: &Path, name: &str| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!("{{\"access_key_id\": \"{}\", \"secret_access_key\": \"{}\"}}", g.key_id(), g.secret()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let entry = |zone: &str, g: &Garage, bucket: &str, key: &str| {
        format!(
            "  {zone}:\n    s3: {{endpoint: \"{}\", bucket: {bucket}, region: garage, credentials_file: {bucket}.json}}\n    \
             key: {{file: kek-volume/{key}.kek}}\n",
            g.endpoint()
        )
    };
    let yaml = format!(
        "stores:\n{}{}",
        entry("fr-par-secnum", &fr, "fr-models", "fr"),
        entry("de-fra-c5", &de, "de-models", "de")
    );
    let t = tour(&yaml);
    creds(&fr, t.dir.path(), "fr-models.json");
    creds(&de, t.dir.path(), "de-models.json");
    flow(&t);
    assert!(!t.p("registry/blobs/zones").exists(), "nothing in the default store");
    for g in [&fr, &de] {
        assert!(!walkdir(&g.data_dir()).is_empty(), "Garage stored data");
        assert!(!holds_marker(&g.data_dir()), "Garage at {} holds plaintext", g.endpoint());
    }
    keys_and_gc(&t);
}
