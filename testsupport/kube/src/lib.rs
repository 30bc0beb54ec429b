//! Test only: a real Kubernetes control plane on loopback — etcd, kube-apiserver and (on demand) kube-scheduler,
//! built from the Go modules pinned in `tests/k8s/` (see `tests/k8s/build.sh`) — for Sovra's Kubernetes tests.
//!
//! There is no kubelet and no controller manager: tests create Node objects (with GPU capacity and pool labels,
//! [`nodes`]) and Pods, and assert on the Bindings and Events the real components produce. Certificates are made on
//! the spot ([`pki`]); identities are client certificates (CN = user, O = groups). kube-apiserver runs with RBAC
//! and its bootstrap roles (so kube-scheduler's `system:kube-scheduler` identity has its usual rights); the
//! `ServiceAccount` admission plugin is off, since no controller creates the `default` service accounts.

pub mod nodes;
pub mod pki;
pub mod process;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use pki::Pki;
use process::{Proc, free_port};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the control plane could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The binaries could not be found or built.
    #[error("Kubernetes test binaries: {0}")]
    Binaries(String),
    /// Certificates.
    #[error("test PKI: {0}")]
    Pki(String),
    /// A file or socket.
    #[error("{0}")]
    Io(String),
    /// A component did not start or did not become ready.
    #[error("starting the control plane: {0}")]
    Start(String),
}

/// Where the three binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// etcd.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kube-scheduler.
    pub scheduler: PathBuf,
}

