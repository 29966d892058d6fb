//! Real rustls handshakes over an in-memory duplex with `TunnelServerVerifier` on the
//! client: good certificates connect, bad ones fail naming the rule.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use mcp_tunnel_pki::generate::{self, KeyKind};
use mcp_tunnel_pki::validate::{CertRole, CertRuleError};
use mcp_tunnel_pki::verifier::{ClientIdentity, TunnelServerVerifier, client_config, rule_error};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    tls12_only: bool,
    client_ca: Option<CertificateDer<'static>>,
}

impl Server {
    fn new(chain: Vec<Vec<u8>>, key_pem: &str) -> Self {
        Self {
            chain: chain.into_iter().map(CertificateDer::from).collect(),
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("server key"),
            tls12_only: false,
            client_ca: None,
        }
    }

    fn config(self) -> ServerConfig {
        let provider = mcp_tunnel_pki::tls::provider();
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap();
        let builder = match self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).unwrap();
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        builder.with_single_cert(self.chain, self.key).unwrap()
    }
}

/// Runs one handshake plus a ping/pong; returns the client's result.
async fn handshake(
    server: Server,
    cas: Vec<Vec<u8>>,
    sni: &str,
    identity: Option<ClientIdentity>,
) -> std::io::Result<()> {
    let verifier =
        TunnelServerVerifier::new(cas.into_iter().map(CertificateDer::from).collect()).unwrap();
    let client = client_config(Arc::new(verifier), identity, vec![b"h2".to_vec()]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server.config()));
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let server_side = async move {
        let mut tls = acceptor.accept(s).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(b"pong").await?;
        tls.flush().await
    };
    let client_side = async move {
        let mut tls = connector.connect(name, c).await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        Ok(())
    };
    let (client_res, server_res) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(client_side, server_side)
    })
    .await
    .expect("handshake timed out");
    if client_res.is_ok() {
        server_res.expect("server side failed although the client succeeded");
    }
    client_res
}

fn generated_pair(kind: KeyKind) -> (generate::GeneratedCa, generate::GeneratedCert) {
    let ca = generate::generate_ca("tunnel CA", generate::DEFAULT_CA_VALIDITY).unwrap();
    let leaf = generate::issue_server_cert(
        &ca.cert_pem,
        ca.key_pem.expose(),
        &[format!("*.{DOMAIN}")],
        generate::DEFAULT_SERVER_CERT_VALIDITY,
        kind,
    )
    .unwrap();
    (ca, leaf)
}

fn expect_rule(res: std::io::Result<()>, matches: impl Fn(&CertRuleError) -> bool, text: &str) {
    let err = res.expect_err("handshake with a bad certificate succeeded");
    let rule = rule_error(&err).unwrap_or_else(|| panic!("no rule error in {err:?}"));
    assert!(matches(rule), "wrong rule: {rule:?}");
    let shown = err.to_string();
    assert!(shown.contains("invalid peer certificate"), "{shown}");
    assert!(shown.contains(text), "{shown:?} lacks {text:?}");
}

#[tokio::test]
async fn good_certificate_connects_over_tls13_and_tls12() {
    let (ca, leaf) = generated_pair(KeyKind::EcdsaP256);
    for tls12_only in [false, true] {
        let mut server = Server::new(vec![leaf.cert_der.clone()], leaf.key_pem.expose());
        server.tls12_only = tls12_only;
        handshake(server, vec![ca.cert_der.clone()], HOST, None)
            .await
            .unwrap_or_else(|e| panic!("tls12_only={tls12_only}: {e}"));
    }
}

