//! Generating the tunnel's CA and the certificates it issues (`setup init`,
//! `setup renew-cert`, `rotate`, tests), with rcgen on aws-lc-rs.
//!
//! Every certificate gets an explicit validity (rcgen's default runs to the year 4096),
//! a random serial (rcgen's default derives it from the key) and the extensions the
//! rules of [`crate::validate`] require, so what we issue is what we accept.
//! (Named `generate`, not `gen`: `gen` is a reserved word in Rust 2024.)

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, RsaKeySize, SerialNumber,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::crypto::Secret;

/// SPEC §9: the CA lives five years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// SPEC §9: `--cert-duration` defaults to `2160h` (90 days).
pub const DEFAULT_SERVER_CERT_VALIDITY: Duration = Duration::from_secs(2160 * 3600);
/// `notBefore` is set this far in the past so a peer whose clock is slightly behind
/// does not reject a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why a key or certificate could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("cannot generate a key: {0}")]
    KeyGeneration(String),
    #[error("the CA certificate cannot be used for issuing: {0}")]
    BadCaCertificate(String),
    #[error("the CA private key cannot be loaded: {0}")]
    BadCaKey(String),
    #[error("the CA private key does not belong to the CA certificate")]
    CaKeyMismatch,
    #[error("invalid subject alternative name {name:?}: {reason}")]
    BadSubjectAltName { name: String, reason: String },
    #[error("a server certificate needs at least one subject alternative name")]
    NoSubjectAltNames,
    #[error("invalid validity period: {0}")]
    BadValidity(&'static str),
    #[error("cannot sign the certificate: {0}")]
    Signing(String),
}

/// The key algorithm of a generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa4096,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From [`BACKDATE`] ago until `duration` from now.
    pub fn from_now(duration: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after: now + duration,
        }
    }
}

impl From<Duration> for Validity {
    fn from(duration: Duration) -> Self {
        Self::from_now(duration)
    }
}

/// A generated certificate and its private key.
#[derive(Debug, Clone)]
pub struct GeneratedCert {
    pub cert_pem: String,
    /// PKCS#8 PEM; redacted in `Debug`.
    pub key_pem: Secret,
    pub cert_der: Vec<u8>,
    /// Lowercase hex SHA-256 of the DER.
    pub fingerprint: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

/// A generated CA; the same shape as any other generated certificate.
pub type GeneratedCa = GeneratedCert;

/// A new self-signed CA: ECDSA P-256, BasicConstraints CA:TRUE pathlen 0 (critical; the
/// rules forbid intermediates), KeyUsage keyCertSign + cRLSign (critical), SKI.
pub fn generate_ca(
    common_name: &str,
    validity: impl Into<Validity>,
) -> Result<GeneratedCa, GenError> {
    let key = new_key(KeyKind::EcdsaP256)?;
    let mut params = base_params(common_name, validity.into())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .self_signed(&key)
        .map_err(|e| GenError::Signing(e.to_string()))?;
    finish(cert.der(), &key)
}

/// A server certificate for `sans` (e.g. `*.abcd1234.tunnel.example`), signed by the CA:
/// AKI = the CA's SKI, EKU serverAuth, BasicConstraints CA:FALSE.
pub fn issue_server_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    sans: &[String],
    validity: impl Into<Validity>,
    key: KeyKind,
) -> Result<GeneratedCert, GenError> {
    let first = sans.first().ok_or(GenError::NoSubjectAltNames)?;
    issue_leaf(
        ca_cert_pem,
        ca_key_pem,
        first,
        sans,
        validity.into(),
        key,
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// A client certificate for proxies with `client_auth`: EKU clientAuth, no SANs.
pub fn issue_client_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    common_name: &str,
    validity: impl Into<Validity>,
    key: KeyKind,
) -> Result<GeneratedCert, GenError> {
    issue_leaf(
        ca_cert_pem,
        ca_key_pem,
        common_name,
        &[],
        validity.into(),
        key,
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

fn issue_leaf(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    common_name: &str,
    sans: &[String],
    validity: Validity,
    kind: KeyKind,
    eku: ExtendedKeyUsagePurpose,
) -> Result<GeneratedCert, GenError> {
    let issuer = load_issuer(ca_cert_pem, ca_key_pem)?;
    let key = new_key(kind)?;
    let mut params = base_params(common_name, validity)?;
    for name in sans {
        let one = CertificateParams::new(vec![name.clone()]).map_err(|e| {
            GenError::BadSubjectAltName {
                name: name.clone(),
                reason: e.to_string(),
            }
        })?;
        params.subject_alt_names.extend(one.subject_alt_names);
    }
    // ExplicitNoCa writes BasicConstraints CA:FALSE and a SubjectKeyIdentifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = match kind {
        KeyKind::Rsa2048 | KeyKind::Rsa4096 => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ],
        KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => vec![KeyUsagePurpose::DigitalSignature],
    };
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| GenError::Signing(e.to_string()))?;
    finish(cert.der(), &key)
}

