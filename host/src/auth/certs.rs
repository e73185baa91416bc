//! Applications that log in with a TLS client certificate, as DSM's `Certificate` and
//! `TrustedCa` applications do: the rules that decide whether a presented certificate chain
//! stands for an application. Pure functions over DER bytes and a time; fetching CRLs and
//! reading the certificate off the connection (or a trusted proxy's header) happen in the API.
//!
//! - **Pinned** (`Certificate`): the leaf must be the very certificate stored, within its
//!   validity period.
//! - **Trusted CA** (`TrustedCa`): the chain must lead to the stored CA certificate (webpki,
//!   with the client-auth usage if the certificate names usages), the leaf must carry the
//!   stored subject attributes or name, and, when a CRL is configured, must not be revoked
//!   (an unreadable or expired CRL refuses: revocation fails closed).
//!
//! The TLS layer has already checked that the client holds the certificate's private key
//! (the handshake's signature); these rules decide *which* certificate is acceptable.

use std::net::IpAddr;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

pub use crate::catalog::apps::{CertCredential, CrlSource, TrustSubject};

/// The SHA-256 of a certificate's DER: what a session is bound to.
pub type Thumbprint = [u8; 32];

pub fn thumbprint(der: &[u8]) -> Thumbprint {
    Sha256::digest(der).into()
}

/// A certificate chain a client presented, leaf first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub chain: Vec<CertificateDer<'static>>,
}

impl Presented {
    pub fn leaf(&self) -> &[u8] {
        self.chain.first().map(|c| c.as_ref()).unwrap_or_default()
    }

    pub fn thumbprint(&self) -> Thumbprint {
        thumbprint(self.leaf())
    }
}

/// Why a certificate given to configure an application is unusable (400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("{what}: not a certificate in PEM or base64 DER: {message}")]
    NotCertificate { what: &'static str, message: String },
    #[error("{what}: the certificate is not a CA certificate (basic constraints)")]
    NotCa { what: &'static str },
    #[error("crl: not a certificate revocation list in PEM or base64 DER: {0}")]
    NotCrl(String),
    #[error("subject: {0}")]
    Subject(String),
}

/// Why a presented certificate does not stand for the application (the login is refused;
/// the reason goes to the audit log, not to the client).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("no client certificate was presented")]
    NoCertificate,
    #[error("the client certificate is not the application's pinned certificate")]
    NotPinned,
    #[error("the client certificate is not valid at this time (expired or not yet valid)")]
    OutsideValidity,
    #[error("the client certificate cannot be read: {0}")]
    Unreadable(String),
    #[error("the client certificate does not chain to the application's CA: {0}")]
    Untrusted(String),
    #[error("the client certificate has been revoked")]
    Revoked,
    #[error("the CRL cannot be used: {0}")]
    CrlUnusable(String),
    #[error("the client certificate does not carry the application's subject ({0})")]
    SubjectMismatch(String),
}

/// A certificate given as PEM text or base64 of DER (DSM's blob).
pub fn certificate_from_text(what: &'static str, text: &str) -> Result<Vec<u8>, CertError> {
    let not = |message: String| CertError::NotCertificate { what, message };
    let der = if text.trim_start().starts_with("-----BEGIN") {
        CertificateDer::from_pem_slice(text.as_bytes())
            .map_err(|e| not(e.to_string()))?
            .to_vec()
    } else {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| not(format!("base64: {e}")))?
    };
    let (rest, _) = X509Certificate::from_der(&der).map_err(|e| not(e.to_string()))?;
    if !rest.is_empty() {
        return Err(not("bytes follow the certificate".into()));
    }
    Ok(der)
}

/// A CA certificate for trusted-CA applications.
pub fn ca_from_text(text: &str) -> Result<Vec<u8>, CertError> {
    let der = certificate_from_text("ca_certificate", text)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| CertError::NotCertificate {
        what: "ca_certificate",
        message: e.to_string(),
    })?;
    if !cert.is_ca() {
        return Err(CertError::NotCa {
            what: "ca_certificate",
        });
    }
    webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice())).map_err(|e| {
        CertError::NotCertificate {
            what: "ca_certificate",
            message: format!("{e:?}"),
        }
    })?;
    Ok(der)
}

/// A CRL given as PEM text or base64 of DER, or fetched as DER (or PEM).
pub fn crl_from_bytes(bytes: &[u8]) -> Result<Vec<u8>, CertError> {
    let der = if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::from_pem_slice(bytes)
            .map_err(|e| CertError::NotCrl(e.to_string()))?
            .to_vec()
    } else if bytes.first() == Some(&0x30) {
        bytes.to_vec()
    } else {
        use base64::Engine;
        let text = std::str::from_utf8(bytes).map_err(|e| CertError::NotCrl(e.to_string()))?;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| CertError::NotCrl(format!("base64: {e}")))?
    };
    OwnedCertRevocationList::from_der(&der).map_err(|e| CertError::NotCrl(format!("{e:?}")))?;
    Ok(der)
}

/// When a CRL says its successor is due (Unix seconds), if it says.
pub fn crl_next_update(der: &[u8]) -> Option<i64> {
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).ok()?;
    crl.next_update().map(|t| t.timestamp())
}

