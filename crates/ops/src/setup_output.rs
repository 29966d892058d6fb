//! The setup component's output (SPEC §9): a directory (`dir:/path`) or a Kubernetes
//! Secret (`k8s-secret:NAME`) holding `tunnel-id`, `tunnel-domain`, `tunnel-token`,
//! `ca.crt`, `ca.key`, `tls.crt`, `tls.key` and the token-version state.
//!
//! The names come from `mcp_tunnel_setup::keys`, the one definition of that layout, so
//! `doctor`, `teardown` and `incident` read exactly what `setup init` writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use mcp_tunnel_setup::keys::{
    CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, TOKEN_VERSION, TUNNEL_DOMAIN, TUNNEL_ID, TUNNEL_TOKEN,
};

/// Every name the setup output may hold.
pub const ALL_ENTRIES: [&str; 8] = mcp_tunnel_setup::keys::ALL;

/// Entries that are credentials: must be readable by the owner only (the ones
/// `mcp_tunnel_setup::keys::is_secret` names, in report order).
pub const SECRET_ENTRIES: [&str; 3] = [CA_KEY, TLS_KEY, TUNNEL_TOKEN];

/// Where an output lives, as written in `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLocation {
    Dir(PathBuf),
    Secret(String),
}

impl OutputLocation {
    /// `dir:/path` or `k8s-secret:NAME`; a bare path is taken as a directory.
    pub fn parse(s: &str) -> Result<Self, OutputError> {
        if let Some(p) = s.strip_prefix("dir:") {
            if p.is_empty() {
                return Err(OutputError::BadLocation(s.to_owned()));
            }
            return Ok(Self::Dir(PathBuf::from(p)));
        }
        if let Some(n) = s.strip_prefix("k8s-secret:") {
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            {
                return Err(OutputError::BadLocation(s.to_owned()));
            }
            return Ok(Self::Secret(n.to_owned()));
        }
        if s.is_empty() || s.contains(':') {
            return Err(OutputError::BadLocation(s.to_owned()));
        }
        Ok(Self::Dir(PathBuf::from(s)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("--output {0:?}: expected dir:/path or k8s-secret:NAME")]
    BadLocation(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// One entry of the output, with file metadata when it came from a directory.
#[derive(Clone)]
pub struct Entry {
    pub bytes: Vec<u8>,
    /// Unix permission bits (`None` for Secret keys).
    pub mode: Option<u32>,
    pub modified: Option<SystemTime>,
    /// The file it was read from (`None` for Secret keys).
    pub path: Option<PathBuf>,
}

// Entries hold private keys and the token: never print their bytes.
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("len", &self.bytes.len())
            .field("mode", &self.mode.map(|m| format!("{m:o}")))
            .field("path", &self.path)
            .finish()
    }
}

/// What was found at an output location.
#[derive(Debug, Clone, Default)]
pub struct SetupOutput {
    /// For messages: `dir:/path` or `k8s-secret:NAME`.
    pub source: String,
    pub entries: BTreeMap<String, Entry>,
}

impl SetupOutput {
    /// Reads the SPEC §9 entries present in `dir` (missing ones are simply absent).
    pub fn read_dir(dir: &Path) -> Result<Self, OutputError> {
        let meta = std::fs::metadata(dir).map_err(|e| OutputError::Read {
            path: dir.display().to_string(),
            reason: mcp_tunnel_pki::tls::io_reason(&e),
        })?;
        if !meta.is_dir() {
            return Err(OutputError::Read {
                path: dir.display().to_string(),
                reason: "not a directory".into(),
            });
        }
        let mut entries = BTreeMap::new();
        for name in [
            TUNNEL_ID,
            TUNNEL_DOMAIN,
            TUNNEL_TOKEN,
            CA_CERT,
            CA_KEY,
            TLS_CERT,
            TLS_KEY,
        ] {
            let path = dir.join(name);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|e| OutputError::Read {
                path: path.display().to_string(),
                reason: mcp_tunnel_pki::tls::io_reason(&e),
            })?;
            entries.insert(
                name.to_owned(),
                Entry {
                    bytes,
                    mode: Some(mode_of(&meta)),
                    modified: meta.modified().ok(),
                    path: Some(path),
                },
            );
        }
        Ok(Self {
            source: format!("dir:{}", dir.display()),
            entries,
        })
    }

    /// From a Secret's decoded `data`.
    pub fn from_secret(name: &str, data: BTreeMap<String, Vec<u8>>) -> Self {
        Self {
            source: format!("k8s-secret:{name}"),
            entries: data
                .into_iter()
                .map(|(k, bytes)| {
                    (
                        k,
                        Entry {
                            bytes,
                            mode: None,
                            modified: None,
                            path: None,
                        },
                    )
                })
                .collect(),
        }
    }

    /// An entry as trimmed UTF-8 text (ids, domain, token).
    pub fn text(&self, name: &str) -> Option<String> {
        let e = self.entries.get(name)?;
        let s = std::str::from_utf8(&e.bytes).ok()?.trim().to_owned();
        (!s.is_empty()).then_some(s)
    }

    pub fn tunnel_id(&self) -> Option<String> {
        self.text(TUNNEL_ID)
    }

    pub fn tunnel_domain(&self) -> Option<String> {
        self.text(TUNNEL_DOMAIN)
            .map(|d| d.trim_matches('.').to_ascii_lowercase())
    }
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(_meta: &std::fs::Metadata) -> u32 {
    0o600
}

/// Writes `contents` to `path` atomically (temporary file + rename) with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), OutputError> {
    use std::io::Write as _;
    let err = |e: std::io::Error| OutputError::Write {
        path: path.display().to_string(),
        reason: mcp_tunnel_pki::tls::io_reason(&e),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_entries_are_exactly_the_ones_setup_treats_as_secret() {
        let secret: Vec<&str> = super::ALL_ENTRIES
            .into_iter()
            .filter(|k| mcp_tunnel_setup::keys::is_secret(k))
            .collect();
        let mut expected = super::SECRET_ENTRIES.to_vec();
        expected.sort_unstable();
        let mut secret = secret;
        secret.sort_unstable();
        assert_eq!(secret, expected);
    }

    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            OutputLocation::parse("dir:/data").unwrap(),
            OutputLocation::Dir("/data".into())
        );
        assert_eq!(
            OutputLocation::parse("k8s-secret:mcp-tunnel").unwrap(),
            OutputLocation::Secret("mcp-tunnel".into())
        );
        assert_eq!(
            OutputLocation::parse("./data").unwrap(),
            OutputLocation::Dir("./data".into())
        );
        assert!(OutputLocation::parse("k8s-secret:").is_err());
        assert!(OutputLocation::parse("k8s-secret:Bad_Name").is_err());
        assert!(OutputLocation::parse("s3:bucket").is_err());
    }

    #[test]
    fn reads_present_entries_and_never_prints_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TUNNEL_ID), "tnl_abc\n").unwrap();
        std::fs::write(dir.path().join(TUNNEL_TOKEN), "eyJsecret").unwrap();
        let out = SetupOutput::read_dir(dir.path()).unwrap();
        assert_eq!(out.tunnel_id().as_deref(), Some("tnl_abc"));
        assert!(!out.entries.contains_key(CA_KEY));
        assert!(!format!("{out:?}").contains("eyJsecret"));
    }
}
