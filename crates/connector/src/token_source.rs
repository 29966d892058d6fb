//! Where the tunnel token comes from. A token file is re-read before every connection
//! attempt and watched, so that a rotated token takes effect without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_tunnel_pki::crypto::{self, Secret};
use mcp_tunnel_proto::{TokenError, TunnelToken};
use tokio::sync::Notify;

/// Why no usable token could be obtained.
#[derive(Debug, thiserror::Error)]
pub enum TokenLoadError {
    #[error("cannot read token file: {0}")]
    Read(#[from] mcp_tunnel_pki::tls::LoadError),
    #[error("token file {path} is not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{origin}: {error}")]
    Invalid {
        origin: String,
        #[source]
        error: TokenError,
    },
}

/// The configured token origin.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// From `TUNNEL_TOKEN` or `--token` (already validated at start).
    Fixed(Box<TunnelToken>),
    /// From `--token-file`, re-read on every attempt.
    File(PathBuf),
}

impl TokenSource {
    /// A fixed token from a string; `origin` names where it came from for errors.
    pub fn fixed(value: &Secret, origin: &str) -> Result<Self, TokenLoadError> {
        TunnelToken::parse(value.expose())
            .map(|t| Self::Fixed(Box::new(t)))
            .map_err(|error| TokenLoadError::Invalid {
                origin: origin.to_owned(),
                error,
            })
    }

    pub fn load(&self) -> Result<TunnelToken, TokenLoadError> {
        match self {
            Self::Fixed(t) => Ok((**t).clone()),
            Self::File(path) => {
                let raw = read(path)?;
                TunnelToken::parse(&raw).map_err(|error| TokenLoadError::Invalid {
                    origin: path.display().to_string(),
                    error,
                })
            }
        }
    }
}

fn read(path: &Path) -> Result<String, TokenLoadError> {
    let bytes = mcp_tunnel_pki::tls::read_file(path)?;
    String::from_utf8(bytes).map_err(|_| TokenLoadError::NotUtf8 {
        path: path.to_owned(),
    })
}

/// Polls a token file and wakes `changed` waiters when its content changes, so that
/// connections backing off after a rejection retry at once with the new token.
/// (Polling, not inotify: it also works for Kubernetes secret volumes, which swap symlinks.)
pub async fn watch(path: PathBuf, changed: Arc<Notify>, every: Duration) {
    let digest = |p: &Path| {
        mcp_tunnel_pki::tls::read_file(p)
            .ok()
            .map(|b| crypto::sha256(&b))
    };
    let mut last = digest(&path);
    loop {
        tokio::time::sleep(every).await;
        let now = digest(&path);
        if now != last {
            last = now;
            tracing::info!(path = %path.display(), "tunnel token file changed; reconnecting connections that are waiting");
            changed.notify_waiters();
        }
    }
}
