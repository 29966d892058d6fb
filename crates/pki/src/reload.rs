//! A server certificate that follows its files on disk: every listener that terminates
//! TLS (proxy, edge, API) resolves its certificate through a [`CertFiles`] and polls it.
//!
//! A changed pair that loads and matches is swapped in for new handshakes; established
//! sessions keep the keys they negotiated. A pair that fails to load is reported once and
//! the current one kept. A half-written pair (new certificate, old key) fails the key
//! match and is picked up on a later poll, when the writer is done.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::crypto::sha256;
use crate::tls::{LoadError, LoadedCert, load_certified_key, read_file};

/// What one look at the files found.
#[derive(Debug)]
pub enum Polled {
    /// Same bytes as last time (or still unreadable, already reported).
    Unchanged,
    /// A new, valid pair: handshakes from now on present it.
    Reloaded(Arc<LoadedCert>),
    /// New bytes that do not make a usable pair; the current certificate stays.
    Rejected(LoadError),
}

#[derive(Debug)]
pub struct CertFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<LoadedCert>,
    /// Digest of the contents last looked at, loaded or not (`None`: unreadable), so a
    /// bad pair is reported once rather than on every poll.
    last_seen: Mutex<Option<[u8; 32]>>,
}

impl CertFiles {
    /// Loads the pair once; failing here is a start-up error.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, LoadError> {
        let digest = files_digest(cert_path, key_path)?;
        let loaded = load_certified_key(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::from_pointee(loaded),
            last_seen: Mutex::new(Some(digest)),
        })
    }

    pub fn current(&self) -> Arc<LoadedCert> {
        self.current.load_full()
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Looks at the files once and swaps in a changed, valid pair. Blocking file I/O.
    pub fn poll(&self) -> Polled {
        let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        let digest = match files_digest(&self.cert_path, &self.key_path) {
            Ok(d) => d,
            // Unreadable: report when the state changes, not on every poll.
            Err(_) if last.is_none() => return Polled::Unchanged,
            Err(e) => {
                *last = None;
                return Polled::Rejected(e);
            }
        };
        if *last == Some(digest) {
            return Polled::Unchanged;
        }
        *last = Some(digest);
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                self.current.store(loaded.clone());
                Polled::Reloaded(loaded)
            }
            Err(e) => Polled::Rejected(e),
        }
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified_key.clone())
    }
}

fn files_digest(cert: &Path, key: &Path) -> Result<[u8; 32], LoadError> {
    let mut both = read_file(cert)?;
    both.extend_from_slice(&read_file(key)?);
    Ok(sha256(&both))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::generate::{KeyKind, generate_ca, issue_server_cert};

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    fn pair(name: &str) -> (String, String) {
        let ca = generate_ca("reload test CA", Duration::from_secs(86_400)).unwrap();
        let leaf = issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &[name.to_owned()],
            Duration::from_secs(3_600),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        (leaf.cert_pem, leaf.key_pem.expose().to_owned())
    }

    fn files(cert: &str, key: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        Files {
            _dir: dir,
            cert: c,
            key: k,
        }
    }

    #[test]
    fn a_new_valid_pair_is_swapped_in_once() {
        let (c1, k1) = pair("a.example");
        let f = files(&c1, &k1);
        let store = CertFiles::load(&f.cert, &f.key).unwrap();
        let first = store.current().fingerprint.clone();
        assert!(matches!(store.poll(), Polled::Unchanged));

        let (c2, k2) = pair("a.example");
        std::fs::write(&f.cert, &c2).unwrap();
        std::fs::write(&f.key, &k2).unwrap();
        let Polled::Reloaded(new) = store.poll() else {
            panic!("expected a reload");
        };
        assert_ne!(new.fingerprint, first);
        assert_eq!(store.current().fingerprint, new.fingerprint);
        assert!(matches!(store.poll(), Polled::Unchanged));
    }

    #[test]
    fn a_bad_pair_is_reported_once_and_the_current_one_kept() {
        let (c1, k1) = pair("a.example");
        let f = files(&c1, &k1);
        let store = CertFiles::load(&f.cert, &f.key).unwrap();
        let first = store.current().fingerprint.clone();

        // Half-written rotation: the new certificate beside the old key.
        let (c2, k2) = pair("a.example");
        std::fs::write(&f.cert, &c2).unwrap();
        assert!(matches!(
            store.poll(),
            Polled::Rejected(LoadError::Mismatch { .. })
        ));
        assert!(matches!(store.poll(), Polled::Unchanged), "reported once");
        assert_eq!(store.current().fingerprint, first);

        // The writer finishes: picked up on the next poll.
        std::fs::write(&f.key, &k2).unwrap();
        assert!(matches!(store.poll(), Polled::Reloaded(_)));

        // Garbage, then a missing file: each reported once, the last good pair kept.
        let good = store.current().fingerprint.clone();
        std::fs::write(&f.cert, "not a certificate").unwrap();
        assert!(matches!(store.poll(), Polled::Rejected(_)));
        std::fs::remove_file(&f.key).unwrap();
        assert!(matches!(
            store.poll(),
            Polled::Rejected(LoadError::Open { .. })
        ));
        assert!(matches!(store.poll(), Polled::Unchanged));
        assert_eq!(store.current().fingerprint, good);
    }
}
