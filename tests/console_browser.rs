//! The web console in a real browser (docs/console.md): the real `sovra dev` (scheduler, node daemons with fake
//! GPUs), the real promotion service (`sovra-promotion serve`) holding a model promoted under a break-glass
//! exception, and `sovra console` reading both; then headless Chromium driven by playwright-core
//! (tests/console/console.mjs) checks what a user sees and takes the screenshots of docs/console/.
//!
//! Needs `node`, Debian's `chromium` and `playwright-core` (`.ci/run` installs them; the folder holding its
//! node_modules is `SOVRA_PLAYWRIGHT_DIR`, default `~/.cache/sovra-playwright`). Under CI (`CI` set) a missing
//! one fails the test; elsewhere the test says so and skips, as tests/model_signing_interop.rs does.

#[path = "support/service.rs"]
mod service;
#[path = "support/registry_tour.rs"]
mod support;

use serde_json::Value;
use service::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const INSTALL: &str = "apt-get install -y chromium nodejs npm && (mkdir -p ~/.cache/sovra-playwright && cd \
                       ~/.cache/sovra-playwright && npm install playwright-core@1.65.2)";
const CONSOLE_TOKEN: &str = "console-token-0123456789";
const DEV_TOKEN: &str = "dev-token-0123456789abcdef";
const VIEWER: (&str, &str) = ("console-ci", "tok-console-0123456789");

