//! Identity pages: federation issuers and rules, service accounts, Tunnels API keys and
//! client access keys. Keys are shown once, in the response to the POST that made them.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::C;
use super::html::{
    banner, button_form, csrf_field, esc, layout, reveal_box, status, table, td, td_code, when,
    when_opt,
};
use super::session::{Act, ConsoleError, CsrfForm, CsrfOnly, Me, Page};
use crate::ids::CredentialKind;
use crate::scopes;
use crate::store::{IdentityKind, NewCredential, NewIssuer, NewRule};
use crate::time::now_ms;

macro_rules! csrf_form {
    ($t:ty) => {
        impl CsrfForm for $t {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        }
    };
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn back(path: &str) -> Page {
    Ok(Redirect::to(path).into_response())
}

pub async fn federation(State(c): C, me: Me) -> Page {
    let issuers = c.store().list_issuers(c.org()).await?;
    let rules = c.store().list_rules(c.org()).await?;
    let accounts = c.store().list_service_accounts(c.org()).await?;
    let manage = me.can_manage();
    let issuer_rows: Vec<String> = issuers
        .iter()
        .map(|i| {
            let st = if i.archived_at.is_some() {
                "archived"
            } else {
                "active"
            };
            let act = if manage && i.archived_at.is_none() {
                button_form(
                    &me,
                    &format!("/console/federation/issuers/{}/archive", i.id),
                    "Archive",
                    "danger small",
                )
            } else {
                String::new()
            };
            format!(
                "{}{}{}{}<td>{}</td>{}<td>{act}</td>",
                td_code(&i.id),
                td(&i.name),
                td_code(&i.issuer_url),
                td(i.jwks_url.as_deref().unwrap_or("inline JWKS")),
                status(st),
                td(&i.created_at[..10]),
            )
        })
        .collect();
    let rule_rows: Vec<String> = rules
        .iter()
        .map(|r| {
            let st = if r.archived_at.is_some() {
                "archived"
            } else {
                "active"
            };
            let act = if manage && r.archived_at.is_none() {
                button_form(
                    &me,
                    &format!("/console/federation/rules/{}/archive", r.id),
                    "Archive",
                    "danger small",
                )
            } else {
                String::new()
            };
            format!(
                "{}{}{}{}{}{}<td>{}s</td><td>{}</td><td>{act}</td>",
                td_code(&r.id),
                td_code(&r.issuer_id),
                td_code(&r.subject),
                td_code(&r.audience),
                td_code(&r.service_account_id),
                td(&r.scope),
                r.token_lifetime_seconds,
                status(st),
            )
        })
        .collect();
    let mut b = String::from(r#"<section aria-labelledby="iss-h"><h2 id="iss-h">Issuers</h2>"#);
    b.push_str(&table(
        "Federation issuers",
        &["ID", "Name", "Issuer URL", "Keys", "Status", "Created", ""],
        &issuer_rows,
        "No federation issuer yet.",
    ));
    if manage {
        b.push_str(&format!(
            r#"<form method="post" action="/console/federation/issuers" class="stack card" aria-labelledby="new-iss-h"><h3 id="new-iss-h">Add an issuer</h3>{}
<label for="iss_name">Name</label><input id="iss_name" name="name">
<label for="issuer_url">Issuer URL (exactly the tokens' iss)</label><input id="issuer_url" name="issuer_url" required>
<label for="jwks_url">JWKS URL</label><input id="jwks_url" name="jwks_url" placeholder="https://…/jwks">
<label for="jwks">Or the JWKS document (JSON)</label><textarea id="jwks" name="jwks" rows="3" spellcheck="false"></textarea>
<button type="submit">Add issuer</button></form>"#,
            csrf_field(&me)
        ));
    }
    b.push_str(r#"</section><section aria-labelledby="rules-h"><h2 id="rules-h">Rules</h2>"#);
    b.push_str(&table(
        "Federation rules",
        &[
            "ID",
            "Issuer",
            "Subject",
            "Audience",
            "Service account",
            "Scope",
            "Lifetime",
            "Status",
            "",
        ],
        &rule_rows,
        "No federation rule yet.",
    ));
    let live_issuers: Vec<_> = issuers.iter().filter(|i| i.archived_at.is_none()).collect();
    let live_accounts: Vec<_> = accounts
        .iter()
        .filter(|a| a.archived_at.is_none())
        .collect();
    if manage && !live_issuers.is_empty() && !live_accounts.is_empty() {
        let iss_opts: String = live_issuers
            .iter()
            .map(|i| {
                format!(
                    r#"<option value="{}">{} ({})</option>"#,
                    esc(&i.id),
                    esc(&i.name),
                    esc(&i.id)
                )
            })
            .collect();
        let sa_opts: String = live_accounts
            .iter()
            .map(|a| {
                format!(
                    r#"<option value="{}">{} ({})</option>"#,
                    esc(&a.id),
                    esc(&a.name),
                    esc(&a.id)
                )
            })
            .collect();
        b.push_str(&format!(
            r#"<form method="post" action="/console/federation/rules" class="stack card" aria-labelledby="new-rule-h"><h3 id="new-rule-h">Add a rule</h3>{}
<label for="issuer_id">Issuer</label><select id="issuer_id" name="issuer_id">{iss_opts}</select>
<label for="subject">Subject (sub, byte for byte)</label><input id="subject" name="subject" required>
<label for="audience">Audience (aud, byte for byte)</label><input id="audience" name="audience" required>
<label for="service_account_id">Service account</label><select id="service_account_id" name="service_account_id">{sa_opts}</select>
<label for="scope">Scope</label><select id="scope" name="scope"><option>{}</option><option>{}</option></select>
<label for="token_lifetime_seconds">Token lifetime (seconds, 60–86400)</label><input id="token_lifetime_seconds" name="token_lifetime_seconds" type="number" min="60" max="86400" value="3600">
<button type="submit">Add rule</button></form>"#,
            csrf_field(&me),
            scopes::MANAGE_TUNNELS,
            scopes::READ_TUNNELS
        ));
    } else if manage {
        b.push_str(
            r#"<p class="hint">A rule needs an active issuer and an active service account.</p>"#,
        );
    }
    b.push_str("</section>");
    Ok(layout("Federation", Some(&me), "/console/federation", &b).into_response())
}

#[derive(Debug, Deserialize)]
pub struct IssuerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    issuer_url: String,
    #[serde(default)]
    jwks_url: String,
    #[serde(default)]
    jwks: String,
}
csrf_form!(IssuerForm);

pub async fn create_issuer(State(c): C, Act(me, f): Act<IssuerForm>) -> Page {
    let jwks = match opt(&f.jwks) {
        None => None,
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| ConsoleError::BadRequest(format!("jwks: not a JSON document: {e}")))?,
        ),
    };
    let new = NewIssuer {
        name: opt(&f.name),
        issuer_url: f.issuer_url.trim().to_owned(),
        jwks,
        jwks_url: opt(&f.jwks_url),
    };
    c.store().create_issuer(&me.actor(), new).await?;
    back("/console/federation")
}

pub async fn archive_issuer(
    State(c): C,
    Path(id): Path<String>,
    Act(me, _): Act<CsrfOnly>,
) -> Page {
    c.store()
        .archive_identity(&me.actor(), IdentityKind::Issuer, &id)
        .await?;
    back("/console/federation")
}

#[derive(Debug, Deserialize)]
pub struct RuleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    issuer_id: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    service_account_id: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    token_lifetime_seconds: String,
}
csrf_form!(RuleForm);

