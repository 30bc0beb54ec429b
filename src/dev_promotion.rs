//! The promotion service inside `sovra dev`: the same `sovra-promotion serve` code (promotion-server/), on the dev
//! TLS certificates, over a registry in `DATA/promotion/`, with keys generated there on first start (trainer,
//! alice, bob, secops, service — the names of examples/promotion.yaml) and one bearer-token client holding every
//! role. It prints the `SOVRA_PROMOTION_*` exports that point `sovra model …` at it.
//!
//! The [`Promoter`] is built before the async runtime starts and dropped after it stops: the registry's blob store
//! owns a runtime of its own, which must be neither created nor dropped on an async worker.

use sovra_domain::ClusterConfig;
use sovra_promotion::service_config::{Client, Role};
use sovra_promotion::{Promoter, PromotionConfig};
use sovra_registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The promotion config's template: the example, whose paths are relative to the file.
const EXAMPLE_PROMOTION: &str = include_str!("../examples/promotion.yaml");

/// The dev promotion service, ready to serve.
pub(crate) struct DevPromotion {
    /// Where its keys, config and registry are.
    pub dir: PathBuf,
    /// The promoter the service runs on.
    pub promoter: Arc<Promoter>,
    /// The token of its one client.
    pub token: String,
}

fn write_new(path: &Path, text: &str, private: bool) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: cannot make it private: {e}", path.display()))?;
    }
    Ok(())
}

/// Keys, config and registry under `data/promotion` (kept across restarts with the same `--data`), over the dev
/// cluster file `cluster`. Blocking: call it outside the async runtime.
pub(crate) fn prepare(data: &Path, cluster: &Path, token: &str) -> Result<DevPromotion, String> {
    let dir = data.join("promotion");
    std::fs::create_dir_all(dir.join("keys")).map_err(|e| format!("{}: {e}", dir.display()))?;
    for k in ["trainer", "alice", "bob", "carol", "secops", "service"] {
        let private = dir.join(format!("keys/{k}.pem"));
        if !private.exists() {
            let (sk, pk) = sovra_oms::keys::generate_p256().map_err(|e| e.to_string())?;
            write_new(&dir.join(format!("keys/{k}.pub.pem")), &pk, false)?;
            write_new(&private, &sk, true)?;
        }
    }
    // The dev scheduler's receipt key (created here if new): its public half is the config's scheduler key, so
    // that receipts of jobs run under `sovra dev` prove a model's training zone.
    let receipt_key = sovra_scheduler::service::receipts::load_key(None, Some(&data.join("state")))?
        .ok_or_else(|| "the dev scheduler has no receipt key".to_string())?;
    let scheduler_pub = dir.join("keys/scheduler.pub.pem");
    std::fs::write(&scheduler_pub, receipt_key.public_key().to_pem())
        .map_err(|e| format!("{}: cannot write: {e}", scheduler_pub.display()))?;
    let text = EXAMPLE_PROMOTION.replace("cluster: cluster.yaml", &format!("cluster: {}", cluster.display()));
    let config_path = dir.join("promotion.yaml");
    std::fs::write(&config_path, text).map_err(|e| format!("{}: cannot write: {e}", config_path.display()))?;
    let config = PromotionConfig::load(&config_path).map_err(|e| e.to_string())?;
    let cluster = ClusterConfig::load(cluster).map_err(|e| e.to_string())?;
    let registry = Registry::open(&dir.join("registry")).map_err(|e| e.to_string())?;
    let promoter = Promoter::new(registry, config, cluster).map_err(|e| e.to_string())?;
    Ok(DevPromotion { dir, promoter: Arc::new(promoter), token: token.to_string() })
}

impl DevPromotion {
    /// Serves it on `listener` with the dev server certificate `(cert, key)` until the process ends.
    pub(crate) fn spawn(&self, listener: tokio::net::TcpListener, cert: PathBuf, key: PathBuf) {
        let opts = sovra_promotion_server::ServeOptions {
            cert,
            key,
            client_ca: None,
            staging: self.dir.join("staging"),
            max_upload: 1 << 40,
            clients: vec![Client {
                name: "dev".into(),
                cert: None,
                token_sha256: Some(sovra_promotion_server::auth::token_hash(&self.token)),
                roles: Role::ALL.to_vec(),
            }],
        };
        let _ = std::fs::create_dir_all(&opts.staging);
        let promoter = self.promoter.clone();
        tokio::spawn(async move {
            if let Err(e) = sovra_promotion_server::serve(listener, promoter, opts, std::future::pending()).await {
                eprintln!("error: the promotion service: {e}");
            }
        });
    }

    /// Lists the versions through the service on `port` (the tour's check that it answers over TLS).
    pub(crate) async fn list(&self, port: u16, ca: &Path) -> Result<usize, crate::Failure> {
        use tonic::transport::{Certificate, Channel, ClientTlsConfig};
        let fail = |m: String| crate::Failure { code: 1, message: format!("the promotion service: {m}") };
        let pem = std::fs::read(ca).map_err(|e| fail(format!("{}: {e}", ca.display())))?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)).domain_name("localhost");
        let channel = Channel::from_shared(format!("https://localhost:{port}"))
            .map_err(|e| fail(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| fail(e.to_string()))?
            .connect()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut req = tonic::Request::new(sovra_api::v1::ListModelsRequest { name: String::new() });
        let auth = format!("Bearer {}", self.token).parse().map_err(|_| fail("the token is not a header".into()))?;
        req.metadata_mut().insert("authorization", auth);
        let doc = sovra_api::v1::promotion_client::PromotionClient::new(channel)
            .list(req)
            .await
            .map_err(|e| fail(e.message().to_string()))?
            .into_inner();
        let v: serde_json::Value = serde_json::from_str(&doc.json).map_err(|e| fail(e.to_string()))?;
        Ok(v.as_array().map(Vec::len).unwrap_or(0))
    }

    /// The shell exports that point `sovra model …` at the service on `port`.
    pub(crate) fn exports(&self, port: u16, ca: &Path) -> String {
        format!(
            "export SOVRA_PROMOTION_SERVER=https://localhost:{port} SOVRA_PROMOTION_CA={} SOVRA_PROMOTION_TOKEN={}",
            ca.display(),
            self.token
        )
    }
}
