//! The client's check of the proxy's certificate during inner TLS (SPEC §1 layer 2, §8):
//! trust only the CA certificates registered for the tunnel, and enforce the
//! server-certificate rules of [`crate::validate`] for the SNI name.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::validate::{CertRole, CertRuleError, validate_server_cert};

/// A rule violation as carried inside `rustls::Error`. rustls prints the inner error with
/// `{:?}`, so `Debug` here is the plain message: the user sees which rule failed.
#[derive(Clone)]
pub struct TunnelCertError(pub CertRuleError);

impl fmt::Debug for TunnelCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for TunnelCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for TunnelCertError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

impl From<CertRuleError> for rustls::Error {
    fn from(e: CertRuleError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            TunnelCertError(e),
        ))))
    }
}

/// The certificate rule behind a failed handshake, if that is why it failed. Accepts the
/// `io::Error` tokio-rustls returns, a `rustls::Error`, or anything wrapping either.
pub fn rule_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a CertRuleError> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(rule) = e.downcast_ref::<CertRuleError>() {
            return Some(rule);
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
        {
            return other.0.downcast_ref::<TunnelCertError>().map(|t| &t.0);
        }
        // io::Error::source skips the wrapped error itself; get_ref reaches it.
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Trusts only the tunnel's registered CAs and applies the server-certificate rules.
///
/// Our rules run first so a failure names the rule; webpki then verifies the same
/// single-link path as a second, independent implementation (it also enforces things
/// our rules leave to it, such as a CA's name constraints).
pub struct TunnelServerVerifier {
    cas: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for TunnelServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprints: Vec<String> = self
            .cas
            .iter()
            .map(|c| crate::crypto::sha256_hex(c.as_ref()))
            .collect();
        f.debug_struct("TunnelServerVerifier")
            .field("ca_fingerprints", &fingerprints)
            .finish_non_exhaustive()
    }
}

impl TunnelServerVerifier {
    /// A verifier trusting exactly `cas` (DER). Time-dependent CA rules are checked at
    /// each handshake, so a CA that expires later fails then, by name.
    pub fn new(cas: Vec<CertificateDer<'static>>) -> Result<Self, CertRuleError> {
        if cas.is_empty() {
            return Err(CertRuleError::NoRegisteredCa);
        }
        let provider = crate::tls::provider();
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            roots
                .add(ca.clone())
                .map_err(|e| CertRuleError::Malformed {
                    role: CertRole::Ca,
                    reason: e.to_string(),
                })?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| CertRuleError::Malformed {
                role: CertRole::Ca,
                reason: e.to_string(),
            })?;
        Ok(Self {
            cas,
            webpki,
            provider,
        })
    }

    /// A verifier trusting every CERTIFICATE in `pem` (the tunnel's one or two CAs).
    pub fn from_pem(pem: &str) -> Result<Self, CertRuleError> {
        let cas = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertRuleError::NotPem {
                reason: e.to_string(),
            })?;
        Self::new(cas)
    }

    /// The trusted CA certificates.
    pub fn cas(&self) -> &[CertificateDer<'static>] {
        &self.cas
    }
}

impl ServerCertVerifier for TunnelServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let host = server_name.to_str();
        let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        validate_server_cert(end_entity.as_ref(), intermediates, &self.cas, &host, secs)?;
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client certificate and key for proxies that require `client_auth`.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain_len", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

/// The inner-TLS client configuration: TLS 1.2/1.3 on the aws-lc-rs provider, the given
/// verifier, an optional client certificate, and the ALPN protocols to offer.
pub fn client_config(
    verifier: Arc<TunnelServerVerifier>,
    identity: Option<ClientIdentity>,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    Ok(config)
}
