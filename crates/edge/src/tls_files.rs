//! Building the edge's rustls server configuration from PEM files.

use std::path::Path;
use std::sync::Arc;

use mcp_tunnel_pki::tls::{LoadError, load_certs, load_key, provider};

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
/// connectors can check the CA pin of their token) with the key in `key`.
pub fn server_config_from_files(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
    let chain = load_certs(cert)?;
    let private = load_key(key)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| TlsFileError::Config {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(config))
}
