//! Telling TLS failures apart, for the node daemon and the `sovra` CLI.
//!
//! A TLS connection can fail for reasons that need different fixes, and "transport error" or "cannot reach the
//! scheduler" names none of them. Two halves:
//!
//! - **Local files first** ([`check_ca`], [`check_identity`]): before connecting, the CA file must hold at least one
//!   parsable certificate, and a client key must be the key of its certificate (rustls compares the public keys).
//!   These need no server, and say which file is wrong.
//! - **Then the connection** ([`diagnose`]): the error a failed connection or call returns is a chain (tonic →
//!   hyper → `std::io::Error` → `rustls::Error`); it is walked to the first cause that says what happened, and
//!   classified as a [`ConnectProblem`]: nothing listening, the server's certificate signed by another CA, issued
//!   for another host name, or refused for another reason, our certificate refused by the server, or a server that
//!   does not speak TLS.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::error::Error as StdError;

/// A local TLS file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsFileError {
    /// The CA file holds no usable certificate.
    #[error("{file}: not a CA certificate: {detail}; give the scheduler's CA file (ca.pem, PEM `CERTIFICATE`)")]
    BadCa {
        /// The CA file.
        file: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The certificate file holds no usable certificate.
    #[error("{file}: not a certificate: {detail}; give this node's certificate (PEM `CERTIFICATE`)")]
    BadCert {
        /// The certificate file.
        file: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The key file holds no usable private key.
    #[error("{file}: not a private key: {detail}; give this node's key (PEM `PRIVATE KEY`)")]
    BadKey {
        /// The key file.
        file: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The key is not the key of the certificate.
    #[error(
        "{key} does not match {cert}: the key is not the private key of that certificate's public key; give the \
         key issued with it (e.g. nodes/<node>.pem with nodes/<node>-key.pem)"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| format!("unreadable PEM ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM `CERTIFICATE` block in it".into());
    }
    Ok(certs)
}

/// Checks that `pem` (the file `file`) holds at least one certificate that parses as X.509.
pub fn check_ca(pem: &[u8], file: &str) -> Result<(), TlsFileError> {
    let bad = |detail: String| TlsFileError::BadCa { file: file.into(), detail };
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in certs(pem).map_err(bad)?.into_iter().enumerate() {
        roots.add(c).map_err(|e| bad(format!("certificate {} does not parse ({e})", i + 1)))?;
    }
    Ok(())
}

/// Checks a client identity: the certificate file holds a certificate, the key file a private key, and the key is
/// the certificate's (its public key is the certificate's public key).
pub fn check_identity(cert_pem: &[u8], key_pem: &[u8], cert_file: &str, key_file: &str) -> Result<(), TlsFileError> {
    let chain = certs(cert_pem).map_err(|detail| TlsFileError::BadCert { file: cert_file.into(), detail })?;
    let bad_key = |detail: String| TlsFileError::BadKey { file: key_file.into(), detail };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad_key(format!("no PEM private key in it ({e})")))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err(TlsFileError::KeyMismatch { cert: cert_file.into(), key: key_file.into() })
        }
        Err(rustls::Error::InvalidCertificate(e)) => {
            Err(TlsFileError::BadCert { file: cert_file.into(), detail: format!("it does not parse ({e})") })
        }
        Err(e) => Err(bad_key(format!("it cannot be used ({e})"))),
    }
}

/// Why a connection (or a call on it) failed, as far as the error says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectProblem {
    /// Nothing answered at the address (refused, timed out, no route, unknown host).
    Unreachable(String),
    /// The server's certificate is not signed by the CA we trust.
    UnknownCa,
    /// The server's certificate is for other names.
    WrongHost {
        /// The name we connected to.
        expected: String,
        /// The names in the certificate.
        presented: Vec<String>,
    },
    /// The server's certificate was refused for another reason (expired, not yet valid, wrong purpose, …).
    BadServerCert(String),
    /// The server ended the handshake with a TLS alert: it refused our client certificate (or wanted one).
    ClientCertRefused(String),
    /// The server closed the connection during or right after the handshake without an alert that reached us. In
    /// TLS 1.3 the server checks the client certificate after the client has finished its side, so a refused client
    /// certificate often shows up like this: the server's alert is lost when it closes a socket holding unread data.
    ClosedAfterHandshake(String),
    /// The server did not answer with TLS (a plain `http://` server, or not a scheduler).
    NotTls(String),
    /// Nothing more specific was found.
    Other(String),
}

impl ConnectProblem {
    /// The problem in words, with what to do; `server` is the address and `ca` the CA file we trusted.
    pub fn explain(&self, server: &str, ca: &str) -> String {
        match self {
            ConnectProblem::Unreachable(d) => format!("nothing answers at {server} ({d})"),
            ConnectProblem::UnknownCa => format!(
                "the server at {server} answers, but its certificate is not signed by the CA in {ca} (unknown \
                 issuer, or a CA of the same name with another key); give the CA of this scheduler (its ca.pem)"
            ),
            ConnectProblem::WrongHost { expected, presented } => format!(
                "the server at {server} answers, but its certificate is for {} and not for {expected}; connect by a \
                 name the certificate holds, or issue the server certificate for {expected}",
                if presented.is_empty() { "no host name".to_string() } else { presented.join(", ") }
            ),
            ConnectProblem::BadServerCert(d) => {
                format!("the server at {server} answers, but its certificate is not acceptable: {d}")
            }
            ConnectProblem::ClientCertRefused(d) => format!(
                "the server at {server} refused our client certificate ({d}); it must be issued by that \
                 scheduler's CA for this node"
            ),
            ConnectProblem::ClosedAfterHandshake(d) => format!(
                "the server at {server} closed the connection during or right after the TLS handshake ({d}); a \
                 scheduler that requires client certificates does this when it refused our client certificate: it \
                 must be issued by that scheduler's CA for this node"
            ),
            ConnectProblem::NotTls(d) => {
                format!("the server at {server} does not speak TLS ({d}); is it a plain http:// server?")
            }
            ConnectProblem::Other(d) => format!("cannot talk to {server}: {d}"),
        }
    }
}

