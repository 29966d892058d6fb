//! How the connector trusts the edge: the CA pin from the token when present (the pinned
//! certificate must appear in the edge's chain and becomes the only trust anchor), else an
//! operator-supplied CA file, else the system's CA bundle. Hostname and validity checks
//! are always those of webpki.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mcp_tunnel_proto::{ALPN, CaPin};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Where system CA bundles live, in the order tried (`SSL_CERT_FILE` first).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Why no TLS configuration could be built for the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeTlsError {
    #[error("--edge-ca-file: {0}")]
    CaFile(#[source] mcp_tunnel_pki::tls::LoadError),
    #[error("no trust anchor for the edge: the token has no CA pin, no --edge-ca-file was given and no system CA bundle was found (looked at SSL_CERT_FILE, {})", SYSTEM_BUNDLES.join(", "))]
    NoRoots,
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(String),
}

/// The trust decision, made once per connection attempt from the current token.
#[derive(Debug, Clone)]
pub enum EdgeTrust {
    Pin(CaPin),
    Roots(Vec<CertificateDer<'static>>),
}

impl EdgeTrust {
    pub fn choose(pin: Option<CaPin>, ca_file: Option<&Path>) -> Result<Self, EdgeTlsError> {
        if let Some(pin) = pin {
            return Ok(Self::Pin(pin));
        }
        if let Some(path) = ca_file {
            let certs = mcp_tunnel_pki::tls::load_certs(path).map_err(EdgeTlsError::CaFile)?;
            return Ok(Self::Roots(certs));
        }
        let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        env.into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
            .find_map(|p| mcp_tunnel_pki::tls::load_certs(&p).ok())
            .map(Self::Roots)
            .ok_or(EdgeTlsError::NoRoots)
    }

    pub fn client_config(&self) -> Result<Arc<ClientConfig>, EdgeTlsError> {
        let provider = mcp_tunnel_pki::tls::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| EdgeTlsError::Rustls(e.to_string()))?;
        let mut config = match self {
            Self::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
                    pin: *pin,
                    provider,
                }))
                .with_no_client_auth(),
            Self::Roots(certs) => {
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
                if added == 0 {
                    return Err(EdgeTlsError::NoRoots);
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Trusts exactly the pinned CA: it must be in the chain the edge sends, and the chain is
/// then verified by webpki with it as the only root.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug, thiserror::Error)]
#[error("the edge's certificate chain does not contain the CA pinned in the tunnel token")]
struct PinMismatch;

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let anchor = intermediates
            .iter()
            .chain(std::iter::once(end_entity))
            .find(|c| self.pin.matches(c))
            .ok_or_else(|| {
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    Arc::new(PinMismatch),
                )))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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
