//! The `sovra-promotion` binary: `token` prints a token and its hash, and `serve` refuses a config without a
//! `service:` section, naming the field. (Its being an integration test also makes `cargo test --workspace` build
//! the binary that tests/promotion_service.rs at the repository root runs.)

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sovra-promotion"))
}

#[test]
fn token_prints_a_token_and_its_sha256() {
    let o = bin().arg("token").output().unwrap();
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    let token = out.lines().find_map(|l| l.strip_prefix("token: ")).unwrap();
    let hash = out.lines().find_map(|l| l.strip_prefix("token_sha256: ")).unwrap();
    assert_eq!(token.len(), 64);
    assert_eq!(hash, sovra_promotion_server::auth::token_hash(token));
}

#[test]
fn serve_without_a_service_section_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(repo.join("examples/cluster.yaml"), dir.path().join("cluster.yaml")).unwrap();
    let cfg = std::fs::read_to_string(repo.join("examples/promotion.yaml")).unwrap();
    std::fs::write(dir.path().join("promotion.yaml"), cfg).unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    for k in ["trainer", "alice", "bob", "carol", "secops", "service", "scheduler"] {
        let (private, public) = sovra_oms::keys::generate_p256().unwrap();
        std::fs::write(dir.path().join(format!("keys/{k}.pem")), private).unwrap();
        std::fs::write(dir.path().join(format!("keys/{k}.pub.pem")), public).unwrap();
    }
    let o = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--registry"])
        .arg(dir.path().join("reg"))
        .arg("--promotion-config")
        .arg(dir.path().join("promotion.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("field `service`"), "{err}");
}