/// The errors of a chain, each one and, for `std::io::Error`, the error it wraps (whose own `source` skips it).
fn chain<'a>(e: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(x) = cur {
        out.push(x);
        if let Some(inner) = x.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            out.push(inner);
        }
        cur = x.source();
    }
    out
}

fn from_rustls(e: &rustls::Error) -> ConnectProblem {
    use rustls::{CertificateError, Error};
    match e {
        // A CA of the same name but another key (every `sovra-scheduler certs` CA is "Sovra scheduler CA") makes
        // the signature check fail rather than the issuer lookup: the same mistake, a CA file of another scheduler.
        Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            ConnectProblem::UnknownCa
        }
        Error::InvalidCertificate(CertificateError::NotValidForNameContext { expected, presented }) => {
            let presented = presented.iter().map(|p| bare_name(p)).collect();
            ConnectProblem::WrongHost { expected: expected.to_str().into_owned(), presented }
        }
        Error::InvalidCertificate(CertificateError::NotValidForName) => {
            ConnectProblem::WrongHost { expected: "the address connected to".into(), presented: vec![] }
        }
        Error::InvalidCertificate(c) => ConnectProblem::BadServerCert(c.to_string()),
        Error::AlertReceived(a) => ConnectProblem::ClientCertRefused(format!("TLS alert {a:?}")),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            ConnectProblem::NotTls(e.to_string())
        }
        other => ConnectProblem::Other(other.to_string()),
    }
}

/// `DnsName("a.example")` (how rustls lists a certificate's names) → `a.example`.
fn bare_name(p: &str) -> String {
    match (p.find("(\""), p.strip_suffix("\")")) {
        (Some(i), Some(rest)) if i + 2 <= rest.len() => rest[i + 2..].to_string(),
        _ => p.to_string(),
    }
}

/// Classifies the error of a failed connection or call (a `tonic::transport::Error`, a `tonic::Status`, …).
pub fn diagnose(e: &(dyn StdError + 'static)) -> ConnectProblem {
    let all = chain(e);
    if let Some(r) = all.iter().find_map(|x| x.downcast_ref::<rustls::Error>()) {
        return from_rustls(r);
    }
    if let Some(io) = all.iter().rev().find_map(|x| x.downcast_ref::<std::io::Error>()) {
        use std::io::ErrorKind as K;
        if matches!(
            io.kind(),
            K::ConnectionRefused | K::TimedOut | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable
        ) {
            return ConnectProblem::Unreachable(io.to_string());
        }
    }
    // Below here the chain holds only text: hyper and h2 pass some TLS failures on as strings.
    let text: Vec<String> = all.iter().skip(usize::from(all.len() > 1)).map(|x| x.to_string()).collect();
    let joined = text.join(": ");
    let lower = joined.to_lowercase();
    if let Some(i) = lower.find("received fatal alert: ") {
        let alert = joined[i + "received fatal alert: ".len()..].split([':', ' ']).next().unwrap_or_default();
        return ConnectProblem::ClientCertRefused(format!("TLS alert {alert}"));
    }
    if lower.contains("timed out") || lower.contains("dns error") || lower.contains("failed to lookup") {
        return ConnectProblem::Unreachable(joined);
    }
    // The forms a TLS 1.3 server's hang-up takes, depending on where the client was (reading, or still writing its
    // HTTP/2 preface: then the write fails with a broken pipe).
    if ["connection closed", "connection reset", "broken pipe", "connection aborted", "unexpected eof"]
        .iter()
        .any(|m| lower.contains(m))
    {
        return ConnectProblem::ClosedAfterHandshake(joined);
    }
    ConnectProblem::Other(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_ca() {
        let e = check_ca(b"hello", "ca.pem").unwrap_err();
        assert!(e.to_string().starts_with("ca.pem: not a CA certificate: no PEM `CERTIFICATE` block"), "{e}");
        let bogus = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = check_ca(bogus, "ca.pem").unwrap_err();
        assert!(e.to_string().contains("certificate 1 does not parse"), "{e}");
    }

    #[test]
    fn io_errors_in_the_chain_are_found_through_get_ref() {
        let inner = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(diagnose(&inner), ConnectProblem::UnknownCa);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(diagnose(&refused), ConnectProblem::Unreachable(_)));
    }

    /// TLS 1.3: the server's alert for a refused client certificate can be lost when it closes the socket, leaving
    /// only hyper's "connection closed" (seen as a flaky CI failure of the daemon's TLS test).
    #[test]
    fn a_connection_closed_without_an_alert_is_not_a_bare_transport_error() {
        let closed = std::io::Error::other("operation was canceled: connection closed");
        let p = diagnose(&closed);
        assert!(matches!(p, ConnectProblem::ClosedAfterHandshake(_)), "{p:?}");
        assert!(p.explain("https://s:7070", "ca.pem").contains("refused our client certificate"));
        let pipe = std::io::Error::other("connection error: stream closed because of a broken pipe");
        assert!(matches!(diagnose(&pipe), ConnectProblem::ClosedAfterHandshake(_)));
    }

    #[test]
    fn presented_names_are_shown_bare() {
        assert_eq!(bare_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(bare_name("10.0.0.1"), "10.0.0.1");
    }
}