pub async fn create_rule(State(c): C, Act(me, f): Act<RuleForm>) -> Page {
    let lifetime = match opt(&f.token_lifetime_seconds) {
        None => None,
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            ConsoleError::BadRequest(format!("token_lifetime_seconds: {s:?} is not a number"))
        })?),
    };
    let new = NewRule {
        name: None,
        issuer_id: f.issuer_id,
        subject: f.subject,
        audience: f.audience,
        service_account_id: f.service_account_id,
        workspace_id: None,
        scope: opt(&f.scope),
        token_lifetime_seconds: lifetime,
    };
    c.store().create_rule(&me.actor(), new).await?;
    back("/console/federation")
}

pub async fn archive_rule(State(c): C, Path(id): Path<String>, Act(me, _): Act<CsrfOnly>) -> Page {
    c.store()
        .archive_identity(&me.actor(), IdentityKind::Rule, &id)
        .await?;
    back("/console/federation")
}

pub async fn service_accounts(State(c): C, me: Me) -> Page {
    let accounts = c.store().list_service_accounts(c.org()).await?;
    let rows: Vec<String> = accounts
        .iter()
        .map(|a| {
            let st = if a.archived_at.is_some() {
                "archived"
            } else {
                "active"
            };
            let act = if me.can_manage() && a.archived_at.is_none() {
                button_form(
                    &me,
                    &format!("/console/service-accounts/{}/archive", a.id),
                    "Archive",
                    "danger small",
                )
            } else {
                String::new()
            };
            format!(
                "{}{}<td>{}</td>{}<td>{act}</td>",
                td_code(&a.id),
                td(&a.name),
                status(st),
                td(&a.created_at[..10])
            )
        })
        .collect();
    let mut b = String::from(
        r#"<p class="hint">Workloads act as a service account when they exchange an identity token through a federation rule.</p>"#,
    );
    if me.can_manage() {
        b.push_str(&format!(
            r#"<form method="post" action="/console/service-accounts" class="row" aria-label="Create a service account">{}
<label for="sa_name">New service account</label><input id="sa_name" name="name" required maxlength="255">
<button type="submit">Create</button></form>"#,
            csrf_field(&me)
        ));
    }
    b.push_str(&table(
        "Service accounts",
        &["ID", "Name", "Status", "Created", ""],
        &rows,
        "No service account yet.",
    ));
    Ok(layout(
        "Service accounts",
        Some(&me),
        "/console/service-accounts",
        &b,
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct NameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}
csrf_form!(NameForm);

pub async fn create_service_account(State(c): C, Act(me, f): Act<NameForm>) -> Page {
    c.store()
        .create_service_account(&me.actor(), f.name.trim())
        .await?;
    back("/console/service-accounts")
}

pub async fn archive_service_account(
    State(c): C,
    Path(id): Path<String>,
    Act(me, _): Act<CsrfOnly>,
) -> Page {
    c.store()
        .archive_identity(&me.actor(), IdentityKind::ServiceAccount, &id)
        .await?;
    back("/console/service-accounts")
}

fn kind_of(path: &str) -> Result<CredentialKind, ConsoleError> {
    match path {
        "api" => Ok(CredentialKind::ApiKey),
        "client" => Ok(CredentialKind::ClientKey),
        other => Err(ConsoleError::NotFound(format!("no key kind {other:?}"))),
    }
}

fn key_rows(me: &Me, keys: &[crate::store::Credential], kind: &str) -> Vec<String> {
    let now = now_ms();
    keys.iter()
        .map(|k| {
            let st = if k.revoked_at.is_some() {
                "revoked"
            } else if k.expires_at.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            };
            let act = if me.can_manage() && st == "active" {
                button_form(
                    me,
                    &format!("/console/keys/{kind}/{}/revoke", k.id),
                    "Revoke",
                    "danger small",
                )
            } else {
                String::new()
            };
            format!(
                "{}{}{}<td>{}</td>{}{}<td>{act}</td>",
                td_code(&k.id),
                td(&k.name),
                td(&k.scopes.join(" ")),
                status(st),
                td(&when(k.created_at)),
                td(&when_opt(k.expires_at)),
            )
        })
        .collect()
}

/// The keys page, with a freshly created key shown once when `created` is given.
async fn keys_page(c: &super::Console, me: &Me, created: Option<(String, String, String)>) -> Page {
    let api = c
        .store()
        .list_credentials(c.org(), CredentialKind::ApiKey)
        .await?;
    let client = c
        .store()
        .list_credentials(c.org(), CredentialKind::ClientKey)
        .await?;
    let mut b = String::new();
    if let Some((label, id, secret)) = created {
        b.push_str(&banner("notice", &format!("{label} {id} created.")));
        b.push_str(&reveal_box(
            &format!("{label} (shown once)"),
            "newkey",
            &secret,
            "Store it now: only its hash is kept, it cannot be shown again.",
        ));
    }
    let heads = ["ID", "Name", "Scopes", "Status", "Created", "Expires", ""];
    b.push_str(r#"<section aria-labelledby="api-h"><h2 id="api-h">Tunnels API keys</h2>"#);
    if me.can_manage() {
        b.push_str(&format!(
            r#"<form method="post" action="/console/keys/api" class="row" aria-label="Create an API key">{}
<label for="api_name">Name</label><input id="api_name" name="name" required>
<label for="api_role">Role</label><select id="api_role" name="role"><option value="admin">admin (manage tunnels and the organization)</option><option value="developer" selected>developer (read tunnels)</option><option value="tunnels">tunnels (manage tunnels only)</option></select>
<label for="api_days">Expires in (days, blank: never)</label><input id="api_days" name="expires_in_days" type="number" min="1" max="3650">
<button type="submit">Create API key</button></form>"#,
            csrf_field(me)
        ));
    }
    b.push_str(&table(
        "Tunnels API keys",
        &heads,
        &key_rows(me, &api, "api"),
        "No API key.",
    ));
    b.push_str(r#"</section><section aria-labelledby="client-h"><h2 id="client-h">Client access keys</h2>
<p class="hint">MCP clients use these (scope workspace:use_tunnels) to open sessions through the edge.</p>"#);
    if me.can_manage() {
        b.push_str(&format!(
            r#"<form method="post" action="/console/keys/client" class="row" aria-label="Create a client access key">{}
<label for="client_name">Name</label><input id="client_name" name="name" required>
<label for="client_days">Expires in (days, blank: never)</label><input id="client_days" name="expires_in_days" type="number" min="1" max="3650">
<button type="submit">Create client key</button></form>"#,
            csrf_field(me)
        ));
    }
    b.push_str(&table(
        "Client access keys",
        &heads,
        &key_rows(me, &client, "client"),
        "No client access key.",
    ));
    b.push_str("</section>");
    Ok(layout("API & client keys", Some(me), "/console/keys", &b).into_response())
}

pub async fn keys(State(c): C, me: Me) -> Page {
    keys_page(&c, &me, None).await
}

#[derive(Debug, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    expires_in_days: String,
}
csrf_form!(KeyForm);

pub async fn create_key(State(c): C, Path(kind): Path<String>, Act(me, f): Act<KeyForm>) -> Page {
    let kind = kind_of(&kind)?;
    let name = opt(&f.name).ok_or_else(|| ConsoleError::BadRequest("name: required".into()))?;
    let key_scopes = match kind {
        CredentialKind::ClientKey => vec![scopes::USE_TUNNELS.to_owned()],
        _ => match f.role.as_str() {
            "tunnels" => vec![scopes::MANAGE_TUNNELS.to_owned()],
            r => scopes::for_role(r)
                .ok_or_else(|| ConsoleError::BadRequest(format!("role: unknown role {r:?}")))?,
        },
    };
    let expires_at = match opt(&f.expires_in_days) {
        None => None,
        Some(d) => match d.parse::<i64>() {
            Ok(n) if (1..=3650).contains(&n) => Some(now_ms() + n * 86_400_000),
            _ => {
                return Err(ConsoleError::BadRequest(
                    "expires in: a number of days from 1 to 3650".into(),
                ));
            }
        },
    };
    let actor = me.actor();
    let (cred, secret) = c
        .store()
        .create_credential(
            &actor,
            NewCredential {
                kind,
                workspace_id: None,
                name,
                scopes: key_scopes,
                expires_at,
                actor: actor.name.clone(),
            },
        )
        .await?;
    let label = match kind {
        CredentialKind::ClientKey => "Client access key",
        _ => "API key",
    };
    keys_page(
        &c,
        &me,
        Some((label.into(), cred.id, secret.expose().to_owned())),
    )
    .await
}

pub async fn revoke_key(
    State(c): C,
    Path((kind, id)): Path<(String, String)>,
    Act(me, _): Act<CsrfOnly>,
) -> Page {
    let kind = kind_of(&kind)?;
    c.store().revoke_credential(&me.actor(), kind, &id).await?;
    back("/console/keys")
}
