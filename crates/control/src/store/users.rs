//! People who sign in to the console, their roles, and the organization's SSO settings
//! (SPEC §7.2, §7.3).
//!
//! Roles: `owner` and `admin` manage; `developer` reads. A console user acts through the
//! same store functions as the API, so every change is audited with `user:<login>`.

use mcp_tunnel_pki::crypto::Secret;
use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::audit::{NewEvent, append};
use super::{Actor, ControlError, ControlStore, Result};
use crate::ids;
use crate::password;
use crate::time::{now_ms, rfc3339_ms};

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Developer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Admin, Role::Developer];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "developer" => Some(Self::Developer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Developer => "developer",
        }
    }

    /// Owners and admins change things; developers only read.
    pub fn can_manage(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// A console user, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub org_id: String,
    pub login: String,
    pub role: Role,
    pub has_password: bool,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub last_login_at: Option<i64>,
}

impl User {
    /// The audit actor name of this user.
    pub fn actor_name(&self) -> String {
        format!("user:{}", self.login)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "user",
            "id": self.id,
            "login": self.login,
            "role": self.role,
            "password_login": self.has_password,
            "created_at": rfc3339_ms(self.created_at),
            "disabled_at": self.disabled_at.map(rfc3339_ms),
            "last_login_at": self.last_login_at.map(rfc3339_ms),
        })
    }
}

/// The organization's OIDC provider, without its client secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SsoConfig {
    pub issuer: String,
    pub client_id: String,
    /// E-mail domains allowed to sign in (lowercase); empty allows any.
    pub allowed_domains: Vec<String>,
    /// Role given to an unknown user of an allowed domain on first sign-in; `None`
    /// admits only users added beforehand.
    pub auto_provision_role: Option<Role>,
    pub updated_at: String,
}

/// A new or changed SSO configuration. `client_secret: None` keeps the stored one.
#[derive(Debug, Clone)]
pub struct NewSsoConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub allowed_domains: Vec<String>,
    pub auto_provision_role: Option<Role>,
}

/// The organization as `GET /v1/admin/organization` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Organization {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub sso_required: bool,
    pub sso_configured: bool,
    pub sso: Option<SsoConfig>,
}

pub(crate) const LOGIN_MAX_CHARS: usize = 254;

/// Logins are case-insensitive e-mail addresses or simple names.
pub fn normalize_login(login: &str) -> Result<String> {
    let l = login.trim().to_lowercase();
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "@.-_+".contains(c);
    if l.is_empty() || l.chars().count() > LOGIN_MAX_CHARS || !l.chars().all(ok_char) {
        return Err(ControlError::Invalid(format!(
            "login must be an e-mail address or a name of letters, digits and @ . - _ + \
             (1 to {LOGIN_MAX_CHARS} characters)"
        )));
    }
    Ok(l)
}

/// Parses a comma- or space-separated list of e-mail domains.
pub fn parse_domains(list: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for d in list
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let d = d.trim_start_matches('@').to_lowercase();
        let ok = d.contains('.')
            && d.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(ControlError::Invalid(format!(
                "allowed_domains: {d:?} is not a domain name"
            )));
        }
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

pub(super) fn user_from_row(r: &AnyRow) -> Result<User> {
    let role: String = r.try_get("role")?;
    Ok(User {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        login: r.try_get("login")?,
        role: Role::parse(&role)
            .ok_or_else(|| ControlError::Corrupt(format!("user role {role:?}")))?,
        has_password: r.try_get::<Option<String>, _>("password_hash")?.is_some(),
        created_at: r.try_get("created_at")?,
        disabled_at: r.try_get("disabled_at")?,
        last_login_at: r.try_get("last_login_at")?,
    })
}

fn user_not_found(id: &str) -> ControlError {
    ControlError::NotFound {
        kind: "user",
        id: id.into(),
    }
}

fn secret_context(org_id: &str) -> String {
    format!("sso_client_secret:{org_id}")
}