#[tokio::test]
async fn rsa4096_server_certificate_connects() {
    let (ca, leaf) = generated_pair(KeyKind::Rsa4096);
    let server = Server::new(vec![leaf.cert_der.clone()], leaf.key_pem.expose());
    handshake(server, vec![ca.cert_der], HOST, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn openssl_recipe_connects() {
    let ossl = Openssl::new();
    let ca = recipe_ca(&ossl);
    let leaf = ossl.issue(
        "srv",
        "ca",
        "rsa:2048",
        "90",
        &server_extfile(&format!("*.{DOMAIN}")),
    );
    let server = Server::new(vec![der_of(&leaf)], &ossl.read("srv.key"));
    handshake(server, vec![der_of(&ca)], HOST, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn unregistered_ca_is_rejected() {
    let (_ca, leaf) = generated_pair(KeyKind::EcdsaP256);
    let (other_ca, _) = generated_pair(KeyKind::EcdsaP256);
    let server = Server::new(vec![leaf.cert_der.clone()], leaf.key_pem.expose());
    expect_rule(
        handshake(server, vec![other_ca.cert_der], HOST, None).await,
        |e| matches!(e, CertRuleError::UnknownIssuer { .. }),
        "must be signed by a CA certificate registered for this tunnel",
    );
}

#[tokio::test]
async fn wrong_san_is_rejected() {
    let (ca, leaf) = generated_pair(KeyKind::EcdsaP256);
    let server = Server::new(vec![leaf.cert_der.clone()], leaf.key_pem.expose());
    expect_rule(
        handshake(
            server,
            vec![ca.cert_der],
            "route.zzzz9999.tunnel.example",
            None,
        )
        .await,
        |e| matches!(e, CertRuleError::SanMismatch { .. }),
        "SubjectAltName must cover \"route.zzzz9999.tunnel.example\"",
    );
}

#[tokio::test]
async fn expired_certificate_is_rejected() {
    let ca = rcgen_ca("ca", |_| {});
    let t = SystemTime::now();
    let (leaf, key) = rcgen_leaf(&ca.issuer(), &[HOST], |p| {
        p.not_before = (t - days(30)).into();
        p.not_after = (t - days(1)).into();
    });
    let server = Server {
        chain: vec![CertificateDer::from(leaf)],
        key: PrivateKeyDer::try_from(key).unwrap(),
        tls12_only: false,
        client_ca: None,
    };
    expect_rule(
        handshake(server, vec![ca.der.clone()], HOST, None).await,
        |e| {
            matches!(
                e,
                CertRuleError::Expired {
                    role: CertRole::Server,
                    ..
                }
            )
        },
        "server certificate has expired",
    );
}

#[tokio::test]
async fn intermediate_in_chain_is_rejected() {
    let (ca, leaf) = generated_pair(KeyKind::EcdsaP256);
    let chain = vec![leaf.cert_der.clone(), ca.cert_der.clone()];
    let server = Server::new(chain, leaf.key_pem.expose());
    expect_rule(
        handshake(server, vec![ca.cert_der], HOST, None).await,
        |e| matches!(e, CertRuleError::IntermediatesPresent { count: 1 }),
        "intermediate certificates are not allowed",
    );
}

#[tokio::test]
async fn client_certificate_is_presented_when_required() {
    let (ca, leaf) = generated_pair(KeyKind::EcdsaP256);
    let client_ca = generate::generate_ca("client CA", generate::DEFAULT_CA_VALIDITY).unwrap();
    let client = generate::issue_client_cert(
        &client_ca.cert_pem,
        client_ca.key_pem.expose(),
        "agent-1",
        Duration::from_secs(3600),
        KeyKind::EcdsaP256,
    )
    .unwrap();
    let server_for = || {
        let mut s = Server::new(vec![leaf.cert_der.clone()], leaf.key_pem.expose());
        s.client_ca = Some(CertificateDer::from(client_ca.cert_der.clone()));
        s
    };
    let identity = ClientIdentity {
        chain: vec![CertificateDer::from(client.cert_der.clone())],
        key: PrivateKeyDer::from_pem_slice(client.key_pem.expose().as_bytes()).unwrap(),
    };
    handshake(
        server_for(),
        vec![ca.cert_der.clone()],
        HOST,
        Some(identity),
    )
    .await
    .expect("mutual TLS");
    // Without a client certificate the proxy refuses; the client's certificate check
    // passed, so there is no rule error to report.
    let err = handshake(server_for(), vec![ca.cert_der], HOST, None)
        .await
        .expect_err("server must require a client certificate");
    assert!(rule_error(&err).is_none(), "{err}");
}

/// The suite the client's and the server's configs settle on, the client offering `suites`
/// (all of the provider's when `None`).
async fn negotiated(suites: Option<Vec<rustls::SupportedCipherSuite>>) -> rustls::CipherSuite {
    let (ca, leaf) = generated_pair(KeyKind::EcdsaP256);
    let verifier = TunnelServerVerifier::new(vec![ca.cert_der.clone().into()]).unwrap();
    let mut client = client_config(Arc::new(verifier), None, vec![b"h2".to_vec()]).unwrap();
    if let Some(suites) = suites {
        let mut provider = (*mcp_tunnel_pki::tls::provider()).clone();
        provider.cipher_suites = suites;
        let verifier = TunnelServerVerifier::new(vec![ca.cert_der.into()]).unwrap();
        client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
    }
    let server = Server::new(vec![leaf.cert_der], leaf.key_pem.expose()).config();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(HOST.to_owned()).unwrap();
    let (client, server) = tokio::join!(connector.connect(name, c), acceptor.accept(s));
    let (client, server) = (client.unwrap(), server.unwrap());
    let suite = client
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .unwrap()
        .suite();
    assert_eq!(
        Some(suite),
        server
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite())
    );
    suite
}

#[tokio::test]
async fn aes128_gcm_is_preferred_and_aes256_still_accepted() {
    assert_eq!(
        negotiated(None).await,
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    let only_256 = rustls::crypto::aws_lc_rs::default_provider()
        .cipher_suites
        .into_iter()
        .filter(|s| s.suite() == rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
        .collect();
    assert_eq!(
        negotiated(Some(only_256)).await,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
}
