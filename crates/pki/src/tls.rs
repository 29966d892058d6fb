//! Loading PEM material into rustls types, and the one crypto provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The process-wide crypto provider (aws-lc-rs). Every rustls config is built from this.
///
/// TLS 1.3 suites are offered and chosen in the order of [`preferred_suites`]: every byte
/// of the tunnel is sealed by three TLS layers, so the suite's cost is paid six times.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut p = rustls::crypto::aws_lc_rs::default_provider();
            p.cipher_suites = preferred_suites(p.cipher_suites);
            Arc::new(p)
        })
        .clone()
}

/// `TLS_AES_128_GCM_SHA256` first (RFC 8446's mandatory suite, first choice of the major
/// browsers): AES-128 runs 10 rounds to AES-256's 14, and the SHA-256 key schedule uses the
/// CPU's SHA extensions where SHA-384's cannot, which is a quarter of a handshake's work
/// (docs/PERFORMANCE.md). The other suites stay accepted, in the provider's order.
fn preferred_suites(
    mut suites: Vec<rustls::SupportedCipherSuite>,
) -> Vec<rustls::SupportedCipherSuite> {
    let first = rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
    suites.sort_by_key(|s| s.suite() != first);
    suites
}

/// Why PEM material could not be loaded. Messages name the file, Go-style
/// (`open /path: permission denied`), because operators grep for them.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{path}: no PEM private key found")]
    NoKey { path: PathBuf },
    #[error("{path}: unsupported private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("certificate {cert} does not match private key {key}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: certificate cannot be parsed: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
}

/// Reads a file, reporting failures as `open <path>: <reason>` with a lowercase reason.
pub fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError::Open {
        path: path.to_owned(),
        reason: io_reason(&e),
    })
}

/// Go-style lowercase reason for an I/O error ("permission denied", "no such file or directory").
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        PermissionDenied => "permission denied".into(),
        NotFound => "no such file or directory".into(),
        IsADirectory => "is a directory".into(),
        _ => {
            let s = e.to_string();
            // Strip Rust's " (os error N)" suffix and lowercase the first letter.
            let s = s.split(" (os error").next().unwrap_or(&s).to_string();
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                None => s,
            }
        }
    }
}

/// Parses every certificate in a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let pem = read_file(path)?;
    parse_certs(&pem).map_err(|reason| match reason {
        None => LoadError::NoCertificate {
            path: path.to_owned(),
        },
        Some(reason) => LoadError::BadPem {
            path: path.to_owned(),
            reason,
        },
    })
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Option<String>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Some(e.to_string()))?;
    if certs.is_empty() {
        return Err(None);
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => LoadError::NoKey {
            path: path.to_owned(),
        },
        other => LoadError::BadPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// A server certificate chain and key, ready for rustls, with what operators want to see.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub certified_key: Arc<CertifiedKey>,
    /// Lowercase hex SHA-256 of the leaf certificate's DER.
    pub fingerprint: String,
    /// Leaf `notAfter` as Unix seconds.
    pub not_after: i64,
    /// Leaf `notBefore` as Unix seconds.
    pub not_before: i64,
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, LoadError> {
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let signing_key =
        provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| LoadError::BadKey {
                path: key_path.to_owned(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|_| LoadError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
    })?;
    let leaf = &certified.cert[0];
    let (not_before, not_after) = validity(leaf).map_err(|reason| LoadError::BadCertificate {
        path: cert_path.to_owned(),
        reason,
    })?;
    Ok(LoadedCert {
        fingerprint: crate::crypto::sha256_hex(leaf.as_ref()),
        certified_key: Arc::new(certified),
        not_after,
        not_before,
    })
}

/// What renewing a certificate needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub not_before: i64,
    pub not_after: i64,
    /// Subject alternative names, DNS names and IP addresses, in order.
    pub names: Vec<String>,
    /// The issuer's and the subject's distinguished names, DER.
    pub issuer: Vec<u8>,
    pub subject: Vec<u8>,
}

/// Validity, names, issuer and subject of a DER certificate.
pub fn summary(der: &[u8]) -> Result<CertSummary, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let v = cert.validity();
    let mut names = Vec::new();
    if let Some(san) = cert.subject_alternative_name().map_err(|e| e.to_string())? {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::IPAddress(b) => {
                    let ip = if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        std::net::IpAddr::from(v4)
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        std::net::IpAddr::from(v6)
                    } else {
                        return Err("an IP address SAN of neither 4 nor 16 bytes".into());
                    };
                    names.push(ip.to_string());
                }
                _ => {}
            }
        }
    }
    Ok(CertSummary {
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
        names,
        issuer: cert.issuer().as_raw().to_vec(),
        subject: cert.subject().as_raw().to_vec(),
    })
}

/// `(notBefore, notAfter)` of a DER certificate as Unix seconds.
pub fn validity(der: &[u8]) -> Result<(i64, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}
