//! Credentials at rest: private keys and the tunnel token readable by their owner only,
//! and the token's age against the rotation policy.

use std::path::Path;
use std::time::SystemTime;

use crate::finding::{Finding, Severity};
use crate::setup_output::{SECRET_ENTRIES, SetupOutput};

/// One finding per credential of the setup output, `files.permissions.<name>`.
pub fn check_output(out: &SetupOutput) -> Vec<Finding> {
    let mut v = Vec::new();
    for name in SECRET_ENTRIES {
        let id = format!("files.permissions.{name}");
        let Some(entry) = out.entries.get(name) else {
            continue;
        };
        match (entry.mode, &entry.path) {
            (Some(mode), Some(path)) => v.push(mode_finding(&id, path, mode)),
            _ => v.push(Finding::unknown(
                id,
                Severity::Medium,
                format!("{name} is in {}: access is governed by Kubernetes RBAC, which doctor cannot see", out.source),
                "allow `get` on this Secret only to the tunnel's ServiceAccounts; enable encryption at rest for Secrets",
            )),
        }
    }
    v
}

/// `files.permissions.<label>` for a key file named outside the output (the proxy's
/// `tls.key_file`).
pub fn check_file(label: &str, path: &Path) -> Finding {
    let id = format!("files.permissions.{label}");
    match std::fs::metadata(path) {
        Ok(meta) => mode_finding(&id, path, unix_mode(&meta)),
        Err(e) => Finding::unknown(
            id,
            Severity::High,
            format!("{}: {}", path.display(), mcp_tunnel_pki::tls::io_reason(&e)),
            "run doctor where the file is readable (as its owner)",
        ),
    }
}

/// Other-readable is high (any local user or process), group-readable medium.
fn mode_finding(id: &str, path: &Path, mode: u32) -> Finding {
    let fix = format!("chmod 600 {}", path.display());
    if mode & 0o007 != 0 {
        Finding::fail(
            id,
            Severity::High,
            format!(
                "{} has mode {mode:04o}: every user on the host can read it",
                path.display()
            ),
            fix,
        )
    } else if mode & 0o070 != 0 {
        Finding::fail(
            id,
            Severity::Medium,
            format!(
                "{} has mode {mode:04o}: its group can read it",
                path.display()
            ),
            fix,
        )
    } else {
        Finding::pass(
            id,
            Severity::High,
            format!("{} has mode {mode:04o}", path.display()),
        )
    }
}

#[cfg(unix)]
fn unix_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn unix_mode(_meta: &std::fs::Metadata) -> u32 {
    0o600
}

/// Where the token's age came from: the authoritative audit log, or the token file's
/// modification time (a copy or restore resets it, so it is only a hint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAgeSource {
    /// The newest `tunnel.rotate_token` (or `tunnel.create`) event, at this time.
    Audit {
        action: String,
        time: String,
    },
    FileMtime {
        path: String,
    },
}

/// `token.age`: older than `rotation_days` fails (medium).
pub fn token_age(age_secs: i64, source: &TokenAgeSource, rotation_days: u32) -> Finding {
    const ID: &str = "token.age";
    let days = age_secs.div_euclid(86_400);
    let from = match source {
        TokenAgeSource::Audit { action, time } => format!("audit event {action} at {time}"),
        TokenAgeSource::FileMtime { path } => {
            format!("modification time of {path} (the audit log was not available)")
        }
    };
    if days > i64::from(rotation_days) {
        Finding::fail(
            ID,
            Severity::Medium,
            format!(
                "the tunnel token is {days} days old (from the {from}); the policy is {rotation_days} days"
            ),
            "rotate it: `mcp-tunnel rotate token`, or bump tunnel.tokenVersion / TOKEN_VERSION and re-run setup",
        )
    } else {
        Finding::pass(
            ID,
            Severity::Medium,
            format!(
                "the tunnel token is {days} days old (from the {from}); the policy is {rotation_days} days"
            ),
        )
    }
}

/// Seconds between `t` and `now` (0 for times in the future).
pub fn age_of(t: SystemTime, now: SystemTime) -> i64 {
    now.duration_since(t)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