/// A subject as DSM clients send it: a list of `[name, value]` pairs.
pub fn subject_from_pairs(pairs: Vec<Vec<String>>) -> Result<TrustSubject, CertError> {
    if pairs.is_empty() {
        return Err(CertError::Subject("name at least one attribute".into()));
    }
    let pairs = pairs
        .into_iter()
        .map(|p| match <[String; 2]>::try_from(p) {
            Ok([k, v]) if !k.trim().is_empty() && !v.is_empty() => Ok((k, v)),
            _ => Err(CertError::Subject(
                "each attribute is a [name, value] pair, both non-empty".into(),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TrustSubject::DirectoryName(pairs))
}

/// The leaf's expiry (Unix seconds).
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The leaf's subject, as text (for people: the console, the audit log).
pub fn subject_text(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.subject().to_string())
}

/// Whether `presented` stands for an application with `credential` at `now`, given the
/// application's CRL (DER) when it has one.
pub fn check(
    credential: &CertCredential,
    presented: Option<&Presented>,
    now: i64,
    crl: Option<&[u8]>,
) -> Result<(), Refusal> {
    let presented = presented
        .filter(|p| !p.chain.is_empty())
        .ok_or(Refusal::NoCertificate)?;
    let leaf = presented.leaf();
    let (_, parsed) =
        X509Certificate::from_der(leaf).map_err(|e| Refusal::Unreadable(e.to_string()))?;
    let validity = parsed.validity();
    if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
        return Err(Refusal::OutsideValidity);
    }
    match credential {
        CertCredential::Pinned { certificate } => {
            if leaf != certificate.as_slice() {
                return Err(Refusal::NotPinned);
            }
            Ok(())
        }
        CertCredential::TrustedCa {
            ca_certificate,
            subject,
            crl: source,
        } => {
            let ca = CertificateDer::from(ca_certificate.as_slice());
            let anchor = webpki::anchor_from_trusted_cert(&ca)
                .map_err(|e| Refusal::Untrusted(format!("the stored CA: {e:?}")))?;
            let end_entity = CertificateDer::from(leaf);
            let end_entity = EndEntityCert::try_from(&end_entity)
                .map_err(|e| Refusal::Unreadable(format!("{e:?}")))?;
            let crl_list = match (source, crl) {
                (None, _) => None,
                (Some(_), None) => {
                    return Err(Refusal::CrlUnusable("no CRL is available".into()));
                }
                (Some(_), Some(der)) => Some(CertRevocationList::Owned(
                    OwnedCertRevocationList::from_der(der)
                        .map_err(|e| Refusal::CrlUnusable(format!("{e:?}")))?,
                )),
            };
            let crls: Vec<&CertRevocationList<'_>> = crl_list.iter().collect();
            let revocation = match crls.is_empty() {
                true => None,
                false => Some(
                    RevocationOptionsBuilder::new(&crls)
                        .map_err(|_| Refusal::CrlUnusable("no CRL".into()))?
                        .with_depth(RevocationCheckDepth::EndEntity)
                        .with_status_policy(UnknownStatusPolicy::Deny)
                        .with_expiration_policy(ExpirationPolicy::Enforce)
                        .build(),
                ),
            };
            let time = UnixTime::since_unix_epoch(Duration::from_secs(now.max(0) as u64));
            end_entity
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    &[anchor],
                    &presented.chain[1..],
                    time,
                    KeyUsage::client_auth(),
                    revocation,
                    None,
                )
                .map_err(|e| match e {
                    webpki::Error::CertRevoked => Refusal::Revoked,
                    webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                        Refusal::OutsideValidity
                    }
                    webpki::Error::CrlExpired { .. }
                    | webpki::Error::UnknownRevocationStatus
                    | webpki::Error::InvalidCrlSignatureForPublicKey
                    | webpki::Error::UnsupportedCrlSignatureAlgorithmContext(_)
                    | webpki::Error::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
                    | webpki::Error::IssuerNotCrlSigner => Refusal::CrlUnusable(format!("{e:?}")),
                    other => Refusal::Untrusted(format!("{other:?}")),
                })?;
            carries(&parsed, subject)
        }
    }
}

fn carries(cert: &X509Certificate<'_>, subject: &TrustSubject) -> Result<(), Refusal> {
    let names = || -> Vec<GeneralName<'_>> {
        cert.subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| ext.value.general_names.clone())
            .unwrap_or_default()
    };
    match subject {
        TrustSubject::DirectoryName(pairs) => {
            let registry = x509_parser::objects::oid_registry();
            for (name, value) in pairs {
                let found = cert.subject().iter_attributes().any(|a| {
                    let oid = a.attr_type();
                    let named = oid.to_id_string() == *name
                        || x509_parser::objects::oid2abbrev(oid, registry)
                            .is_ok_and(|abbrev| abbrev.eq_ignore_ascii_case(name));
                    named && a.as_str().is_ok_and(|v| v == value)
                });
                if !found {
                    return Err(Refusal::SubjectMismatch(format!("{name}={value}")));
                }
            }
            Ok(())
        }
        TrustSubject::DnsName(dns) => names()
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(dns)))
            .then_some(())
            .ok_or_else(|| Refusal::SubjectMismatch(format!("DNS name {dns}"))),
        TrustSubject::IpAddress(ip) => {
            let octets: Vec<u8> = match ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            names()
                .iter()
                .any(|n| matches!(n, GeneralName::IPAddress(b) if *b == octets.as_slice()))
                .then_some(())
                .ok_or_else(|| Refusal::SubjectMismatch(format!("IP address {ip}")))
        }
    }
}
