//! What the output holds, read back and checked: the CA and its key, the server
//! certificate (still good for this CA and domain?), and issuing a new one.

use std::time::{Duration, SystemTime};

use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_pki::generate::{self, GeneratedCert, KeyKind};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::SetupError;
use crate::keys;
use crate::output::Contents;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A stored value as trimmed UTF-8, or `None` when absent or empty.
pub fn text(c: &Contents, key: &'static str) -> Result<Option<String>, SetupError> {
    match c.get(key) {
        None => Ok(None),
        Some(v) => {
            let s = std::str::from_utf8(v).map_err(|_| SetupError::Stored {
                key,
                reason: "not UTF-8 text".into(),
            })?;
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
    }
}

/// The tunnel's CA as stored.
#[derive(Debug, Clone)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key_pem: Secret,
    pub der: Vec<u8>,
    /// Lowercase hex SHA-256 of the DER, as the API reports it.
    pub fingerprint: String,
}

impl StoredCa {
    /// `None` when neither half is stored; an error when only one is, or it is broken.
    pub fn read(c: &Contents) -> Result<Option<Self>, SetupError> {
        let cert = text(c, keys::CA_CERT)?;
        let key = text(c, keys::CA_KEY)?;
        let (cert_pem, key_pem) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c + "\n", Secret::new(k + "\n")),
            (Some(_), None) => return Err(SetupError::Missing { key: keys::CA_KEY }),
            (None, Some(_)) => return Err(SetupError::Missing { key: keys::CA_CERT }),
        };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| SetupError::Stored {
                key: keys::CA_CERT,
                reason: e.to_string(),
            })?
            .to_vec();
        let fingerprint = mcp_tunnel_pki::crypto::sha256_hex(&der);
        Ok(Some(Self {
            cert_pem,
            key_pem,
            der,
            fingerprint,
        }))
    }

    pub fn generate() -> Result<Self, SetupError> {
        let ca = generate::generate_ca("mcp-tunnel CA", generate::DEFAULT_CA_VALIDITY)?;
        Ok(Self {
            cert_pem: ca.cert_pem,
            key_pem: ca.key_pem,
            fingerprint: ca.fingerprint,
            der: ca.cert_der,
        })
    }

    pub fn contents(&self) -> Contents {
        let mut c = Contents::new();
        c.insert(keys::CA_CERT.into(), self.cert_pem.clone().into_bytes());
        c.insert(
            keys::CA_KEY.into(),
            self.key_pem.expose().as_bytes().to_vec(),
        );
        c
    }

    /// A server certificate for every route of `domain` (`*.<domain>`).
    pub fn issue(
        &self,
        domain: &str,
        duration: Duration,
        key: KeyKind,
    ) -> Result<GeneratedCert, SetupError> {
        Ok(generate::issue_server_cert(
            &self.cert_pem,
            self.key_pem.expose(),
            &[format!("*.{domain}")],
            duration,
            key,
        )?)
    }
}

/// The stored server certificate's `notAfter` (Unix seconds) when it passes every rule
/// a client applies (SPEC §8) against `ca` for routes of `domain`; otherwise why not.
pub fn server_cert_good_until(c: &Contents, ca: &StoredCa, domain: &str) -> Result<i64, String> {
    if text(c, keys::TLS_KEY).ok().flatten().is_none() {
        return Err("no tls.key stored".into());
    }
    let pem = text(c, keys::TLS_CERT)
        .map_err(|e| e.to_string())?
        .ok_or("no tls.crt stored")?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())?;
    // Any route name will do: the certificate must cover them all.
    let probe = format!("route.{domain}");
    mcp_tunnel_pki::validate::validate_server_cert(&der, &[], &[&ca.der], &probe, now())
        .map_err(|e| e.to_string())?;
    let (_, not_after) = mcp_tunnel_pki::tls::validity(&der)?;
    Ok(not_after)
}

/// The contents that store a freshly issued server certificate.
pub fn server_cert_contents(cert: &GeneratedCert) -> Contents {
    let mut c = Contents::new();
    c.insert(
        keys::TLS_KEY.into(),
        cert.key_pem.expose().as_bytes().to_vec(),
    );
    c.insert(keys::TLS_CERT.into(), cert.cert_pem.clone().into_bytes());
    c
}

/// `--key-algorithm` of the server certificate (SPEC §9: RSA 4096 or ECDSA).
pub fn key_kind(name: &str) -> Option<KeyKind> {
    match name {
        "ecdsa-p256" => Some(KeyKind::EcdsaP256),
        "ecdsa-p384" => Some(KeyKind::EcdsaP384),
        "rsa-4096" => Some(KeyKind::Rsa4096),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ca_round_trip_and_server_cert_checks() {
        let ca = StoredCa::generate().unwrap();
        let mut c = ca.contents();
        let back = StoredCa::read(&c).unwrap().unwrap();
        assert_eq!(back.fingerprint, ca.fingerprint);
        assert!(server_cert_good_until(&c, &ca, "ab12cd34.t.example").is_err());
        let cert = ca
            .issue(
                "ab12cd34.t.example",
                Duration::from_secs(3600),
                KeyKind::EcdsaP256,
            )
            .unwrap();
        c.extend(server_cert_contents(&cert));
        assert_eq!(
            server_cert_good_until(&c, &ca, "ab12cd34.t.example").unwrap(),
            cert.not_after
        );
        // Another domain, or another CA: not good.
        let err = server_cert_good_until(&c, &ca, "zz99zz99.t.example").unwrap_err();
        assert!(err.contains("SubjectAltName must cover"), "{err}");
        let other = StoredCa::generate().unwrap();
        assert!(server_cert_good_until(&c, &other, "ab12cd34.t.example").is_err());
        // Half a CA is an error naming the missing half.
        c.remove(keys::CA_KEY);
        assert!(matches!(
            StoredCa::read(&c),
            Err(SetupError::Missing { key: "ca.key" })
        ));
    }
}
