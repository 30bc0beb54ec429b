//! Who is calling: a client certificate (verified by TLS against `service.tls.client_ca`; its subject CN or a DNS
//! SAN names a client) or a bearer token (its SHA-256 compared in constant time with every client's
//! `token_sha256`), mapped to the roles of `service.clients` in the promotion config.

use sha2::{Digest, Sha256};
use sovra_promotion::service_config::{Client, Role};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::transport::CertificateDer;

/// An identified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client's name in the config: the audited actor.
    pub name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// How it was identified: `certificate` or `token`.
    pub by: &'static str,
}

impl Caller {
    /// Ok when the caller has `role`; PERMISSION_DENIED naming the role otherwise.
    pub fn require(&self, role: Role, what: &str) -> Result<(), Status> {
        self.require_any(&[role], what)
    }

    /// Ok when the caller has one of `roles`; PERMISSION_DENIED naming them otherwise.
    pub fn require_any(&self, roles: &[Role], what: &str) -> Result<(), Status> {
        if roles.iter().any(|r| self.roles.contains(r)) {
            return Ok(());
        }
        let need: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let has: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        Err(Status::permission_denied(format!(
            "{what} needs the role `{}`; client `{}` has {} (service.clients in the promotion config)",
            need.join("` or `"),
            self.name,
            if has.is_empty() { "none".to_string() } else { has.join(", ") }
        )))
    }
}

/// The names a client certificate carries: its subject CN(s), then its DNS SANs.
pub fn certificate_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
}

/// The SHA-256 (hex) of a bearer token, as `token_sha256` holds it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Identifies the caller of a request from its verified client certificate chain and `authorization` header.
/// A certificate naming a configured client wins; otherwise the token must match one. UNAUTHENTICATED says what
/// was presented and what is missing.
pub fn identify(
    clients: &[Client],
    certs: Option<&[CertificateDer<'_>]>,
    authorization: Option<&str>,
) -> Result<Caller, Status> {
    let cert_names = certs.and_then(|c| c.first()).map(certificate_names).unwrap_or_default();
    for name in &cert_names {
        if let Some(c) = clients.iter().find(|c| c.cert.as_deref() == Some(name.as_str())) {
            return Ok(Caller { name: c.name.clone(), roles: c.roles.clone(), by: "certificate" });
        }
    }
    if let Some(h) = authorization {
        let Some(token) = h.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(Status::unauthenticated(
                "the authorization header is not `Bearer TOKEN`; pass the token with --token or SOVRA_PROMOTION_TOKEN",
            ));
        };
        let presented = token_hash(token);
        // Every client is compared (no early exit), each in constant time.
        let mut found: Option<&Client> = None;
        for c in clients {
            if let Some(h) = &c.token_sha256
                && bool::from(h.as_bytes().ct_eq(presented.as_bytes()))
            {
                found = Some(c);
            }
        }
        return match found {
            Some(c) => Ok(Caller { name: c.name.clone(), roles: c.roles.clone(), by: "token" }),
            None => Err(Status::unauthenticated(
                "the bearer token matches no client of the promotion service (service.clients[].token_sha256)",
            )),
        };
    }
    if !cert_names.is_empty() {
        return Err(Status::unauthenticated(format!(
            "the client certificate ({}) names no client of the promotion service (service.clients[].cert)",
            cert_names.join(", ")
        )));
    }
    Err(Status::unauthenticated(
        "no client certificate and no bearer token: give --cert/--key or --token (SOVRA_PROMOTION_TOKEN)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, token: &str, roles: Vec<Role>) -> Client {
        Client { name: name.into(), cert: None, token_sha256: Some(token_hash(token)), roles }
    }

    #[test]
    fn tokens_map_to_clients_and_roles() {
        let clients = vec![client("ci", "t1", vec![Role::Pusher]), client("ops", "t2", vec![Role::Viewer])];
        let c = identify(&clients, None, Some("Bearer t2")).unwrap();
        assert_eq!((c.name.as_str(), c.by), ("ops", "token"));
        assert!(c.require(Role::Viewer, "status").is_ok());
        let e = c.require(Role::Promoter, "promote").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("`promoter`"), "{}", e.message());
        for bad in [Some("Bearer nope"), Some("Basic x"), Some("Bearer "), None] {
            assert_eq!(identify(&clients, None, bad).unwrap_err().code(), tonic::Code::Unauthenticated);
        }
    }
}
