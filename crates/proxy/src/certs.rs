//! The inner-TLS server certificate, reloaded from disk without dropping sessions.
//!
//! The files are polled: a changed pair that loads and matches is swapped in for new
//! handshakes (established sessions keep the keys they negotiated); a pair that fails to
//! load is logged and the current one kept. A half-written pair (new certificate, old
//! key) fails the key match and is retried on the next poll, when the writer is done.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use mcp_tunnel_pki::crypto::sha256;
use mcp_tunnel_pki::tls::{LoadError, LoadedCert, load_certified_key, read_file};
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
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<LoadedCert>,
    /// Digest of the file contents last looked at, loaded or not, so a bad pair is
    /// reported once rather than on every poll.
    last_seen: Mutex<Option<[u8; 32]>>,
    metrics: Arc<ProxyMetrics>,
}

impl CertStore {
    /// Loads the pair once; failing here is a start-up error.
    pub fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Self, LoadError> {
        let digest = files_digest(&cert_path, &key_path)?;
        let loaded = load_certified_key(&cert_path, &key_path)?;
        metrics.cert_not_after.set(loaded.not_after);
        Ok(Self {
            cert_path,
            key_path,
            current: ArcSwap::from_pointee(loaded),
            last_seen: Mutex::new(Some(digest)),
            metrics,
        })
    }

    pub fn current(&self) -> Arc<LoadedCert> {
        self.current.load_full()
    }

    /// Looks at the files once and swaps in a changed, valid pair.
    pub fn poll(&self) -> ReloadOutcome {
        let digest = match files_digest(&self.cert_path, &self.key_path) {
            Ok(d) => d,
            Err(e) => return self.reject(None, &e),
        };
        {
            let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            if *last == Some(digest) {
                return ReloadOutcome::Unchanged;
            }
            *last = Some(digest);
        }
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(loaded) => {
                tracing::info!(
                    fingerprint = %loaded.fingerprint,
                    not_after = %format_unix(loaded.not_after),
                    "certificate reloaded"
                );
                self.metrics.cert_not_after.set(loaded.not_after);
                self.metrics.cert_reloads.inc(&["ok"]);
                self.current.store(Arc::new(loaded));
                ReloadOutcome::Reloaded
            }
            Err(e) => self.reject(Some(digest), &e),
        }
    }

    fn reject(&self, digest: Option<[u8; 32]>, e: &LoadError) -> ReloadOutcome {
        if digest.is_none() {
            // Unreadable files: report each time the state changes, not every poll.
            let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none() {
                return ReloadOutcome::Unchanged;
            }
            *last = None;
        }
        tracing::warn!(error = %e, "certificate reload failed, keeping the current certificate");
        self.metrics.cert_reloads.inc(&["rejected"]);
        ReloadOutcome::Rejected
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
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified_key.clone())
    }
}

fn files_digest(cert: &std::path::Path, key: &std::path::Path) -> Result<[u8; 32], LoadError> {
    let mut both = read_file(cert)?;
    both.extend_from_slice(&read_file(key)?);
    Ok(sha256(&both))
}

/// RFC 3339 UTC for a Unix time, for log fields.
pub fn format_unix(secs: i64) -> String {
    // Days-from-civil inverse (Howard Hinnant's algorithm), to avoid a date dependency.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::format_unix;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
