//! The `service:` section of the promotion config: how `sovra-promotion serve` listens (TLS always), and its
//! clients — each identified by a client certificate name (mTLS, subject CN or a DNS SAN) or by the SHA-256 of a
//! bearer token — with the roles each may use. See docs/promotion-service.md.

use std::fmt;
use std::path::{Path, PathBuf};

/// What a client may do through the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Push signed models into a training data zone.
    Pusher,
    /// Record approvals (signed on the client with the approver's own key).
    Approver,
    /// Promote (and evaluate promotions).
    Promoter,
    /// Record break-glass exceptions (signed on the client with an admin key).
    ExceptionAdmin,
    /// Record withdrawals of a version from a data zone (signed on the client with an admin key).
    Withdrawer,
    /// Verify and export the audit log.
    Auditor,
    /// Read: status, list, pull, verify, dry-run promotions.
    Viewer,
}

impl Role {
    /// Every role, in the order the docs list them.
    pub const ALL: [Role; 7] = [
        Role::Pusher,
        Role::Approver,
        Role::Promoter,
        Role::ExceptionAdmin,
        Role::Withdrawer,
        Role::Auditor,
        Role::Viewer,
    ];

    /// The name written in the config (`exception-admin`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pusher => "pusher",
            Role::Approver => "approver",
            Role::Promoter => "promoter",
            Role::ExceptionAdmin => "exception-admin",
            Role::Withdrawer => "withdrawer",
            Role::Auditor => "auditor",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's TLS files.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The server certificate (PEM chain).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that client certificates must chain to. Without it only bearer tokens identify clients.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// One client of the service.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Who it is: recorded as the actor of every audited call it makes.
    pub name: String,
    /// The client certificate's subject CN (or one of its DNS SANs) that identifies it.
    #[serde(default)]
    pub cert: Option<String>,
    /// The SHA-256 (64 hex digits) of its bearer token; `sovra-promotion token` prints a new token and its hash.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// Its roles.
    pub roles: Vec<Role>,
}

/// The `service:` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Address to listen on (default `127.0.0.1:7443`); `--listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// TLS: the service never serves plaintext.
    pub tls: TlsFiles,
    /// Where uploads are staged until they verify (default: the system temp directory).
    #[serde(default)]
    pub staging: Option<PathBuf>,
    /// Largest upload in bytes (model files and bundle together; default 1 TiB); a larger push is refused.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// The clients and their roles.
    #[serde(default)]
    pub clients: Vec<Client>,
}

fn default_listen() -> String {
    "127.0.0.1:7443".into()
}

fn default_max_upload() -> u64 {
    1 << 40
}

impl ServiceSection {
    /// Makes the paths absolute (relative to `base`, the config's folder) and checks the clients: each has a
    /// certificate name or a token hash (64 hex digits), at least one role, and a distinct name, certificate name
    /// and token. Errors start with the field below `service.` followed by a backquote.
    pub fn resolve(mut self, base: &Path) -> Result<ServiceSection, String> {
        let at = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        self.tls.cert = at(&self.tls.cert);
        self.tls.key = at(&self.tls.key);
        self.tls.client_ca = self.tls.client_ca.as_deref().map(at);
        self.staging = self.staging.as_deref().map(at);
        for (i, c) in self.clients.iter_mut().enumerate() {
            if c.name.trim().is_empty() {
                return Err(format!("clients[{i}].name`: give the client a name (it is the audited actor)"));
            }
            if c.cert.is_none() && c.token_sha256.is_none() {
                return Err(format!(
                    "clients[{i}]`: `{}` has neither `cert` (a client certificate name) nor `token_sha256`",
                    c.name
                ));
            }
            if let Some(h) = &mut c.token_sha256 {
                *h = h.trim().trim_start_matches("sha256:").to_ascii_lowercase();
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "clients[{i}].token_sha256`: not a SHA-256 (64 hex digits); `sovra-promotion token` prints one"
                    ));
                }
            }
            if c.roles.is_empty() {
                return Err(format!(
                    "clients[{i}].roles`: `{}` has no role (roles: {})",
                    c.name,
                    Role::ALL.map(Role::as_str).join(", ")
                ));
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            for o in &self.clients[..i] {
                let same_cert = c.cert.is_some() && c.cert == o.cert;
                let same_token = c.token_sha256.is_some() && c.token_sha256 == o.token_sha256;
                if c.name == o.name || same_cert || same_token {
                    return Err(format!(
                        "clients[{i}]`: `{}` repeats the name, certificate or token of `{}`; each must be distinct",
                        c.name, o.name
                    ));
                }
            }
        }
        Ok(self)
    }
}