impl Binaries {
    /// `$SOVRA_K8S_BIN` when set, else the cache that `tests/k8s/build.sh` fills (building them on first use, under
    /// a lock, so concurrent test binaries build once).
    pub fn locate() -> Result<Binaries, HarnessError> {
        let dir = match std::env::var_os("SOVRA_K8S_BIN") {
            Some(d) => PathBuf::from(d),
            None => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/k8s/build.sh");
                let out = std::process::Command::new("bash")
                    .arg(&script)
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .map_err(|e| HarnessError::Binaries(format!("running {}: {e}", script.display())))?;
                if !out.status.success() {
                    return Err(HarnessError::Binaries(format!(
                        "{} failed ({}); it needs Go 1.26+ and the Go module proxy",
                        script.display(),
                        out.status
                    )));
                }
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        let b = Binaries {
            etcd: dir.join("etcd"),
            apiserver: dir.join("kube-apiserver"),
            scheduler: dir.join("kube-scheduler"),
        };
        for p in [&b.etcd, &b.apiserver, &b.scheduler] {
            if !p.is_file() {
                return Err(HarnessError::Binaries(format!(
                    "{} is missing; run tests/k8s/build.sh (or point SOVRA_K8S_BIN at a directory holding etcd, \
                     kube-apiserver and kube-scheduler)",
                    p.display()
                )));
            }
        }
        Ok(b)
    }
}

/// A running etcd + kube-apiserver (+ kube-scheduler once started), all on loopback, stopped on drop.
pub struct ControlPlane {
    // Field order is drop order: the scheduler and the API server go before etcd, the directory last.
    scheduler: Option<Proc>,
    apiserver: Proc,
    etcd: Proc,
    bins: Binaries,
    pki: Pki,
    url: String,
    dir: tempfile::TempDir,
}

fn write(path: &Path, text: &str) -> Result<(), HarnessError> {
    std::fs::write(path, text).map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the API serves (namespaces and RBAC bootstrap roles exist).
    pub async fn start() -> Result<ControlPlane, HarnessError> {
        Self::start_with(&[]).await
    }

    /// As [`ControlPlane::start`], with extra kube-apiserver flags.
    pub async fn start_with(extra_apiserver_args: &[&str]) -> Result<ControlPlane, HarnessError> {
        let bins = Binaries::locate()?;
        let dir = tempfile::Builder::new()
            .prefix("sovra-k8s-")
            .tempdir()
            .map_err(|e| HarnessError::Io(format!("temp dir: {e}")))?;
        let d = dir.path();
        let pki = Pki::new()?;
        write(&d.join("ca.crt"), pki.ca_pem())?;
        let serving = pki.server(&["kubernetes", "kubernetes.default", "kubernetes.default.svc"])?;
        write(&d.join("apiserver.crt"), &serving.cert_pem)?;
        write(&d.join("apiserver.key"), &serving.key_pem)?;
        let (sa_key, sa_pub) = Pki::service_account_keys()?;
        write(&d.join("sa.key"), &sa_key)?;
        write(&d.join("sa.pub"), &sa_pub)?;

        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = vec![
            "--name=default".into(),
            format!("--data-dir={}", d.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--log-level=warn".into(),
            "--quota-backend-bytes=4294967296".into(),
        ];
        let etcd = Proc::spawn("etcd", &bins.etcd, &etcd_args, &d.join("etcd.log"))?;
        let mut api_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", d.join("certs").display()),
            format!("--tls-cert-file={}", d.join("apiserver.crt").display()),
            format!("--tls-private-key-file={}", d.join("apiserver.key").display()),
            format!("--client-ca-file={}", d.join("ca.crt").display()),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", d.join("sa.pub").display()),
            format!("--service-account-signing-key-file={}", d.join("sa.key").display()),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            // The kubernetes Service endpoint would be 127.0.0.1, which the reconciler refuses; nothing needs it.
            "--endpoint-reconciler-type=none".into(),
            "--v=1".into(),
        ];
        api_args.extend(extra_apiserver_args.iter().map(|s| s.to_string()));
        let apiserver = Proc::spawn("kube-apiserver", &bins.apiserver, &api_args, &d.join("apiserver.log"))?;
        let cp = ControlPlane {
            scheduler: None,
            apiserver,
            etcd,
            bins,
            pki,
            url: format!("https://127.0.0.1:{api_port}"),
            dir,
        };
        cp.write_kubeconfig("admin", "system:admin", &["system:masters"])?;
        let mut cp = cp;
        cp.wait_ready(Duration::from_secs(120)).await?;
        Ok(cp)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), HarnessError> {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            self.etcd.check_alive()?;
            self.apiserver.check_alive()?;
            if let Ok(client) = self.client().await {
                let ns = Api::<Namespace>::all(client.clone()).get("default").await;
                let crb = Api::<ClusterRoleBinding>::all(client).get("system:kube-scheduler").await;
                match (ns, crb) {
                    (Ok(_), Ok(_)) => return Ok(()),
                    (a, b) => last = format!("{:?} / {:?}", a.err(), b.err()),
                }
            }
            if start.elapsed() > limit {
                return Err(HarnessError::Start(format!(
                    "kube-apiserver not ready after {limit:?} ({last}); the end of its log:\n{}",
                    self.apiserver.log_tail(40)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The working directory (certificates, kubeconfigs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The test CA (which also signs the API server's serving certificate).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Writes a kubeconfig for the identity `user` in `groups` at `<dir>/<file>.kubeconfig` and returns its path.
    pub fn write_kubeconfig(&self, file: &str, user: &str, groups: &[&str]) -> Result<PathBuf, HarnessError> {
        let ck = self.pki.client(user, groups)?;
        let d = self.dir.path();
        let (crt, key) = (d.join(format!("{file}.crt")), d.join(format!("{file}.key")));
        write(&crt, &ck.cert_pem)?;
        write(&key, &ck.key_pem)?;
        let kc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.url, "certificate-authority": d.join("ca.crt")}}],
            "users": [{"name": file, "user": {"client-certificate": crt, "client-key": key}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": file}}],
            "current-context": "test",
        });
        let path = d.join(format!("{file}.kubeconfig"));
        write(&path, &serde_json::to_string_pretty(&kc).unwrap_or_default())?;
        Ok(path)
    }

    /// The admin kubeconfig (`system:admin` in `system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// A kube-rs client from a kubeconfig file.
    pub async fn client_from(path: &Path) -> Result<kube::Client, HarnessError> {
        let kc = Kubeconfig::read_from(path).map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))?;
        kube::Client::try_from(config).map_err(|e| HarnessError::Io(format!("kube client: {e}")))
    }

    /// An admin client.
    pub async fn client(&self) -> Result<kube::Client, HarnessError> {
        Self::client_from(&self.admin_kubeconfig()).await
    }

    /// A client acting as `user` in `groups`.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<kube::Client, HarnessError> {
        let file = format!("user-{}", user.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        Self::client_from(&self.write_kubeconfig(&file, user, groups)?).await
    }

    /// Starts kube-scheduler with `config` (a `KubeSchedulerConfiguration`; its `clientConnection.kubeconfig` is set
    /// to the scheduler's identity `system:kube-scheduler`, its other client settings kept, and leader election is
    /// turned off) and waits until it has
    /// started its profiles.
    pub async fn start_scheduler(&mut self, mut config: serde_yaml_ng::Value) -> Result<(), HarnessError> {
        self.stop_scheduler();
        let kc = self.write_kubeconfig("scheduler", "system:kube-scheduler", &[])?;
        let map = config
            .as_mapping_mut()
            .ok_or_else(|| HarnessError::Start("the scheduler configuration is not a mapping".into()))?;
        // Other clientConnection settings (qps, burst) are kept.
        let conn = map.entry("clientConnection".into()).or_insert_with(|| serde_yaml_ng::Mapping::new().into());
        conn["kubeconfig"] = kc.display().to_string().into();
        map.insert(
            "leaderElection".into(),
            serde_yaml_ng::to_value(serde_json::json!({"leaderElect": false})).unwrap_or_default(),
        );
        let path = self.dir.path().join("scheduler-config.yaml");
        write(&path, &serde_yaml_ng::to_string(&config).map_err(|e| HarnessError::Io(e.to_string()))?)?;
        let args = vec![format!("--config={}", path.display()), "--secure-port=0".into(), "--v=2".into()];
        let log = self.dir.path().join("scheduler.log");
        let mut p = Proc::spawn("kube-scheduler", &self.bins.scheduler, &args, &log)?;
        let start = Instant::now();
        loop {
            p.check_alive()?;
            // kube-scheduler logs this once its informers have synced and it starts scheduling.
            if p.log().contains("Attempting to acquire leader lease")
                || p.log().contains("Starting Kubernetes Scheduler")
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(HarnessError::Start(format!("kube-scheduler did not start:\n{}", p.log_tail(40))));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.scheduler = Some(p);
        Ok(())
    }

    /// Stops kube-scheduler, if running.
    pub fn stop_scheduler(&mut self) {
        if let Some(mut p) = self.scheduler.take() {
            p.kill();
        }
    }

    /// kube-scheduler's log so far (empty when it never ran).
    pub fn scheduler_log(&self) -> String {
        self.scheduler.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// kube-apiserver's log so far.
    pub fn apiserver_log(&self) -> String {
        self.apiserver.log()
    }
}

/// The `KubeSchedulerConfiguration` of the repository's `deploy/scheduler-config.yaml` (the ConfigMap's
/// `scheduler-config.yaml`), with every extender pointed at `extender_url` (its `urlPrefix`), and its TLS file
/// paths replaced by `tls` when given (`caFile`, `certFile`, `keyFile`), or HTTPS turned off when not.
pub fn deploy_scheduler_config(
    extender_url: &str,
    tls: Option<(&Path, &Path, &Path)>,
) -> Result<serde_yaml_ng::Value, HarnessError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/scheduler-config.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))?;
    let cm: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))?;
    let inner = cm["data"]["scheduler-config.yaml"]
        .as_str()
        .ok_or_else(|| HarnessError::Io(format!("{}: no data.scheduler-config.yaml", path.display())))?;
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(inner).map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))?;
    if let Some(exts) = config["extenders"].as_sequence_mut() {
        for e in exts {
            e["urlPrefix"] = extender_url.into();
            match tls {
                Some((ca, cert, key)) => {
                    e["enableHTTPS"] = true.into();
                    e["tlsConfig"] = serde_yaml_ng::to_value(serde_json::json!({
                        "caFile": ca, "certFile": cert, "keyFile": key,
                    }))
                    .unwrap_or_default();
                }
                None => {
                    e["enableHTTPS"] = false.into();
                    if let Some(m) = e.as_mapping_mut() {
                        m.remove("tlsConfig");
                    }
                }
            }
        }
    }
    Ok(config)
}
