//! Organization pages: console users and roles, the SSO provider and `sso_required`,
//! and the audit log with filters and the chain check.

use axum::extract::{FromRequestParts as _, Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use http::request::Parts;
use mcp_tunnel_pki::crypto::Secret;
use serde::Deserialize;

use super::C;
use super::html::{
    banner, csrf_field, esc, layout, pct, status, table, td, td_code_nowrap, when_opt,
};
use super::session::{Act, ConsoleError, CsrfForm, Me, Page};
use crate::store::{AuditFilter, ListParams, NewSsoConfig, Role, parse_domains};

macro_rules! csrf_form {
    ($t:ty) => {
        impl CsrfForm for $t {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        }
    };
}

fn role_options(selected: Role) -> String {
    Role::ALL
        .iter()
        .map(|r| {
            let sel = if *r == selected { " selected" } else { "" };
            format!(r#"<option value="{0}"{sel}>{0}</option>"#, r.as_str())
        })
        .collect()
}

pub async fn users(State(c): C, me: Me) -> Page {
    let users = c.store().list_users(c.org()).await?;
    let manage = me.can_manage();
    let rows: Vec<String> = users
        .iter()
        .map(|u| {
            let st = if u.disabled_at.is_some() { "disabled" } else { "active" };
            let sign_in = if u.has_password { "password or SSO" } else { "SSO" };
            let act = if manage && u.id != me.user.id {
                let toggle = if u.disabled_at.is_some() { ("false", "Enable") } else { ("true", "Disable") };
                format!(
                    r#"<form method="post" action="/console/users/{id}" class="inline">{csrf}<label class="sr" for="role-{id}">Role of {login}</label><select id="role-{id}" name="role">{opts}</select><button type="submit" class="secondary small">Change role</button></form>
<form method="post" action="/console/users/{id}" class="inline">{csrf}<input type="hidden" name="disabled" value="{v}"><button type="submit" class="danger small">{l}</button></form>"#,
                    id = esc(&u.id),
                    login = esc(&u.login),
                    csrf = csrf_field(&me),
                    opts = role_options(u.role),
                    v = toggle.0,
                    l = toggle.1,
                )
            } else {
                String::new()
            };
            format!(
                "{}{}{}<td>{}</td>{}<td>{act}</td>",
                td(&u.login),
                td(u.role.as_str()),
                td(sign_in),
                status(st),
                td(&when_opt(u.last_login_at)),
            )
        })
        .collect();
    let mut b = String::from(
        r#"<p class="hint">Owners and admins change tunnels, identities and settings; developers see everything read-only. SSO users are matched by their verified e-mail address.</p>"#,
    );
    if manage {
        b.push_str(&format!(
            r#"<form method="post" action="/console/users" class="row" aria-label="Add a user">{}
<label for="new_login">E-mail address</label><input id="new_login" name="login" type="email" required>
<label for="new_role">Role</label><select id="new_role" name="role">{}</select>
<button type="submit">Add user</button></form>"#,
            csrf_field(&me),
            role_options(Role::Developer)
        ));
    }
    b.push_str(&table(
        "Console users",
        &[
            "Login",
            "Role",
            "Signs in with",
            "Status",
            "Last sign-in",
            "",
        ],
        &rows,
        "No users.",
    ));
    Ok(layout("Users", Some(&me), "/console/users", &b).into_response())
}

fn parse_role(r: &str) -> Result<Role, ConsoleError> {
    Role::parse(r).ok_or_else(|| ConsoleError::BadRequest(format!("role: unknown role {r:?}")))
}

#[derive(Debug, Deserialize)]
pub struct NewUserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    role: String,
}
csrf_form!(NewUserForm);

pub async fn create_user(State(c): C, Act(me, f): Act<NewUserForm>) -> Page {
    let role = parse_role(&f.role)?;
    c.store()
        .create_user(&me.actor(), &f.login, role, None)
        .await?;
    Ok(Redirect::to("/console/users").into_response())
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    csrf: String,
    role: Option<String>,
    disabled: Option<String>,
}
csrf_form!(UserForm);

pub async fn update_user(State(c): C, Path(id): Path<String>, Act(me, f): Act<UserForm>) -> Page {
    let role = f.role.as_deref().map(parse_role).transpose()?;
    let disabled = f.disabled.as_deref().map(|d| d == "true");
    c.store()
        .update_user(&me.actor(), Some(&me.user.id), &id, role, disabled)
        .await?;
    Ok(Redirect::to("/console/users").into_response())
}

pub async fn settings(State(c): C, parts: Parts) -> Page {
    let mut parts = parts;
    let me = Me::from_request_parts(&mut parts, &c).await?;
    let org = c.store().organization(c.org()).await?;
    let callback = format!("{}/console/sso/callback", c.origin(&parts));
    let manage = me.can_manage();
    let dis = if manage { "" } else { " disabled" };
    let sso = org.sso.as_ref();
    let mut b = format!(
        r#"<dl class="facts"><dt>Organization</dt><dd>{}</dd><dt>ID</dt><dd><code>{}</code></dd>
<dt>SSO</dt><dd id="sso-state">{}</dd><dt>Redirect URI to register</dt><dd><code>{}</code></dd></dl>"#,
        esc(&org.name),
        esc(&org.id),
        match (org.sso_configured, org.sso_required) {
            (true, true) => "configured, required (password sign-in off)",
            (true, false) => "configured, optional",
            _ => "not configured",
        },
        esc(&callback)
    );
    let prov = sso
        .and_then(|s| s.auto_provision_role)
        .map(Role::as_str)
        .unwrap_or("none");
    let prov_opts: String = ["none", "developer", "admin"]
        .iter()
        .map(|r| {
            let sel = if *r == prov { " selected" } else { "" };
            format!(r#"<option value="{r}"{sel}>{r}</option>"#)
        })
        .collect();
    let form_open = if manage {
        format!(
            r#"<form method="post" action="/console/settings/sso" class="stack card" aria-labelledby="sso-h">{}"#,
            csrf_field(&me)
        )
    } else {
        r#"<div class="stack card" aria-labelledby="sso-h">"#.into()
    };
    b.push_str(&format!(
        r#"{form_open}<h2 id="sso-h">Single sign-on (OIDC)</h2>
<label for="issuer">Issuer URL</label><input id="issuer" name="issuer" value="{}" required{dis}>
<label for="client_id">Client ID</label><input id="client_id" name="client_id" value="{}" required{dis}>
<label for="client_secret">Client secret {}</label><input id="client_secret" name="client_secret" type="password" autocomplete="off"{dis}>
<label for="allowed_domains">Allowed e-mail domains (comma-separated, blank: any)</label><input id="allowed_domains" name="allowed_domains" value="{}"{dis}>
<label for="auto_provision_role">Role of unknown users on first sign-in</label><select id="auto_provision_role" name="auto_provision_role"{dis}>{prov_opts}</select>
{}"#,
        esc(sso.map(|s| s.issuer.as_str()).unwrap_or("")),
        esc(sso.map(|s| s.client_id.as_str()).unwrap_or("")),
        if sso.is_some() { "(stored sealed; blank keeps it)" } else { "" },
        esc(&sso.map(|s| s.allowed_domains.join(", ")).unwrap_or_default()),
        if manage { r#"<button type="submit">Save SSO settings</button></form>"# } else { "</div>" }
    ));
    if manage {
        let checked = if org.sso_required { " checked" } else { "" };
        b.push_str(&format!(
            r#"<form method="post" action="/console/settings/sso-required" class="stack card" aria-labelledby="req-h">{}
<h2 id="req-h">Require SSO</h2>
<p>When required, password sign-in is off and password sessions end at once; the identity provider's session controls then apply to everyone who can change tunnels, federation rules and service accounts.</p>
<div class="check"><input type="checkbox" id="sso_required" name="sso_required" value="true"{checked}><label for="sso_required">Require single sign-on for this organization</label></div>
<button type="submit">Save</button></form>"#,
            csrf_field(&me)
        ));
    }
    Ok(layout("Settings", Some(&me), "/console/settings", &b).into_response())
}

#[derive(Debug, Deserialize)]
pub struct SsoForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    allowed_domains: String,
    #[serde(default)]
    auto_provision_role: String,
}
csrf_form!(SsoForm);

pub async fn set_sso(State(c): C, Act(me, f): Act<SsoForm>) -> Page {
    let role = match f.auto_provision_role.as_str() {
        "" | "none" => None,
        r => Some(parse_role(r)?),
    };
    let cfg = NewSsoConfig {
        issuer: f.issuer,
        client_id: f.client_id,
        client_secret: (!f.client_secret.is_empty()).then(|| Secret::new(f.client_secret)),
        allowed_domains: parse_domains(&f.allowed_domains)?,
        auto_provision_role: role,
    };
    c.store().set_sso_config(&me.actor(), cfg).await?;
    Ok(Redirect::to("/console/settings").into_response())
}

#[derive(Debug, Deserialize)]
pub struct RequiredForm {
    #[serde(default)]
    csrf: String,
    sso_required: Option<String>,
}
csrf_form!(RequiredForm);

pub async fn set_sso_required(State(c): C, Act(me, f): Act<RequiredForm>) -> Page {
    let required = f.sso_required.as_deref() == Some("true");
    c.store().set_sso_required(&me.actor(), required).await?;
    Ok(Redirect::to("/console/settings").into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
    page: Option<String>,
}

/// Action groups offered by the filter.
const ACTIONS: &[&str] = &[
    "tunnel.",
    "certificate.",
    "api_key.",
    "client_key.",
    "oauth.",
    "federation_issuer.",
    "federation_rule.",
    "service_account.",
    "workspace.",
    "user.",
    "console.",
    "organization.",
];

pub async fn audit(State(c): C, me: Me, Query(q): Query<AuditQuery>) -> Page {
    let filter = AuditFilter {
        action_prefix: q.action.clone(),
        actor: q.actor.clone(),
        target: q.target.clone(),
    };
    let params = ListParams {
        include_archived: true,
        limit: 100,
        page: q.page.clone().filter(|p| !p.is_empty()),
    };
    let page = c
        .store()
        .search_audit_events(c.org(), &filter, &params)
        .await?;
    let chain = c.store().verify_audit_chain(c.org()).await?;
    let action = q.action.clone().unwrap_or_default();
    let opts: String = std::iter::once(("", "any action"))
        .chain(ACTIONS.iter().map(|a| (*a, *a)))
        .map(|(v, l)| {
            let sel = if v == action { " selected" } else { "" };
            format!(
                r#"<option value="{v}"{sel}>{}</option>"#,
                esc(l.trim_end_matches('.'))
            )
        })
        .collect();
    let mut b = if chain.valid {
        banner(
            "notice",
            &format!("Hash chain verified: {} events, untampered.", chain.events),
        )
    } else {
        banner(
            "error",
            &format!("Hash chain BROKEN: {}", chain.error.unwrap_or_default()),
        )
    };
    b.push_str(&format!(
        r#"<form method="get" action="/console/audit" class="row" role="search" aria-label="Filter the audit log">
<label for="f_action">Action</label><select id="f_action" name="action">{opts}</select>
<label for="f_actor">Actor contains</label><input id="f_actor" name="actor" value="{}">
<label for="f_target">Target</label><input id="f_target" name="target" value="{}">
<button type="submit" class="secondary">Filter</button> <a href="/console/audit">Clear</a></form>"#,
        esc(q.actor.as_deref().unwrap_or("")),
        esc(q.target.as_deref().unwrap_or(""))
    ));
    let rows: Vec<String> = page
        .data
        .iter()
        .map(|e| {
            let details = if e.details.as_object().is_some_and(|o| o.is_empty()) {
                String::new()
            } else {
                e.details.to_string()
            };
            format!(
                "{}{}{}{}{}{}<td class=\"details\"><code>{}</code></td>",
                td(&e.time[..19].replace('T', " ")),
                td(&e.actor),
                td_code_nowrap(&e.action),
                td_code_nowrap(&e.target),
                td(&e.source),
                td(e.reason.as_deref().unwrap_or("")),
                esc(&details)
            )
        })
        .collect();
    b.push_str(&table(
        "Audit events, newest first",
        &[
            "Time (UTC)",
            "Actor",
            "Action",
            "Target",
            "Source",
            "Reason",
            "Details",
        ],
        &rows,
        "No event matches these filters.",
    ));
    if let Some(next) = &page.next_page {
        let keep = |k: &str, v: &Option<String>| {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| format!("&{k}={}", pct(s)))
                .unwrap_or_default()
        };
        b.push_str(&format!(
            r#"<p><a href="/console/audit?page={}{}{}{}">Older events</a></p>"#,
            pct(next),
            keep("action", &q.action),
            keep("actor", &q.actor),
            keep("target", &q.target)
        ));
    }
    Ok(layout("Audit log", Some(&me), "/console/audit", &b).into_response())
}
