//! Certificates for a test control plane: one CA, serving certificates for loopback, client certificates whose
//! subject is a Kubernetes identity (CN = user, O = groups, as kube-apiserver's x509 authenticator reads them).

use crate::HarnessError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::net::{IpAddr, Ipv4Addr};

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Debug, Clone)]
pub struct CertKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

/// A test certificate authority.
pub struct Pki {
    ca: CertKey,
    issuer: Issuer<'static, KeyPair>,
}

fn err(what: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Pki(format!("{what}: {e}"))
}

impl Pki {
    /// A new CA (ECDSA P-256).
    pub fn new() -> Result<Pki, HarnessError> {
        let key = KeyPair::generate().map_err(|e| err("CA key", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA params", e))?;
        params.distinguished_name.push(DnType::CommonName, "sovra-test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).map_err(|e| err("CA certificate", e))?;
        let ca = CertKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        let issuer = Issuer::new(params, key);
        Ok(Pki { ca, issuer })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// A serving certificate for `localhost` and 127.0.0.1, plus `names`.
    pub fn server(&self, names: &[&str]) -> Result<CertKey, HarnessError> {
        let mut sans: Vec<String> = vec!["localhost".into()];
        sans.extend(names.iter().map(|s| s.to_string()));
        let mut params = CertificateParams::new(sans).map_err(|e| err("server params", e))?;
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("localhost"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for the Kubernetes identity `user` in `groups`.
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<CertKey, HarnessError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("client params", e))?;
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A certificate valid only in the past (expired), for the tests of expired-certificate handling.
    pub fn expired_server(&self) -> Result<CertKey, HarnessError> {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(|e| err("params", e))?;
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<CertKey, HarnessError> {
        let key = KeyPair::generate().map_err(|e| err("key", e))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| err("certificate", e))?;
        Ok(CertKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A key pair for service-account tokens: (private PEM, public PEM).
    pub fn service_account_keys() -> Result<(String, String), HarnessError> {
        let key = KeyPair::generate().map_err(|e| err("service account key", e))?;
        Ok((key.serialize_pem(), key.public_key_pem()))
    }
}