fn load_issuer(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Issuer<'static, KeyPair>, GenError> {
    // rustls' reader skips non-key blocks such as the EC PARAMETERS openssl puts first.
    let key_der = PrivateKeyDer::from_pem_slice(ca_key_pem.as_bytes())
        .map_err(|e| GenError::BadCaKey(e.to_string()))?;
    let key = KeyPair::try_from(&key_der).map_err(|e| GenError::BadCaKey(e.to_string()))?;
    let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| GenError::BadCaCertificate(e.to_string()))?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|e| GenError::BadCaCertificate(e.to_string()))?;
    if ca.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(GenError::CaKeyMismatch);
    }
    Issuer::from_ca_cert_der(&ca_der, key).map_err(|e| GenError::BadCaCertificate(e.to_string()))
}

fn new_key(kind: KeyKind) -> Result<KeyPair, GenError> {
    let key = match kind {
        KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyKind::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyKind::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyKind::Rsa4096 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096),
    };
    key.map_err(|e| GenError::KeyGeneration(e.to_string()))
}

fn base_params(common_name: &str, validity: Validity) -> Result<CertificateParams, GenError> {
    if validity.not_after <= validity.not_before {
        return Err(GenError::BadValidity(
            "notAfter must be later than notBefore",
        ));
    }
    let mut params = CertificateParams::default();
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let mut serial = crate::crypto::random_bytes(16);
    // Positive and without a leading zero byte, so it encodes in exactly 16 bytes.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

fn finish(der: &[u8], key: &KeyPair) -> Result<GeneratedCert, GenError> {
    let (not_before, not_after) =
        crate::tls::validity(der).map_err(|e| GenError::Signing(e.to_string()))?;
    Ok(GeneratedCert {
        cert_pem: pem_encode("CERTIFICATE", der),
        key_pem: Secret::new(key.serialize_pem()),
        cert_der: der.to_vec(),
        fingerprint: crate::crypto::sha256_hex(der),
        not_before,
        not_after,
    })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{validate_ca_pem, validate_server_cert};

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    #[test]
    fn generated_ca_and_server_cert_pass_the_rules() {
        let ca = generate_ca("test CA", DEFAULT_CA_VALIDITY).unwrap();
        let info = validate_ca_pem(&ca.cert_pem, now()).unwrap();
        assert_eq!(info.fingerprint, ca.fingerprint);
        assert_eq!(info.subject, "CN=test CA");
        assert_eq!(info.key, "ECDSA P-256");
        let years = (ca.not_after - ca.not_before) as f64 / (365.0 * 86400.0);
        assert!((4.99..5.01).contains(&years), "{years}");

        let sans = vec!["*.abcd1234.tunnel.example".to_owned()];
        let leaf = issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &sans,
            DEFAULT_SERVER_CERT_VALIDITY,
            KeyKind::EcdsaP256,
        )
        .unwrap();
        assert_eq!(leaf.not_after - leaf.not_before, 2160 * 3600 + 300);
        validate_server_cert(
            &leaf.cert_der,
            &[],
            &[&info],
            "route.abcd1234.tunnel.example",
            now(),
        )
        .unwrap();
        assert!(!format!("{leaf:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn refuses_a_key_from_another_ca() {
        let a = generate_ca("a", DEFAULT_CA_VALIDITY).unwrap();
        let b = generate_ca("b", DEFAULT_CA_VALIDITY).unwrap();
        let err = issue_server_cert(
            &a.cert_pem,
            b.key_pem.expose(),
            &["x.example".into()],
            Duration::from_secs(3600),
            KeyKind::EcdsaP256,
        )
        .unwrap_err();
        assert!(matches!(err, GenError::CaKeyMismatch), "{err}");
    }

    #[test]
    fn refuses_empty_sans_and_inverted_validity() {
        let ca = generate_ca("a", DEFAULT_CA_VALIDITY).unwrap();
        let err = issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &[],
            Duration::from_secs(3600),
            KeyKind::EcdsaP256,
        )
        .unwrap_err();
        assert!(matches!(err, GenError::NoSubjectAltNames));
        let now = SystemTime::now();
        let inverted = Validity {
            not_before: now,
            not_after: now - Duration::from_secs(1),
        };
        assert!(matches!(
            generate_ca("x", inverted),
            Err(GenError::BadValidity(_))
        ));
    }
}
