//! The inner-TLS server certificate, reloaded from disk without dropping sessions:
//! [`CertFiles`] does the polling and swapping; this adds the proxy's log lines and
//! metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_tunnel_pki::reload::{CertFiles, Polled};
use mcp_tunnel_pki::tls::{LoadError, LoadedCert};
use mcp_tunnel_pki::validate::fmt_unix;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::metrics::ProxyMetrics;

/// What one poll of the certificate files did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    Unchanged,
    Reloaded,
    Rejected,
}

#[derive(Debug)]
pub struct CertStore {
    files: CertFiles,
    metrics: Arc<ProxyMetrics>,
}

impl CertStore {
    /// Loads the pair once; failing here is a start-up error.
    pub fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Self, LoadError> {
        let files = CertFiles::load(&cert_path, &key_path)?;
        metrics.cert_not_after.set(files.current().not_after);
        Ok(Self { files, metrics })
    }

    pub fn current(&self) -> Arc<LoadedCert> {
        self.files.current()
    }

    /// Looks at the files once and swaps in a changed, valid pair.
    pub fn poll(&self) -> ReloadOutcome {
        match self.files.poll() {
            Polled::Unchanged => ReloadOutcome::Unchanged,
            Polled::Reloaded(loaded) => {
                tracing::info!(
                    fingerprint = %loaded.fingerprint,
                    not_after = %fmt_unix(loaded.not_after),
                    "certificate reloaded"
                );
                self.metrics.cert_not_after.set(loaded.not_after);
                self.metrics.cert_reloads.inc(&["ok"]);
                ReloadOutcome::Reloaded
            }
            Polled::Rejected(e) => {
                tracing::warn!(error = %e, "certificate reload failed, keeping the current certificate");
                self.metrics.cert_reloads.inc(&["rejected"]);
                ReloadOutcome::Rejected
            }
        }
    }

    /// Polls every `interval` until `shutdown`.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let store = self.clone();
                    // File reads and parsing are blocking work.
                    let _ = tokio::task::spawn_blocking(move || store.poll()).await;
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.files.resolve(hello)
    }
}
