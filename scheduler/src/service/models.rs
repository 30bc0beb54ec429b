//! Where model versions are available for inference, from the promotion service: the model availability fact of
//! the placement core's `model` filter (docs/receipts.md, "Model-aware placement").
//!
//! A poller thread asks the promotion service (`Promotion.List`, over TLS with its bearer token) every
//! [`ModelSource::poll`] and hands the writer a new fact when it changed: for each version, the zones whose
//! inference data zone holds it (a location of stage `inference`, brought by a promotion; a withdrawal removes
//! it). The cache is the fact the writer holds. When the service cannot be reached or answers garbage, the fact
//! becomes *unavailable* with the reason: model-bound jobs are then not placed (fail closed), and what runs keeps
//! running (not known to be withdrawn). Without a source the fact is unavailable from the start.
//!
//! The decision to poll: the promotion service has no change stream; at the default 2 s a withdrawal stops the
//! replicas within one poll plus one heartbeat.

use super::writer::{Envelope, Msg, ReplyTx, Req};
use serde_json::Value;
use sovra_domain::ModelAvailability;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

/// The promotion service the scheduler asks where models are.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// Its address, `https://host:port`.
    pub endpoint: String,
    /// The CA of its certificate (PEM).
    pub ca: Option<PathBuf>,
    /// The bearer token of a client with the `viewer` role.
    pub token: String,
    /// How often to ask.
    pub poll: Duration,
    /// The name its certificate carries, when it is not the endpoint's host (`localhost` under `sovra dev`).
    pub domain: Option<String>,
}

/// The fact while nothing is known yet, or without a source.
pub fn unavailable(why: impl Into<String>) -> Arc<ModelAvailability> {
    Arc::new(ModelAvailability { unavailable: Some(why.into()), ..ModelAvailability::default() })
}

/// The fact from the promotion service's version list (`Promotion.List`'s JSON).
pub fn from_versions(list: &Value) -> Result<ModelAvailability, String> {
    let versions = list.as_array().ok_or("the version list is not a JSON array")?;
    let mut out = ModelAvailability::default();
    for v in versions {
        let (Some(model), Some(digest)) = (v["model"].as_str(), v["digest"].as_str()) else {
            return Err("a version without `model` or `digest`".into());
        };
        let zones = out.models.entry(model.to_string()).or_default().entry(digest.to_string()).or_default();
        for l in v["locations"].as_array().into_iter().flatten() {
            if l["stage"] == "inference"
                && !l["promotion"].is_null()
                && let Some(z) = l["zone"].as_str()
            {
                zones.insert(z.to_string());
            }
        }
    }
    Ok(out)
}

async fn fetch(src: &ModelSource) -> Result<ModelAvailability, String> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let mut endpoint = Channel::from_shared(src.endpoint.clone()).map_err(|e| e.to_string())?;
    if src.endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &src.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some(d) = &src.domain {
            tls = tls.domain_name(d.clone());
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint.timeout(Duration::from_secs(10)).connect().await.map_err(|e| format!("{e:?}"))?;
    let mut req = tonic::Request::new(sovra_api::v1::ListModelsRequest { name: String::new() });
    let auth = format!("Bearer {}", src.token).parse().map_err(|_| "the token is not a valid header".to_string())?;
    req.metadata_mut().insert("authorization", auth);
    let doc = sovra_api::v1::promotion_client::PromotionClient::new(channel)
        .list(req)
        .await
        .map_err(|e| format!("{}: {}", e.code(), e.message()))?
        .into_inner();
    let list: Value = serde_json::from_str(&doc.json).map_err(|e| format!("the answer is not JSON: {e}"))?;
    from_versions(&list)
}

/// Starts the poller: it runs until the writer is gone.
pub(crate) fn spawn(src: ModelSource, tx: SyncSender<Msg>) -> Result<(), String> {
    std::thread::Builder::new()
        .name("sovra-models".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            loop {
                let facts = match rt.block_on(fetch(&src)) {
                    Ok(f) => Arc::new(f),
                    Err(e) => {
                        tracing::warn!(endpoint = %src.endpoint, error = %e, "model availability unknown");
                        unavailable(format!("the promotion service at {} cannot be asked ({e})", src.endpoint))
                    }
                };
                // Sent every time (the writer ignores a fact equal to the one it holds), so that a stopped writer
                // ends the poller at once.
                let msg = Msg::Work(Envelope { req: Req::Models { facts }, reply: ReplyTx::Unit(None) });
                if let Err(TrySendError::Disconnected(_)) = tx.try_send(msg) {
                    return;
                }
                std::thread::sleep(src.poll);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the model availability poller: {e}"))
}
