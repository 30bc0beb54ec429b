//! The serving certificate is checked before the webhook starts: kube-apiserver calls webhooks over HTTPS only, so
//! a missing, unreadable, not-yet-valid or expired certificate would make every regulated pod fail admission. The
//! webhook refuses to start instead, saying which file and what to do.

use std::path::Path;

/// A serving certificate that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--tls-cert {path}: {reason}")]
pub struct CertError {
    /// The file.
    pub path: String,
    /// What is wrong and what to do.
    pub reason: String,
}

/// Checks that `path` holds a PEM certificate valid at `now` (seconds since the epoch). Returns its expiry.
pub fn check(path: &Path, now: i64) -> Result<i64, CertError> {
    let fail = |reason: String| CertError { path: path.display().to_string(), reason };
    let bytes = std::fs::read(path).map_err(|e| {
        fail(format!(
            "{e}; the webhook serves only HTTPS (kube-apiserver calls admission webhooks over HTTPS), give the \
             certificate of the webhook's Service name (docs/kubernetes.md, \"Admission webhook\")"
        ))
    })?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| fail(format!("not a PEM certificate ({e})")))?;
    let cert = pem.parse_x509().map_err(|e| fail(format!("not an X.509 certificate ({e})")))?;
    let v = cert.validity();
    let (from, until) = (v.not_before.timestamp(), v.not_after.timestamp());
    if now < from {
        return Err(fail(format!("not valid before {}; check the clock or issue a new certificate", v.not_before)));
    }
    if now > until {
        return Err(fail(format!(
            "expired on {}; issue a new certificate (e.g. with cert-manager) and restart",
            v.not_after
        )));
    }
    Ok(until)
}