/// node, chromium and the playwright-core folder; `None` (after saying why) when the test is skipped.
fn tools() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
    };
    let dir = std::env::var_os("SOVRA_PLAYWRIGHT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sovra-playwright"));
    let chromium = std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| on_path("chromium"));
    let missing = match (on_path("node"), chromium, dir.join("node_modules/playwright-core").is_dir()) {
        (Some(n), Some(c), true) => return Some((n, c, dir)),
        (None, _, _) => "node",
        (_, None, _) => "chromium",
        _ => "playwright-core (in SOVRA_PLAYWRIGHT_DIR/node_modules)",
    };
    assert!(!ci, "{missing} is not installed; CI must install the browser test's tools: {INSTALL}");
    println!("skipped: {missing} is not installed ({INSTALL})");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sovra dev` on free ports; returns it, the scheduler URL, the CA and its console's URL once it printed them.
fn start_dev(data: &Path) -> (Running, String, PathBuf, String) {
    let (api, metrics, promo, console) = (free_port(), free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["dev", "--data"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{api}"), "--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--promotion-listen", &format!("127.0.0.1:{promo}")])
        .args(["--console-listen", &format!("127.0.0.1:{console}"), "--token", DEV_TOKEN])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut console_url = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("console:") {
            console_url = rest.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let console_url = console_url.expect("sovra dev prints its console's URL");
    (Running(child), format!("https://127.0.0.1:{api}"), data.join("tls/ca.pem"), console_url)
}

/// A raw HTTP/1.1 request; returns the status code.
fn http_status(url: &str, method: &str, auth: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(s, "{method} /zones HTTP/1.1\r\nHost: {hostport}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn sovra_against(server: &str, ca: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(args)
        .env("SOVRA_SERVER", server)
        .env("SOVRA_TOKEN", DEV_TOKEN)
        .env("SOVRA_CA", ca)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_viewer_sees_where_everything_runs_and_why_in_a_real_browser() {
    let Some((node, chromium, playwright)) = tools() else { return };
    // The promotion service with a model promoted to inference under an exception to the approvals gate.
    let t = setup();
    let mut cfg = std::fs::read_to_string(t.p("service.yaml")).unwrap();
    cfg.push_str(&format!(
        "    - {{name: {}, token_sha256: {}, roles: [viewer, auditor]}}\n",
        VIEWER.0,
        hash(VIEWER.1)
    ));
    std::fs::write(t.p("service.yaml"), cfg).unwrap();
    let s = start(&t);
    ok(as_token(&t, &s, "pusher-ci", &push_args()));
    ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "registry"]));
    let grant = ["exception", "grant", "--model", "radiology", "--gate", "approvals", "--ttl", "1h"];
    let mut grant = grant.to_vec();
    grant.extend(["--reason", "incident 9: radiologists need the fix tonight", "--key", "keys/secops.pem"]);
    ok(as_token(&t, &s, "secops-ci", &grant));
    let promoted =
        ok(as_token(&t, &s, "promoter-ci", &["model", "promote", "radiology", "--to", "inference", "-o", "json"]));
    let p: Value = serde_json::from_str(&promoted).unwrap();
    assert_eq!(p["status"], "promoted", "{p}");

    // The scheduler (sovra dev) with a job that waits.
    let (_dev, api, ca, dev_console) = start_dev(&t.p("dev"));
    std::fs::write(
        t.p("wide.yaml"),
        "name: fr-health-wide\nkind: training\nresidency: fr-health\nreplicas: 4\nresources: {gpus: 8, gpu_models: \
         [H100-80GB], cpu_milli: 64000, memory_mib: 524288}\n",
    )
    .unwrap();
    let first = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/job.yaml");
    sovra_against(&api, &ca, &["submit", first.to_str().unwrap()]);
    sovra_against(&api, &ca, &["submit", t.p("wide.yaml").to_str().unwrap()]);
    let jobs: Value = serde_json::from_str(&sovra_against(&api, &ca, &["jobs", "-o", "json"])).unwrap();
    let list = jobs.as_array().or_else(|| jobs["jobs"].as_array()).unwrap_or_else(|| panic!("{jobs}"));
    let waiting =
        list.iter().find(|j| j["state"] == "pending").unwrap_or_else(|| panic!("no job waits: {jobs}")).clone();
    let reason = waiting["explanation_summary"].as_str().unwrap().to_string();
    assert!(!reason.is_empty(), "{waiting}");

    // `sovra dev`'s own console answers, and only with the login.
    assert_eq!(http_status(&dev_console, "GET", None), 401);
    assert_eq!(http_status(&dev_console, "GET", Some(&format!("Bearer {DEV_TOKEN}"))), 200);
    assert_eq!(http_status(&dev_console, "POST", Some(&format!("Bearer {DEV_TOKEN}"))), 405);

    // A simulator plot.
    let plots = t.p("plots");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .arg("replay")
        .arg(repo.join("examples/scenario.yaml"))
        .arg("--out")
        .arg(&plots)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The console over both.
    let port = free_port();
    let console = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["console", "--listen", &format!("127.0.0.1:{port}"), "--refresh-ms", "500"])
        .args(["--scheduler", &api, "--scheduler-token", DEV_TOKEN, "--scheduler-ca"])
        .arg(&ca)
        .args(["--promotion-server", &s.url, "--promotion-token", VIEWER.1, "--promotion-ca"])
        .arg(t.p("tls/ca.pem"))
        .arg("--plots")
        .arg(&plots)
        .env("SOVRA_CONSOLE_TOKEN", CONSOLE_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut console = Running(console);
    let mut line = String::new();
    BufReader::new(console.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the console prints its URL");
    let url = url.trim_end_matches('/').to_string();

    // Screenshots go to a scratch directory, so that a test run leaves the tree clean; set
    // SOVRA_CONSOLE_SCREENSHOTS=docs/console to refresh the ones docs/console.md shows.
    let scratch = tempfile::tempdir().unwrap();
    let shots = match std::env::var_os("SOVRA_CONSOLE_SCREENSHOTS") {
        Some(d) => repo.join(d),
        None => scratch.path().to_path_buf(),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let o = Command::new(node)
        .arg(repo.join("tests/console/console.mjs"))
        .env("CONSOLE_URL", &url)
        .env("CONSOLE_TOKEN", CONSOLE_TOKEN)
        .env("CHROMIUM", chromium)
        .env("PLAYWRIGHT_DIR", playwright)
        .env("SHOTS", &shots)
        .env("EXPECT_JOB", waiting["id"].to_string())
        .env("EXPECT_REASON", &reason)
        .env("EXPECT_MODEL", "radiology")
        .env("EXPECT_CHAIN", "fr-par-secnum/training,fr-par-secnum/registry,fr-par-secnum/inference")
        .env("US_ZONE", "de-fra-hyperscaler")
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "the browser checks failed:\n{out}\n{err}");
    let r: Value = serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(r["ok"], true);
    assert!(r["checks"].as_u64().unwrap() > 100, "{r}");
}
