//! `mcp-tunnel server renew-certs`: re-issues the server's own certificates in its data
//! directory (`edge.pem` for the connector and client listeners, `api.pem` for the API)
//! from `edge-ca.key`, with the names they carry now, when they are close to expiry. The
//! running server picks the new pairs up within its reload interval; nothing restarts.
//!
//! All or nothing: every file is read and checked before any is written, and each new
//! file is written beside its target and renamed into place. A certificate that
//! `edge-ca.pem` did not issue (one the operator put there from a public CA) is left
//! alone and reported, never replaced by one the SDKs would not trust.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_tunnel_pki::generate::{self, KeyKind, Validity};
use mcp_tunnel_pki::tls::{self, CertSummary};
use mcp_tunnel_pki::validate::fmt_unix;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::launch::{
    API_CERT, API_KEY, EDGE_CA_CERT, EDGE_CA_KEY, EDGE_CERT, EDGE_KEY, LEAF_VALIDITY, LaunchError,
    read_config, write,
};

/// Options of `server renew-certs`.
#[derive(Debug, Clone)]
pub struct RenewOptions {
    pub data_dir: PathBuf,
    /// Renew a certificate with less than this left.
    pub renew_before: Duration,
    /// Renew whatever is left.
    pub force: bool,
}

/// What happened to one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Enough time left.
    NotDue {
        not_after: i64,
    },
    Renewed {
        was: i64,
        not_after: i64,
    },
    /// Not issued by `edge-ca.pem`: not ours to renew.
    Foreign,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub file: &'static str,
    pub names: Vec<String>,
    pub outcome: Outcome,
}

impl fmt::Display for Renewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names.join(", ");
        match &self.outcome {
            Outcome::NotDue { not_after } => write!(
                f,
                "{}: valid until {} ({names}); not due, left as it is",
                self.file,
                fmt_unix(*not_after)
            ),
            Outcome::Renewed { was, not_after } => write!(
                f,
                "{}: renewed, valid until {} (was {}; {names})",
                self.file,
                fmt_unix(*not_after),
                fmt_unix(*was)
            ),
            Outcome::Foreign => write!(
                f,
                "{}: not issued by {EDGE_CA_CERT}; left alone (renew it where it came from)",
                self.file
            ),
        }
    }
}

/// Why renewal could not run. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(
        "{path} is missing: renewal signs with the edge CA's key. Put it back from where you \
         keep it, run renew-certs, and move it away again"
    )]
    NoCaKey { path: String },
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "{EDGE_CA_CERT} expires on {not_after}: a certificate it issues would end then too. \
         Tunnel tokens pin this CA, so replacing it means new tokens for every tunnel"
    )]
    CaExpiring { not_after: String },
    #[error(transparent)]
    Generate(#[from] generate::GenError),
}

/// Checks both certificates, then renews those that are due.
pub fn renew(o: &RenewOptions) -> Result<Vec<Renewal>, RenewError> {
    let dir = &o.data_dir;
    read_config(dir)?;
    let ca_cert_path = dir.join(EDGE_CA_CERT);
    let ca_key_path = dir.join(EDGE_CA_KEY);
    let ca_pem = read_text(&ca_cert_path)?;
    let ca = first_cert(&ca_cert_path, &ca_pem)?;
    let now = SystemTime::now();
    let ca_left = ca.not_after - unix(now);
    // Every renewed certificate gets the same validity, bounded by the CA's own.
    let lifetime = LEAF_VALIDITY.min(Duration::from_secs(ca_left.max(0) as u64));
    let validity = Validity::from_now(lifetime);
    let mut plans = Vec::new();
    for (file, key) in [(EDGE_CERT, EDGE_KEY), (API_CERT, API_KEY)] {
        let path = dir.join(file);
        let current = first_cert(&path, &read_text(&path)?)?;
        if current.names.is_empty() {
            return Err(RenewError::Unreadable {
                path: path.display().to_string(),
                reason: "the certificate names no host (no subjectAltName)".into(),
            });
        }
        let outcome = if current.issuer != ca.subject {
            Outcome::Foreign
        } else if o.force || current.not_after - unix(now) < o.renew_before.as_secs() as i64 {
            Outcome::Renewed {
                was: current.not_after,
                not_after: unix(validity.not_after),
            }
        } else {
            Outcome::NotDue {
                not_after: current.not_after,
            }
        };
        plans.push((file, key, current.names, outcome));
    }
    let due = plans
        .iter()
        .any(|(.., o)| matches!(o, Outcome::Renewed { .. }));
    if !due {
        return Ok(finish(plans));
    }
    // A day is the least worth issuing; the CA bounds every certificate it signs.
    if ca_left < 86_400 {
        return Err(RenewError::CaExpiring {
            not_after: fmt_unix(ca.not_after),
        });
    }
    let ca_key = match std::fs::read_to_string(&ca_key_path) {
        Ok(k) => k,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RenewError::NoCaKey {
                path: ca_key_path.display().to_string(),
            });
        }
        Err(e) => {
            return Err(RenewError::Unreadable {
                path: ca_key_path.display().to_string(),
                reason: tls::io_reason(&e),
            });
        }
    };
    // Issue everything first: a failure here leaves every file as it was.
    let mut issued = Vec::new();
    for (file, key, names, outcome) in &plans {
        if matches!(outcome, Outcome::Renewed { .. }) {
            let cert =
                generate::issue_server_cert(&ca_pem, &ca_key, names, validity, KeyKind::EcdsaP256)?;
            issued.push((*file, *key, cert));
        }
    }
    for (file, key, cert) in &issued {
        // The key first: until the certificate follows, the server's reload sees a pair
        // that does not match and keeps the current one.
        replace(&dir.join(key), cert.key_pem.expose(), true)?;
        replace(
            &dir.join(file),
            &format!("{}{ca_pem}", cert.cert_pem),
            false,
        )?;
    }
    Ok(finish(plans))
}

fn finish(plans: Vec<(&'static str, &'static str, Vec<String>, Outcome)>) -> Vec<Renewal> {
    plans
        .into_iter()
        .map(|(file, _, names, outcome)| Renewal {
            file,
            names,
            outcome,
        })
        .collect()
}

fn read_text(path: &Path) -> Result<String, RenewError> {
    std::fs::read_to_string(path).map_err(|e| RenewError::Unreadable {
        path: path.display().to_string(),
        reason: tls::io_reason(&e),
    })
}

/// The first certificate of a PEM file, summarised.
fn first_cert(path: &Path, pem: &str) -> Result<CertSummary, RenewError> {
    let bad = |reason: String| RenewError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| bad("no PEM certificate in it".into()))?
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    tls::summary(&der).map_err(|e| bad(format!("not a readable certificate: {e}")))
}

/// Writes `contents` beside `path` and renames it into place.
fn replace(path: &Path, contents: &str, secret: bool) -> Result<(), RenewError> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.renew"));
    let _ = std::fs::remove_file(&tmp);
    write(&tmp, contents, secret)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RenewError::Launch(LaunchError::Write {
            path: path.display().to_string(),
            reason: tls::io_reason(&e),
        })
    })
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
