//! Certificate rules of SPEC §8: what a tunnel CA certificate and a proxy server
//! certificate must look like. The API checks CAs on registration, `doctor` checks both,
//! and the client checks the server certificate during inner TLS (see `crate::verifier`).
//!
//! Deliberate choices where the SPEC is silent:
//! - Keys: RSA 2048–8192 bits, or ECDSA on P-256, P-384 or P-521. Ed25519/Ed448 are
//!   refused: the SPEC allows "RSA or ECDSA", and not every TLS client verifies EdDSA.
//! - Signatures: RSA PKCS#1 v1.5, RSA-PSS (MGF1, salt = digest length) or ECDSA, each with
//!   SHA-256, SHA-384 or SHA-512.
//! - CA PEM: only whitespace may surround the one CERTIFICATE block.
//! - Extensions: duplicates, unparsable ones and unknown critical ones make a certificate
//!   malformed, as RFC 5280 §4.2 requires of a relying party.
//! - The CA's own rules are checked again at handshake time, so an expired CA fails with
//!   its own message rather than as "unknown issuer".

mod alg;
mod error;
mod pem;
mod server;

pub use error::{CertRole, CertRuleError, fmt_unix};
pub use server::{host_matches, validate_server_cert};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

/// Largest CA PEM accepted for registration.
pub const MAX_CA_PEM_BYTES: usize = 8192;

/// A CA certificate that passed every rule, with what the API and operators show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    /// Lowercase hex SHA-256 of the DER.
    pub fingerprint: String,
    /// Subject distinguished name, RFC 4514 style (`CN=…, O=…`).
    pub subject: String,
    /// `notBefore` as Unix seconds.
    pub not_before: i64,
    /// `notAfter` as Unix seconds.
    pub not_after: i64,
    /// The SubjectKeyIdentifier value, which server certificates' AKI must equal.
    pub subject_key_id: Vec<u8>,
    /// The key, described for people: `ECDSA P-256`, `RSA 2048 bits`.
    pub key: String,
    /// The certificate itself.
    pub der: Vec<u8>,
}

impl AsRef<[u8]> for CaInfo {
    fn as_ref(&self) -> &[u8] {
        &self.der
    }
}

/// Checks a CA certificate submitted as PEM text, at Unix time `now`.
pub fn validate_ca_pem(pem: &str, now: i64) -> Result<CaInfo, CertRuleError> {
    if pem.len() > MAX_CA_PEM_BYTES {
        return Err(CertRuleError::TooLarge { len: pem.len() });
    }
    let der = pem::single_certificate(pem)?;
    validate_ca_der(&der, now)
}

/// Checks a CA certificate given as DER (every rule except the PEM ones), at `now`.
pub fn validate_ca_der(der: &[u8], now: i64) -> Result<CaInfo, CertRuleError> {
    let cert = parse(der, CertRole::Ca)?;
    let ski = ca_extensions(&cert)?;
    let key = check_key(&cert, CertRole::Ca)?;
    check_signature_alg(&cert, CertRole::Ca)?;
    if !alg::signed_by(&cert, cert.public_key()) {
        return Err(CertRuleError::SelfSignatureInvalid);
    }
    let (not_before, not_after) = check_validity(&cert, CertRole::Ca, now)?;
    Ok(CaInfo {
        fingerprint: crate::crypto::sha256_hex(der),
        subject: cert.subject().to_string(),
        not_before,
        not_after,
        subject_key_id: ski,
        key: key.to_string(),
        der: der.to_vec(),
    })
}

/// BasicConstraints, SubjectKeyIdentifier and KeyUsage of a CA; returns the SKI.
fn ca_extensions(cert: &X509Certificate<'_>) -> Result<Vec<u8>, CertRuleError> {
    let bc = cert
        .basic_constraints()
        .map_err(|e| malformed(CertRole::Ca, e))?;
    match bc {
        None => {
            return Err(CertRuleError::NotCa {
                found: "BasicConstraints is missing",
            });
        }
        Some(bc) if !bc.value.ca => {
            return Err(CertRuleError::NotCa {
                found: "it has CA:FALSE",
            });
        }
        Some(bc) if !bc.critical => return Err(CertRuleError::BasicConstraintsNotCritical),
        Some(_) => {}
    }
    let ski = subject_key_id(cert).ok_or(CertRuleError::MissingSubjectKeyId)?;
    let ku = cert.key_usage().map_err(|e| malformed(CertRole::Ca, e))?;
    let ku = ku.ok_or(CertRuleError::MissingKeyUsage)?;
    if !ku.value.key_cert_sign() {
        let found = ku.value.to_string();
        return Err(CertRuleError::KeyUsageNoCertSign {
            found: if found.is_empty() {
                "nothing".into()
            } else {
                found
            },
        });
    }
    Ok(ski)
}

pub(crate) fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(kid) if !kid.0.is_empty() => Some(kid.0.to_vec()),
            _ => None,
        })
}

fn malformed(role: CertRole, reason: impl std::fmt::Display) -> CertRuleError {
    CertRuleError::Malformed {
        role,
        reason: reason.to_string(),
    }
}

/// Parses DER strictly: the whole input, no duplicate, broken or unknown critical extensions.
pub(crate) fn parse(der: &[u8], role: CertRole) -> Result<X509Certificate<'_>, CertRuleError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| malformed(role, e))?;
    if !rest.is_empty() {
        return Err(malformed(role, "trailing data after the certificate"));
    }
    cert.extensions_map().map_err(|e| malformed(role, e))?;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::ParseError { .. } => {
                return Err(malformed(
                    role,
                    format!("extension {} cannot be parsed", ext.oid),
                ));
            }
            ParsedExtension::UnsupportedExtension { .. } if ext.critical => {
                return Err(malformed(
                    role,
                    format!("unsupported critical extension {}", ext.oid),
                ));
            }
            _ => {}
        }
    }
    Ok(cert)
}

pub(crate) fn check_key(
    cert: &X509Certificate<'_>,
    role: CertRole,
) -> Result<alg::KeyKind, CertRuleError> {
    alg::key_kind(cert.public_key()).map_err(|found| CertRuleError::WeakKey { role, found })
}

pub(crate) fn check_signature_alg(
    cert: &X509Certificate<'_>,
    role: CertRole,
) -> Result<(), CertRuleError> {
    alg::signature_alg(&cert.signature_algorithm)
        .map(drop)
        .map_err(|found| CertRuleError::WeakSignature { role, found })
}

/// `(notBefore, notAfter)` when `now` lies within them (both ends inclusive, RFC 5280).
pub(crate) fn check_validity(
    cert: &X509Certificate<'_>,
    role: CertRole,
    now: i64,
) -> Result<(i64, i64), CertRuleError> {
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if now < not_before {
        return Err(CertRuleError::NotYetValid {
            role,
            not_before,
            now,
        });
    }
    if now > not_after {
        return Err(CertRuleError::Expired {
            role,
            not_after,
            now,
        });
    }
    Ok((not_before, not_after))
}
