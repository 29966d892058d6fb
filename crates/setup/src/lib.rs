//! The customer's provisioning component (SPEC §9): `setup init` attaches to or creates a
//! tunnel, generates its CA and the proxy's server certificate, registers the CA and
//! fetches the token; `setup renew-cert` re-signs the server certificate offline. Both
//! write to a directory or to a Kubernetes Secret, idempotently and atomically.
//!
//! A crate of its own rather than part of the control plane: it runs on the customer's
//! side, talks to the control plane only through its public HTTP API (the same calls an
//! SDK user makes), and must not need the operator's database or keys.

pub mod auth;
pub mod dir;
pub mod error;
pub mod init;
pub mod k8s;
pub mod material;
pub mod output;
pub mod renew;

pub use auth::Credentials;
pub use error::SetupError;
pub use init::{InitOptions, InitReport, init};
pub use output::{Contents, Output};
pub use renew::{RenewOptions, RenewReport, renew};

/// The keys of an output: file names in `dir:`, data keys in `k8s-secret:` (SPEC §9).
pub mod keys {
    pub const TUNNEL_ID: &str = "tunnel-id";
    pub const TUNNEL_DOMAIN: &str = "tunnel-domain";
    pub const TUNNEL_TOKEN: &str = "tunnel-token";
    pub const CA_CERT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    pub const TLS_CERT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
    /// The `--token-version` the stored token was fetched or rotated for.
    pub const TOKEN_VERSION: &str = "token-version";

    /// Every key setup writes, in the order it writes them.
    pub const ALL: [&str; 8] = [
        TUNNEL_ID,
        TUNNEL_DOMAIN,
        CA_CERT,
        CA_KEY,
        TLS_KEY,
        TLS_CERT,
        TUNNEL_TOKEN,
        TOKEN_VERSION,
    ];

    /// Keys whose values are secret: mode 0600 in a directory, never logged.
    pub fn is_secret(key: &str) -> bool {
        matches!(key, TUNNEL_TOKEN | CA_KEY | TLS_KEY)
    }
}