impl ControlStore {
    /// Adds a console user. SSO users have no password; `password` is for the bootstrap
    /// admin and emergency accounts.
    pub async fn create_user(
        &self,
        by: &Actor,
        login: &str,
        role: Role,
        password: Option<&Secret>,
    ) -> Result<User> {
        let login = normalize_login(login)?;
        if let Some(p) = password
            && p.expose().chars().count() < password::MIN_PASSWORD_CHARS
        {
            return Err(ControlError::Invalid(format!(
                "password must be at least {} characters",
                password::MIN_PASSWORD_CHARS
            )));
        }
        let hash = password.map(|p| password::hash(p.expose()));
        let id = ids::new_id("usr");
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let exists = sqlx::query("SELECT id FROM users WHERE org_id = $1 AND login = $2")
            .bind(by.org_id.as_str())
            .bind(login.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists {
            return Err(ControlError::Invalid(format!(
                "login: a user {login} already exists"
            )));
        }
        sqlx::query(
            "INSERT INTO users (id, org_id, login, role, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_str())
        .bind(by.org_id.as_str())
        .bind(login.as_str())
        .bind(role.as_str())
        .bind(hash)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let details = serde_json::json!({"login": login, "role": role.as_str(), "password": password.is_some()});
        append(
            &mut tx,
            NewEvent {
                actor: by,
                action: "user.create",
                target: &id,
                reason: None,
                details,
            },
        )
        .await?;
        tx.commit().await?;
        self.get_user(&by.org_id, &id).await
    }

    /// Users of the organization, oldest first.
    pub async fn list_users(&self, org_id: &str) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users WHERE org_id = $1 ORDER BY seq ASC")
            .bind(org_id)
            .fetch_all(&self.db().pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn get_user(&self, org_id: &str, id: &str) -> Result<User> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&self.db().pool)
            .await?
            .ok_or_else(|| user_not_found(id))?;
        user_from_row(&row)
    }

    /// The user with this login, and its password hash.
    pub(crate) async fn user_by_login(
        &self,
        org_id: &str,
        login: &str,
    ) -> Result<Option<(User, Option<String>)>> {
        let Ok(login) = normalize_login(login) else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT * FROM users WHERE org_id = $1 AND login = $2")
            .bind(org_id)
            .bind(login.as_str())
            .fetch_optional(&self.db().pool)
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some((user_from_row(&r)?, r.try_get("password_hash")?))),
        }
    }

    /// Changes a user's role or disables/enables it. `self_id` is the acting user, who
    /// cannot change their own account (so nobody locks themselves out by accident);
    /// the last enabled owner or admin cannot be demoted or disabled.
    pub async fn update_user(
        &self,
        by: &Actor,
        self_id: Option<&str>,
        id: &str,
        role: Option<Role>,
        disabled: Option<bool>,
    ) -> Result<User> {
        if self_id == Some(id) {
            return Err(ControlError::Forbidden(
                "you cannot change your own role or disable your own account".into(),
            ));
        }
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let row = sqlx::query("SELECT * FROM users WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(by.org_id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| user_not_found(id))?;
        let before = user_from_row(&row)?;
        let new_role = role.unwrap_or(before.role);
        let new_disabled = match disabled {
            Some(true) => Some(before.disabled_at.unwrap_or_else(now_ms)),
            Some(false) => None,
            None => before.disabled_at,
        };
        let loses_manager = before.role.can_manage()
            && before.disabled_at.is_none()
            && (!new_role.can_manage() || new_disabled.is_some());
        if loses_manager {
            let managers: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM users WHERE org_id = $1 AND disabled_at IS NULL \
                 AND role IN ('owner', 'admin')",
            )
            .bind(by.org_id.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if managers <= 1 {
                return Err(ControlError::Invalid(
                    "this is the last enabled owner or admin: add another one first".into(),
                ));
            }
        }
        sqlx::query("UPDATE users SET role = $1, disabled_at = $2 WHERE id = $3")
            .bind(new_role.as_str())
            .bind(new_disabled)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if new_disabled.is_some() {
            sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let details = serde_json::json!({
            "login": before.login,
            "role": {"from": before.role.as_str(), "to": new_role.as_str()},
            "disabled": new_disabled.is_some(),
        });
        append(
            &mut tx,
            NewEvent {
                actor: by,
                action: "user.update",
                target: id,
                reason: None,
                details,
            },
        )
        .await?;
        tx.commit().await?;
        self.get_user(&by.org_id, id).await
    }

    /// The organization with its SSO settings.
    pub async fn organization(&self, org_id: &str) -> Result<Organization> {
        let row = sqlx::query("SELECT id, name, sso_required FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.db().pool)
            .await?
            .ok_or_else(|| ControlError::NotFound {
                kind: "organization",
                id: org_id.into(),
            })?;
        let sso = self.sso_config(org_id).await?;
        Ok(Organization {
            kind: "organization",
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            sso_required: row.try_get::<i64, _>("sso_required")? != 0,
            sso_configured: sso.is_some(),
            sso,
        })
    }

    pub async fn sso_config(&self, org_id: &str) -> Result<Option<SsoConfig>> {
        let Some(r) = sqlx::query("SELECT * FROM sso_configs WHERE org_id = $1")
            .bind(org_id)
            .fetch_optional(&self.db().pool)
            .await?
        else {
            return Ok(None);
        };
        let domains: String = r.try_get("allowed_domains")?;
        let role: Option<String> = r.try_get("auto_provision_role")?;
        Ok(Some(SsoConfig {
            issuer: r.try_get("issuer")?,
            client_id: r.try_get("client_id")?,
            allowed_domains: domains
                .split(' ')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect(),
            auto_provision_role: role.as_deref().and_then(Role::parse),
            updated_at: rfc3339_ms(r.try_get("updated_at")?),
        }))
    }

    /// The OIDC client secret, opened from its sealed form.
    pub async fn sso_client_secret(&self, org_id: &str) -> Result<Secret> {
        let sealed: Vec<u8> =
            sqlx::query("SELECT client_secret_sealed FROM sso_configs WHERE org_id = $1")
                .bind(org_id)
                .fetch_optional(&self.db().pool)
                .await?
                .ok_or_else(|| ControlError::NotFound {
                    kind: "SSO configuration of organization",
                    id: org_id.into(),
                })?
                .try_get("client_secret_sealed")?;
        let plain = self.master().open(&secret_context(org_id), &sealed)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| ControlError::Corrupt("SSO client secret is not UTF-8".into()))
    }

    /// Sets the organization's OIDC provider (issuer URL exactly as its `iss` claim).
    pub async fn set_sso_config(&self, by: &Actor, new: NewSsoConfig) -> Result<SsoConfig> {
        let issuer = new.issuer.trim().trim_end_matches('/').to_owned();
        crate::store::check_jwks_url(&issuer).map_err(|_| {
            ControlError::Invalid(
                "issuer must be an https URL (or http on a loopback address for tests)".into(),
            )
        })?;
        let client_id = new.client_id.trim().to_owned();
        if client_id.is_empty() || client_id.len() > 255 {
            return Err(ControlError::Invalid(
                "client_id must be 1 to 255 characters".into(),
            ));
        }
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let existing: Option<Vec<u8>> =
            sqlx::query("SELECT client_secret_sealed FROM sso_configs WHERE org_id = $1")
                .bind(by.org_id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("client_secret_sealed"))
                .transpose()?;
        let sealed = match (&new.client_secret, existing) {
            (Some(s), _) if !s.expose().is_empty() => self
                .master()
                .seal(&secret_context(&by.org_id), s.expose().as_bytes()),
            (_, Some(old)) => old,
            (_, None) => {
                return Err(ControlError::Invalid(
                    "client_secret is required when SSO is first configured".into(),
                ));
            }
        };
        sqlx::query("DELETE FROM sso_configs WHERE org_id = $1")
            .bind(by.org_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sso_configs (org_id, issuer, client_id, client_secret_sealed, \
             allowed_domains, auto_provision_role, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(by.org_id.as_str())
        .bind(issuer.as_str())
        .bind(client_id.as_str())
        .bind(sealed)
        .bind(new.allowed_domains.join(" "))
        .bind(new.auto_provision_role.map(Role::as_str))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let details = serde_json::json!({
            "issuer": issuer, "client_id": client_id,
            "client_secret_changed": new.client_secret.as_ref().is_some_and(|s| !s.expose().is_empty()),
            "allowed_domains": new.allowed_domains,
            "auto_provision_role": new.auto_provision_role.map(Role::as_str),
        });
        append(
            &mut tx,
            NewEvent {
                actor: by,
                action: "organization.sso_configure",
                target: &by.org_id,
                reason: None,
                details,
            },
        )
        .await?;
        tx.commit().await?;
        self.sso_config(&by.org_id)
            .await?
            .ok_or_else(|| ControlError::Corrupt("SSO configuration vanished".into()))
    }

    /// Makes SSO mandatory (password sign-in off, password sessions ended) or optional.
    pub async fn set_sso_required(&self, by: &Actor, required: bool) -> Result<Organization> {
        if required && self.sso_config(&by.org_id).await?.is_none() {
            return Err(ControlError::Invalid(
                "sso_required: configure an SSO provider first, or nobody could sign in".into(),
            ));
        }
        let mut tx = self.db().write_tx(&by.org_id).await?;
        sqlx::query("UPDATE organizations SET sso_required = $1 WHERE id = $2")
            .bind(i64::from(required))
            .bind(by.org_id.as_str())
            .execute(&mut *tx)
            .await?;
        let ended = if required {
            sqlx::query("DELETE FROM console_sessions WHERE org_id = $1 AND method = 'password'")
                .bind(by.org_id.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
        } else {
            0
        };
        append(
            &mut tx,
            NewEvent {
                actor: by,
                action: "organization.sso_required",
                target: &by.org_id,
                reason: None,
                details: serde_json::json!({"sso_required": required, "password_sessions_ended": ended}),
            },
        )
        .await?;
        tx.commit().await?;
        self.organization(&by.org_id).await
    }

    /// Creates the bootstrap owner `login` with a random password, shown once.
    pub async fn create_bootstrap_admin(
        &self,
        org_id: &str,
        login: &str,
    ) -> Result<(User, Secret)> {
        let actor = Actor {
            org_id: org_id.into(),
            workspace_id: self.default_workspace(org_id).await?,
            name: "system:server-init".into(),
            source: "local".into(),
        };
        let pw = password::generate();
        let user = self
            .create_user(&actor, login, Role::Owner, Some(&pw))
            .await?;
        Ok((user, pw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_and_domains() {
        assert_eq!(
            normalize_login(" Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        assert!(normalize_login("").is_err());
        assert!(normalize_login("a b").is_err());
        assert!(normalize_login("<script>").is_err());
        assert_eq!(
            parse_domains("Example.com, @corp.example  example.com").unwrap(),
            vec!["example.com", "corp.example"]
        );
        assert!(parse_domains("localhost").is_err());
        assert!(parse_domains("").unwrap().is_empty());
        assert!(Role::Admin.can_manage() && !Role::Developer.can_manage());
    }
}
