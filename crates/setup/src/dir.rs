//! `dir:/path`: one file per key. Each file is replaced atomically (a temporary file in
//! the same directory, written, synced, then renamed over the old one), so a proxy or
//! connector watching the directory never reads half a certificate or token. A renamed
//! file is a new one, owned by the running user, whatever the old one was.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::SetupError;
use crate::keys;
use crate::output::Contents;

#[derive(Debug, Clone)]
pub struct DirOutput {
    path: PathBuf,
}

fn reason(e: &std::io::Error) -> String {
    mcp_tunnel_pki::tls::io_reason(e)
}

impl DirOutput {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn read(&self) -> Result<Contents, SetupError> {
        let mut out = Contents::new();
        for key in keys::ALL {
            let p = self.path.join(key);
            match std::fs::read(&p) {
                Ok(v) => {
                    out.insert(key.to_owned(), v);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(SetupError::Read {
                        path: p.display().to_string(),
                        reason: reason(&e),
                    });
                }
            }
        }
        Ok(out)
    }

    pub fn write(&self, changes: &Contents) -> Result<(), SetupError> {
        self.ensure_dir()?;
        // In the order of keys::ALL: the key before its certificate, so a watcher that
        // sees the new certificate also finds its key.
        for key in keys::ALL {
            let Some(value) = changes.get(key) else {
                continue;
            };
            let target = self.path.join(key);
            if std::fs::read(&target).is_ok_and(|old| &old == value)
                && mode_ok(&target, keys::is_secret(key))
            {
                continue;
            }
            write_atomic(&target, value, keys::is_secret(key))?;
        }
        sync_dir(&self.path)
    }

    /// Creates the directory (mode 0700) when it is missing; an existing one is left as
    /// the operator made it (Compose needs it owned by the containers' user).
    fn ensure_dir(&self) -> Result<(), SetupError> {
        if self.path.is_dir() {
            return Ok(());
        }
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&self.path).map_err(|e| SetupError::Write {
            path: self.path.display().to_string(),
            reason: reason(&e),
        })
    }
}

fn mode_of(secret: bool) -> u32 {
    if secret { 0o600 } else { 0o644 }
}

/// Whether the file already has the mode setup gives it (a value rewritten only for
/// its mode is still rewritten).
fn mode_ok(path: &Path, secret: bool) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == mode_of(secret))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, secret);
        true
    }
}

/// Writes `value` to a new temporary file beside `target` (created with its final mode,
/// so a secret is never readable by others, not even briefly), syncs it and renames it
/// over `target`.
pub fn write_atomic(target: &Path, value: &[u8], secret: bool) -> Result<(), SetupError> {
    let err = |p: &Path, e: std::io::Error| SetupError::Write {
        path: p.display().to_string(),
        reason: reason(&e),
    };
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = hex(&mcp_tunnel_pki::crypto::random_bytes(6));
    let tmp = dir.join(format!(".{name}.tmp-{suffix}"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode_of(secret));
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        // The umask may have narrowed the mode: set it exactly.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode_of(secret)))?;
        }
        f.write_all(value)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(&tmp, e));
    }
    std::fs::rename(&tmp, target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(target, e)
    })
}

fn sync_dir(dir: &Path) -> Result<(), SetupError> {
    // A rename is durable only once its directory is synced.
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().map_err(|e| SetupError::Write {
            path: dir.display().to_string(),
            reason: reason(&e),
        })?;
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn writes_atomically_with_modes_and_skips_unchanged_values() {
        let tmp = tempfile::tempdir().unwrap();
        let out = DirOutput::new(tmp.path().join("sub/data"));
        let mut c = Contents::new();
        c.insert(keys::TLS_KEY.into(), b"key".to_vec());
        c.insert(keys::TLS_CERT.into(), b"cert".to_vec());
        out.write(&c).unwrap();
        let dir_mode = std::fs::metadata(out.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let key = out.path().join(keys::TLS_KEY);
        let meta = std::fs::metadata(&key).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(out.path().join(keys::TLS_CERT))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        let inode = meta.ino();
        // Unchanged: not rewritten (same inode). Changed: a new file.
        out.write(&c).unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().ino(), inode);
        c.insert(keys::TLS_KEY.into(), b"key2".to_vec());
        out.write(&c).unwrap();
        assert_ne!(std::fs::metadata(&key).unwrap().ino(), inode);
        assert_eq!(out.read().unwrap()[keys::TLS_KEY], b"key2");
        // A secret with too wide a mode is rewritten with 0600.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        out.write(&c).unwrap();
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }
}
