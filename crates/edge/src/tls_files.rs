//! Building the edge's (and the API's) rustls server configuration from PEM files that
//! are followed on disk: a renewed certificate is presented to new handshakes within
//! [`RELOAD_INTERVAL`], with no restart and no session dropped.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use mcp_tunnel_pki::reload::{CertFiles, Polled};
use mcp_tunnel_pki::tls::{LoadError, provider};
use mcp_tunnel_pki::validate::fmt_unix;

/// How often the certificate files are looked at.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Why the edge's certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{cert} / {key}: {reason}")]
    Config {
        cert: String,
        key: String,
        reason: String,
    },
}

/// A server config presenting the chain in `cert` (leaf first; include the CA so that
/// connectors can check the CA pin of their token) with the key in `key`, reloaded
/// every [`RELOAD_INTERVAL`] while the config is in use. Call inside a tokio runtime.
pub fn server_config_from_files(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
    server_config_reloading(cert, key, RELOAD_INTERVAL)
}

/// [`server_config_from_files`] with its poll interval.
pub fn server_config_reloading(
    cert: &Path,
    key: &Path,
    interval: Duration,
) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
    let files = Arc::new(CertFiles::load(cert, key)?);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth().with_cert_resolver(files.clone()))
        .map_err(|e| TlsFileError::Config {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason: e.to_string(),
        })?;
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(watch(Arc::downgrade(&files), interval));
    }
    Ok(Arc::new(config))
}

/// Polls until the last config using `files` is gone.
async fn watch(files: Weak<CertFiles>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(store) = files.upgrade() else {
            return;
        };
        // File reads and parsing are blocking work.
        let polled = tokio::task::spawn_blocking(move || {
            let polled = store.poll();
            (polled, store.cert_path().display().to_string())
        })
        .await;
        match polled {
            Ok((Polled::Reloaded(loaded), path)) => tracing::info!(
                path = %path,
                fingerprint = %loaded.fingerprint,
                not_after = %fmt_unix(loaded.not_after),
                "certificate reloaded"
            ),
            Ok((Polled::Rejected(e), path)) => tracing::warn!(
                path = %path,
                error = %e,
                "certificate reload failed, keeping the current certificate"
            ),
            Ok((Polled::Unchanged, _)) | Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use mcp_tunnel_pki::generate::{KeyKind, generate_ca, issue_server_cert};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    /// A CA and a leaf for `edge.test` written to `dir`; returns the CA's PEM.
    fn write_pair(dir: &Path) -> String {
        let ca = generate_ca("edge reload CA", Duration::from_secs(86_400)).unwrap();
        let leaf = issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &["edge.test".to_owned()],
            Duration::from_secs(3_600),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        // Write to temporary names and rename, as a careful renewal job does.
        for (name, body) in [
            ("tls.crt", &leaf.cert_pem),
            ("tls.key", &leaf.key_pem.expose().to_owned()),
        ] {
            let tmp = dir.join(format!("{name}.tmp"));
            std::fs::write(&tmp, body).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
        ca.cert_pem
    }

    fn client(cas: &[&str]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for pem in cas {
            use rustls_pki_types::pem::PemObject as _;
            let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            roots.add(der).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// Opens a TLS session over an in-memory pipe; returns the served leaf's fingerprint
    /// and both ends.
    async fn connect(
        server: &Arc<rustls::ServerConfig>,
        client: &TlsConnector,
    ) -> (
        String,
        tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
        tokio_rustls::server::TlsStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(server.clone());
        let name = rustls_pki_types::ServerName::try_from("edge.test").unwrap();
        let (c, s) = tokio::join!(client.connect(name, a), acceptor.accept(b));
        let c = c.unwrap();
        let leaf = c.get_ref().1.peer_certificates().unwrap()[0].clone();
        (
            mcp_tunnel_pki::crypto::sha256_hex(leaf.as_ref()),
            c,
            s.unwrap(),
        )
    }

    async fn served_until(
        server: &Arc<rustls::ServerConfig>,
        client: &TlsConnector,
        want: impl Fn(&str) -> bool,
    ) -> String {
        for _ in 0..100 {
            let (fp, _, _) = connect(server, client).await;
            if want(&fp) {
                return fp;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the expected certificate was never served");
    }

    #[tokio::test]
    async fn a_renewed_pair_is_served_to_new_sessions_and_open_ones_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key): (PathBuf, PathBuf) =
            (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let ca1 = write_pair(dir.path());
        let server = server_config_reloading(&cert, &key, Duration::from_millis(50)).unwrap();
        let trusting = client(&[&ca1]);
        let (first, mut open_c, mut open_s) = connect(&server, &trusting).await;

        let ca2 = write_pair(dir.path());
        let both = client(&[&ca1, &ca2]);
        let second = served_until(&server, &both, |fp| fp != first).await;
        assert_ne!(first, second);

        // The session opened before the swap still carries data both ways.
        open_c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        open_s.read_exact(&mut buf).await.unwrap();
        open_s.write_all(b"pong").await.unwrap();
        open_c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");

        // A bad new pair is ignored: the renewed one stays.
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (still, _, _) = connect(&server, &both).await;
        assert_eq!(still, second);
    }

    #[tokio::test]
    async fn a_bad_pair_at_start_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let err = server_config_from_files(&cert, &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.crt"), "{err}");
    }
}
