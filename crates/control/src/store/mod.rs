//! The control plane's store: organizations, workspaces, tunnels and their tokens,
//! certificates, identities, credentials and the audit chain, on [`Db`].
//!
//! Every mutation runs in one write transaction together with its audit event, so an
//! operation and its record of accountability land together or not at all.

mod audit;
mod certs;
mod credentials;
mod edge;
mod identity;
mod org;
mod sessions;
mod tunnels;
mod users;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_tunnel_edge::StoreEvent;
use mcp_tunnel_pki::validate::CertRuleError;
use mcp_tunnel_proto::{CaPin, EdgeAddr};
use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::db::{Db, Dialect};
use crate::seal::{MasterKey, SealError};

pub use audit::{AuditEvent, AuditFilter, AuditVerification, verify_jsonl};
pub use certs::Certificate;
pub use credentials::{Credential, NewCredential};
pub use identity::{
    FederationIssuer, FederationRule, IdentityKind, NewIssuer, NewRule, ServiceAccount, Workspace,
    check_jwks_url,
};
pub use org::Bootstrap;
pub use sessions::{LoginMethod, PendingLogin, Session, SessionLimits, random_token};
pub use tunnels::{RevealedToken, Tunnel};
pub use users::{
    NewSsoConfig, Organization, Role, SsoConfig, User, normalize_login, parse_domains,
};

/// SPEC §7.1: non-archived tunnels per organization unless configured otherwise.
pub const DEFAULT_MAX_TUNNELS: u32 = 10;
/// SPEC §7.1: non-archived certificates per tunnel.
pub const MAX_ACTIVE_CERTIFICATES: i64 = 2;
/// Longest `display_name` accepted.
pub const MAX_DISPLAY_NAME_CHARS: usize = 255;

/// Why a store operation failed. The API maps each variant to a status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Certificate(#[from] CertRuleError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("token encryption: {0}")]
    Seal(#[from] SealError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// What the store needs to know to mint tokens and apply limits.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Tunnel domains are `<8 lowercase alnum>.<base_domain>`.
    pub base_domain: String,
    /// The edge's connector address written into every tunnel token.
    pub edge_addr: EdgeAddr,
    /// Pin of the edge's CA certificate written into tokens, if any.
    pub edge_ca_pin: Option<CaPin>,
    pub max_tunnels_per_org: u32,
}

/// Who acts, from where: written into the audit event of every mutation.
#[derive(Debug, Clone)]
pub struct Actor {
    pub org_id: String,
    /// The workspace the request acts in.
    pub workspace_id: String,
    /// `api_key:akey_…`, `service_account:svac_…`, `cli:server-init`, …
    pub name: String,
    /// The peer address of the request, or `local` for commands run on the server.
    pub source: String,
}

/// A page of results, newest first, and the cursor of the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_page: Option<String>,
}

/// Listing parameters shared by every collection.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub include_archived: bool,
    pub limit: u32,
    pub page: Option<String>,
}

/// Default and largest page sizes (SPEC §7.1).
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 1000;

impl ListParams {
    fn bounds(&self) -> Result<(i64, i64)> {
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(ControlError::Invalid(format!(
                "limit must be between 1 and {MAX_LIMIT} (got {})",
                self.limit
            )));
        }
        let before = match &self.page {
            None => i64::MAX,
            Some(c) => decode_cursor(c)?,
        };
        Ok((i64::from(self.limit), before))
    }
}

/// Cursors are opaque to clients; inside they carry the position to continue before.
fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("mtc1:{seq}"))
}

fn decode_cursor(c: &str) -> Result<i64> {
    let bad = || ControlError::Invalid("page: invalid pagination cursor".into());
    let raw = URL_SAFE_NO_PAD.decode(c.as_bytes()).map_err(|_| bad())?;
    let s = std::str::from_utf8(&raw).map_err(|_| bad())?;
    s.strip_prefix("mtc1:")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(bad)
}

/// Builds a page from rows fetched with `LIMIT limit + 1`, each carrying its `seq`.
fn page_of<T>(mut rows: Vec<(i64, T)>, limit: i64) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_page = if more {
        rows.last().map(|(seq, _)| encode_cursor(*seq))
    } else {
        None
    };
    Page {
        data: rows.into_iter().map(|(_, t)| t).collect(),
        next_page,
    }
}

/// How long [`ControlStore::close`] waits for requests still using the store. Every API
/// request is cut off at 30 s anyway; 25 s fits inside the 30 s a container runtime
/// usually grants between SIGTERM and SIGKILL.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// The control plane's state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    master: MasterKey,
    settings: StoreSettings,
    events: broadcast::Sender<StoreEvent>,
    /// One token per request in flight; `close` waits for them before closing the pool.
    users: TaskTracker,
}

impl ControlStore {
    /// Wraps an open database. On PostgreSQL, call [`ControlStore::listen`] as well so
    /// that revocations made by other replicas reach this one.
    pub fn new(db: Db, master: MasterKey, settings: StoreSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                master,
                settings,
                events: broadcast::channel(1024).0,
                users: TaskTracker::new(),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    /// Marks one piece of work (an API request) as using the store until the token is
    /// dropped: [`ControlStore::close`] lets it finish before closing the database.
    pub fn hold(&self) -> TaskTrackerToken {
        self.inner.users.token()
    }

    /// True once [`ControlStore::close`] has begun: readiness reports it so that
    /// balancers stop sending requests to a replica that is going away.
    pub fn is_closing(&self) -> bool {
        self.inner.users.is_closed()
    }

    /// Shuts the store down after the work holding it ([`ControlStore::hold`]) has
    /// finished, waiting at most [`DRAIN_LIMIT`]. Returns false when work was still
    /// running at the limit (it then fails with "pool closed").
    pub async fn close(&self) -> bool {
        self.close_within(DRAIN_LIMIT).await
    }

    /// [`ControlStore::close`] with another limit.
    pub async fn close_within(&self, limit: Duration) -> bool {
        let users = &self.inner.users;
        users.close();
        let drained = tokio::time::timeout(limit, users.wait()).await.is_ok();
        if !drained {
            tracing::warn!(
                in_flight = users.len(),
                limit_secs = limit.as_secs(),
                "requests still running at the shutdown limit: closing the database under them"
            );
        }
        self.inner.db.close().await;
        drained
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.db().pool()).await?;
        Ok(())
    }

    fn master(&self) -> &MasterKey {
        &self.inner.master
    }

    fn dialect(&self) -> Dialect {
        self.inner.db.dialect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cursors_round_trip(seq in 1i64..i64::MAX) {
            prop_assert_eq!(decode_cursor(&encode_cursor(seq)).unwrap(), seq);
        }

        #[test]
        fn any_cursor_text_is_refused_or_positive(text in ".{0,64}") {
            if let Ok(n) = decode_cursor(&text) {
                prop_assert!(n > 0);
            }
        }
    }

    #[test]
    fn limits() {
        let p = |limit| ListParams {
            limit,
            ..ListParams::default()
        };
        assert!(p(0).bounds().is_err());
        assert!(p(MAX_LIMIT + 1).bounds().is_err());
        assert_eq!(p(MAX_LIMIT).bounds().unwrap(), (1000, i64::MAX));
        let page = page_of(vec![(9, 'a'), (7, 'b'), (5, 'c')], 2);
        assert_eq!(page.data, vec!['a', 'b']);
        assert_eq!(
            decode_cursor(page.next_page.as_deref().unwrap()).unwrap(),
            7
        );
        assert!(page_of(vec![(9, 'a')], 2).next_page.is_none());
    }
}
