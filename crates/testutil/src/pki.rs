//! Certificates for tests, made with the project's own generator at run time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_tunnel_pki::generate::{self, GeneratedCert, KeyKind};

/// A tunnel CA and a wildcard server certificate for `*.<domain>`, written to `dir`.
#[derive(Debug)]
pub struct TestPki {
    pub domain: String,
    pub ca: GeneratedCert,
    pub server: GeneratedCert,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path, domain: &str) -> Self {
        let ca = generate::generate_ca("test tunnel CA", Duration::from_secs(86_400 * 30))
            .expect("generate CA");
        let server = Self::issue(&ca, domain, Duration::from_secs(86_400 * 7));
        let ca_file = dir.join("ca.crt");
        let cert_file = dir.join("tls.crt");
        let key_file = dir.join("tls.key");
        std::fs::write(&ca_file, &ca.cert_pem).unwrap();
        std::fs::write(&cert_file, &server.cert_pem).unwrap();
        std::fs::write(&key_file, server.key_pem.expose()).unwrap();
        Self {
            domain: domain.to_owned(),
            ca,
            server,
            ca_file,
            cert_file,
            key_file,
        }
    }

    /// A new server certificate for `*.<domain>` from this CA.
    pub fn issue(ca: &GeneratedCert, domain: &str, validity: Duration) -> GeneratedCert {
        generate::issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &[format!("*.{domain}")],
            validity,
            KeyKind::EcdsaP256,
        )
        .expect("issue server certificate")
    }

    /// The CA as DER, for [`mcp_tunnel_client::InnerTls::trusting`]-style trust.
    pub fn ca_der(&self) -> rustls_pki_types::CertificateDer<'static> {
        self.ca.cert_der.clone().into()
    }
}
