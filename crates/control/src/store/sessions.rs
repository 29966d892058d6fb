//! Console sessions and pending OIDC sign-ins.
//!
//! A session id is 256 random bits held only by the browser (in an HttpOnly cookie);
//! the database keeps its SHA-256. A session ends after an idle period, after an
//! absolute lifetime, on logout, when its user is disabled, and — for password sessions
//! — when the organization makes SSO mandatory.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_tunnel_pki::crypto::{self, Secret};
use sqlx::Row as _;

use super::audit::{NewEvent, append};
use super::users::User;
use super::{Actor, ControlError, ControlStore, Result};
use crate::time::now_ms;

/// How a session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMethod {
    Sso,
    Password,
}

impl LoginMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sso => "sso",
            Self::Password => "password",
        }
    }
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
        }
    }
}

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub method: LoginMethod,
    pub created_at: i64,
}

/// How long a pending OIDC sign-in may take.
pub const OIDC_LOGIN_TTL_MS: i64 = 10 * 60 * 1000;

fn id_hash(id: &str) -> Vec<u8> {
    crypto::sha256(id.as_bytes()).to_vec()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A new random id (session id, OIDC state, nonce, PKCE verifier): 43 URL-safe chars.
pub fn random_token() -> Secret {
    Secret::new(URL_SAFE_NO_PAD.encode(crypto::random_bytes(32)))
}

/// What a pending OIDC sign-in keeps until its callback.
#[derive(Debug)]
pub struct PendingLogin {
    pub nonce: Secret,
    pub verifier: Secret,
}

impl ControlStore {
    /// Opens a session for `user`, audited as `console.login`. Returns the session id
    /// for the cookie.
    pub async fn create_session(
        &self,
        user: &User,
        method: LoginMethod,
        source: &str,
    ) -> Result<Secret> {
        let id = random_token();
        let now = now_ms();
        let actor = Actor {
            org_id: user.org_id.clone(),
            workspace_id: self.default_workspace(&user.org_id).await?,
            name: user.actor_name(),
            source: source.into(),
        };
        let mut tx = self.db().write_tx(&user.org_id).await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, org_id, user_id, method, source, created_at, \
             last_seen_at) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(id_hash(id.expose()))
        .bind(user.org_id.as_str())
        .bind(user.id.as_str())
        .bind(method.as_str())
        .bind(source)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user.id.as_str())
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            NewEvent {
                actor: &actor,
                action: "console.login",
                target: &user.id,
                reason: None,
                details: serde_json::json!({"method": method.as_str(), "role": user.role.as_str()}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The live session with this id, touched; `None` when unknown, expired, its user
    /// disabled, or a password session while SSO is required (such rows are deleted).
    pub async fn session(
        &self,
        org_id: &str,
        id: &str,
        limits: SessionLimits,
    ) -> Result<Option<Session>> {
        let hash = id_hash(id);
        let row = sqlx::query(
            "SELECT s.method, s.created_at AS s_created, s.last_seen_at, o.sso_required, u.* \
             FROM console_sessions s JOIN users u ON u.id = s.user_id \
             JOIN organizations o ON o.id = s.org_id \
             WHERE s.id_hash = $1 AND s.org_id = $2",
        )
        .bind(hash.clone())
        .bind(org_id)
        .fetch_optional(&self.db().pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let now = now_ms();
        let created: i64 = row.try_get("s_created")?;
        let seen: i64 = row.try_get("last_seen_at")?;
        let method = match row.try_get::<String, _>("method")?.as_str() {
            "sso" => LoginMethod::Sso,
            _ => LoginMethod::Password,
        };
        let sso_required = row.try_get::<i64, _>("sso_required")? != 0;
        let user = super::users::user_from_row(&row)?;
        let dead = now - seen > ms(limits.idle)
            || now - created > ms(limits.absolute)
            || user.disabled_at.is_some()
            || (sso_required && method == LoginMethod::Password);
        if dead {
            sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
                .bind(hash)
                .execute(&self.db().pool)
                .await?;
            return Ok(None);
        }
        // Touch at most every few seconds (a page load makes several requests), and
        // often enough that activity always keeps a short idle timeout from expiring.
        if now - seen > (ms(limits.idle) / 4).min(5_000) {
            sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2")
                .bind(now)
                .bind(hash)
                .execute(&self.db().pool)
                .await?;
        }
        Ok(Some(Session {
            user,
            method,
            created_at: created,
        }))
    }

    /// Ends a session (logout), audited as `console.logout`.
    pub async fn end_session(&self, by: &Actor, id: &str, user_id: &str) -> Result<()> {
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let n = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash(id))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            append(
                &mut tx,
                NewEvent {
                    actor: by,
                    action: "console.logout",
                    target: user_id,
                    reason: None,
                    details: serde_json::json!({}),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes sessions idle or older than the limits, and stale pending sign-ins.
    pub async fn purge_sessions(&self, limits: SessionLimits) -> Result<u64> {
        let now = now_ms();
        let a =
            sqlx::query("DELETE FROM console_sessions WHERE last_seen_at < $1 OR created_at < $2")
                .bind(now - ms(limits.idle))
                .bind(now - ms(limits.absolute))
                .execute(&self.db().pool)
                .await?
                .rows_affected();
        let b = sqlx::query("DELETE FROM console_logins WHERE created_at < $1")
            .bind(now - OIDC_LOGIN_TTL_MS)
            .execute(&self.db().pool)
            .await?
            .rows_affected();
        Ok(a + b)
    }

    /// Remembers an OIDC sign-in until its callback; the nonce and PKCE verifier are
    /// sealed under the master key, bound to the state.
    pub async fn begin_oidc_login(
        &self,
        org_id: &str,
        state: &str,
        pending: &PendingLogin,
    ) -> Result<()> {
        let h = id_hash(state);
        let ctx = format!("oidc_login:{}", hex::encode(&h));
        sqlx::query(
            "INSERT INTO console_logins (state_hash, org_id, nonce_sealed, verifier_sealed, \
             created_at) VALUES ($1,$2,$3,$4,$5)",
        )
        .bind(h)
        .bind(org_id)
        .bind(self.master().seal(&ctx, pending.nonce.expose().as_bytes()))
        .bind(
            self.master()
                .seal(&ctx, pending.verifier.expose().as_bytes()),
        )
        .bind(now_ms())
        .execute(&self.db().pool)
        .await?;
        Ok(())
    }

    /// Takes (and deletes) the pending sign-in of `state`; `None` when unknown or stale.
    pub async fn take_oidc_login(&self, org_id: &str, state: &str) -> Result<Option<PendingLogin>> {
        let h = id_hash(state);
        let row = sqlx::query("SELECT * FROM console_logins WHERE state_hash = $1 AND org_id = $2")
            .bind(h.clone())
            .bind(org_id)
            .fetch_optional(&self.db().pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let deleted = sqlx::query("DELETE FROM console_logins WHERE state_hash = $1")
            .bind(h.clone())
            .execute(&self.db().pool)
            .await?
            .rows_affected();
        // Two callbacks racing with one state: only the one that deleted it proceeds.
        if deleted == 0 || now_ms() - row.try_get::<i64, _>("created_at")? > OIDC_LOGIN_TTL_MS {
            return Ok(None);
        }
        let ctx = format!("oidc_login:{}", hex::encode(&h));
        let open = |col: &str| -> Result<Secret> {
            let sealed: Vec<u8> = row.try_get(col)?;
            let plain = self.master().open(&ctx, &sealed)?;
            String::from_utf8(plain)
                .map(Secret::new)
                .map_err(|_| ControlError::Corrupt("pending sign-in is not UTF-8".into()))
        };
        Ok(Some(PendingLogin {
            nonce: open("nonce_sealed")?,
            verifier: open("verifier_sealed")?,
        }))
    }

    /// Finds or (when the SSO configuration allows) creates the console user of a
    /// verified e-mail address. Errors say why the sign-in is refused.
    pub async fn sso_user(&self, org_id: &str, email: &str, source: &str) -> Result<User> {
        let cfg = self.sso_config(org_id).await?.ok_or_else(|| {
            ControlError::Forbidden("SSO is not configured for this organization".into())
        })?;
        let email = super::users::normalize_login(email)?;
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if !cfg.allowed_domains.is_empty() && !cfg.allowed_domains.iter().any(|d| d == domain) {
            return Err(ControlError::Forbidden(format!(
                "{email} is not in a domain allowed to sign in ({})",
                cfg.allowed_domains.join(", ")
            )));
        }
        if let Some((user, _)) = self.user_by_login(org_id, &email).await? {
            if user.disabled_at.is_some() {
                return Err(ControlError::Forbidden(format!(
                    "the console user {email} is disabled"
                )));
            }
            return Ok(user);
        }
        let Some(role) = cfg.auto_provision_role else {
            return Err(ControlError::Forbidden(format!(
                "there is no console user {email}: ask an owner or admin to add you"
            )));
        };
        let actor = Actor {
            org_id: org_id.into(),
            workspace_id: self.default_workspace(org_id).await?,
            name: "system:sso-provisioning".into(),
            source: source.into(),
        };
        self.create_user(&actor, &email, role, None).await
    }
}
