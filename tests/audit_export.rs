//! `sovra audit export` checked by the independent verifier `tests/audit_verify.py` (plain Python, no sovra code):
//! the chain verifies, the head the commands print on stderr is the exported head, and a one-byte edit is caught
//! on its line. The exception's reason carries non-ASCII characters and escapes, so the Python JCS and serde_jcs
//! must agree on them.

use std::path::Path;
use std::process::Command;

#[path = "support/registry_tour.rs"]
mod registry_tour;

use registry_tour::Tour;

/// Runs the verifier: (exit code, stdout + stderr).
fn verify(export: &Path, extra: &[&str]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/audit_verify.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(export)
        .args(extra)
        .output()
        .expect("python3 runs (the verifier needs Python 3.11 or later)");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), text)
}

/// The `audit head: COUNT HASH` line of a command's stderr.
fn head(stderr: &str) -> (u64, String) {
    let line = stderr.lines().find_map(|l| l.strip_prefix("audit head: ")).unwrap_or_else(|| panic!("{stderr}"));
    let (count, hash) = line.split_once(' ').unwrap();
    (count.parse().unwrap(), hash.to_string())
}

#[test]
fn an_exported_log_verifies_in_python_and_a_flipped_byte_is_caught_on_its_line() {
    let t = Tour::new();
    let (_, err) = t.expect(
        &[
            "model",
            "push",
            "radiology",
            "model",
            "--signature",
            "model.sig",
            "--residency-class",
            "fr-health",
            "--provenance",
            "provenance.yaml",
            "--metrics",
            "metrics.json",
        ],
        0,
    );
    assert_eq!(head(&err).0, 1, "{err}");
    // A denial appends too, and says so.
    let (_, err) = t.expect(&["model", "promote", "radiology", "--to", "inference"], 1);
    assert_eq!(head(&err).0, 2, "{err}");
    let (_, err) = t.expect(&["model", "promote", "radiology", "--to", "registry"], 0);
    assert_eq!(head(&err).0, 3, "{err}");
    let (_, err) = t.expect(&["model", "approve", "radiology", "--to", "inference", "--key", "keys/alice.pem"], 0);
    assert_eq!(head(&err).0, 4, "{err}");
    let reason = "Zürich \"hotfix\"\n\ttab ☃ 𝄞 \u{1} é / \\";
    let grant = ["exception", "grant", "--model", "radiology", "--gate", "approvals", "--ttl", "1h", "--reason"];
    let mut args = grant.to_vec();
    args.extend([reason, "--key", "keys/secops.pem"]);
    let (_, err) = t.expect(&args, 0);
    assert_eq!(head(&err).0, 5, "{err}");
    let (_, err) = t.expect(&["model", "promote", "radiology", "--to", "inference"], 0);
    let (count, last) = head(&err);
    assert_eq!(count, 6, "{err}");

    let (out, err) = t.expect(&["audit", "export", "--out", "export.jsonl"], 0);
    assert!(out.is_empty(), "{out}");
    assert_eq!(head(&err), (6, last.clone()));
    let text = std::fs::read_to_string(t.p("export.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(text.contains(r#""reason":"Zürich \"hotfix\"\n\ttab ☃ 𝄞 \u0001 é / \\""#), "{text}");
    // Without --out: the same lines on stdout.
    assert_eq!(t.expect(&["audit", "export"], 0).0, text);
    // The head `sovra audit verify` reports is the one printed.
    assert_eq!(t.json(&["audit", "verify"], 0)["head"]["hash"], last.as_str());

    let export = t.p("export.jsonl");
    let (code, msg) = verify(&export, &["--expect-head", &last]);
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains(&format!("6 entries, head {last}")), "{msg}");
    let (code, msg) = verify(&export, &["--expect-head", &"0".repeat(64)]);
    assert_eq!(code, 1, "{msg}");

    // One byte of the exception entry's `kind` changed: line 5 no longer hashes to its hash.
    let edited = text.replacen(r#""kind":"exception""#, r#""kind":"exceptioN""#, 1);
    assert_ne!(edited, text);
    let bad = t.p("edited.jsonl");
    std::fs::write(&bad, edited).unwrap();
    let (code, msg) = verify(&bad, &[]);
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("edited.jsonl:5: content hashes to"), "{msg}");
    // A removed line breaks the numbering on the line that follows it.
    let dropped: String = text.lines().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(&bad, dropped).unwrap();
    let (code, msg) = verify(&bad, &[]);
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("edited.jsonl:3: entry says seq 3, expected 2"), "{msg}");
}

#[test]
fn a_missing_registry_is_bad_input_and_one_push_exports_one_format_2_line() {
    let t = Tour::new();
    let (_, err) = t.expect(&["audit", "export", "--registry", "nowhere"], 2);
    assert!(err.contains("no registry here"), "{err}");
    t.push();
    let (out, err) = t.expect(&["audit", "export"], 0);
    assert_eq!(out.lines().count(), 1);
    let (count, hash) = head(&err);
    assert_eq!(count, 1);
    assert!(out.contains(&format!(r#""hash":"{hash}""#)), "{out}");
    assert!(out.starts_with(r#"{"v":2,"seq":0,"#), "{out}");
}
