//! Tunnel pages: the filtered list, create, detail (token reveal and rotation, CA
//! certificates by file or paste, revoke) and archive with confirmation.

use axum::extract::{
    FromRequest as _, FromRequestParts as _, Multipart, Path, Query, Request, State,
};
use axum::response::{IntoResponse, Redirect};
use http::StatusCode;
use serde::Deserialize;

use super::C;
use super::html::{
    banner, button_form, csrf_field, esc, layout, pct, reveal_box, status, table, td, td_code,
    when, when_opt,
};
use super::session::{Act, ConsoleError, CsrfForm, CsrfOnly, Me, Page};
use crate::store::{ControlError, ListParams, MAX_ACTIVE_CERTIFICATES, RevealedToken, Tunnel};
use crate::time::now_ms;

const FILTERS: &[(&str, &str)] = &[
    ("active", "Active"),
    ("needs_certificate", "Needs certificate"),
    ("archived", "Archived"),
    ("all", "All"),
];

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    filter: Option<String>,
}

fn all() -> ListParams {
    ListParams {
        include_archived: true,
        limit: 1000,
        page: None,
    }
}

fn name_of(t: &Tunnel) -> &str {
    t.display_name.as_deref().unwrap_or("(unnamed)")
}

pub async fn list(State(c): C, me: Me, Query(q): Query<ListQuery>) -> Page {
    let filter = q.filter.unwrap_or_else(|| "active".into());
    if !FILTERS.iter().any(|(k, _)| *k == filter) {
        return Err(ConsoleError::BadRequest(format!(
            "unknown filter {filter:?} (active, needs_certificate, archived, all)"
        )));
    }
    let tunnels = c
        .store()
        .list_tunnels(c.org(), &me.workspace_id, &all())
        .await?
        .data;
    let matches = |t: &Tunnel, f: &str| f == "all" || t.status() == f;
    let tabs: String = FILTERS
        .iter()
        .map(|(k, label)| {
            let n = tunnels.iter().filter(|t| matches(t, k)).count();
            let cur = if *k == filter {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(
                r#"<li><a href="/console/tunnels?filter={k}"{cur}>{label} <span class="count">{n}</span></a></li>"#
            )
        })
        .collect();
    let rows: Vec<String> = tunnels
        .iter()
        .filter(|t| matches(t, &filter))
        .map(|t| {
            format!(
                r#"<td><a href="/console/tunnels/{id}">{}</a></td>{}{}<td>{}</td><td>{} of {MAX_ACTIVE_CERTIFICATES}</td><td>{}</td>{}"#,
                esc(name_of(t)),
                td_code(&t.id),
                td_code(&t.domain),
                status(t.status()),
                t.active_certificates,
                t.connections,
                td(&when(t.created_at)),
                id = esc(&t.id),
            )
        })
        .collect();
    let mut body =
        format!(r#"<nav aria-label="Tunnel filters" class="tabs"><ul>{tabs}</ul></nav>"#);
    if me.can_manage() {
        body.push_str(&format!(
            r#"<form method="post" action="/console/tunnels" class="row" aria-label="Create a tunnel">{}
<label for="display_name">New tunnel name</label><input id="display_name" name="display_name" maxlength="255" placeholder="e.g. payments-mcp">
<button type="submit">Create tunnel</button></form>"#,
            csrf_field(&me)
        ));
    }
    body.push_str(&table(
        "Tunnels",
        &[
            "Name",
            "ID",
            "Domain",
            "Status",
            "Certificates",
            "Connections",
            "Created",
        ],
        &rows,
        "No tunnels match this filter.",
    ));
    Ok(layout("Tunnels", Some(&me), "/console/tunnels", &body).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    display_name: String,
}

impl CsrfForm for CreateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn create(State(c): C, Act(me, f): Act<CreateForm>) -> Page {
    let name = f.display_name.trim();
    let name = (!name.is_empty()).then_some(name);
    let t = c.store().create_tunnel(&me.actor(), name).await?;
    Ok(Redirect::to(&format!("/console/tunnels/{}?notice=created", t.id)).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    notice: Option<String>,
}

/// What a detail page shows besides the tunnel.
#[derive(Debug, Default)]
struct Extras {
    token: Option<RevealedToken>,
    notice: Option<String>,
    error: Option<String>,
}

fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "created" => "Tunnel created. Add a CA certificate to activate it.",
        "certificate_added" => "CA certificate added.",
        "certificate_revoked" => "CA certificate revoked.",
        "archived" => {
            "Tunnel archived: its token is invalid, its certificates archived and its domain retired."
        }
        _ => return None,
    })
}

pub async fn detail(
    State(c): C,
    me: Me,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Page {
    let extras = Extras {
        notice: q.notice.as_deref().and_then(notice_text).map(str::to_owned),
        ..Extras::default()
    };
    render_detail(&c, &me, &id, extras, StatusCode::OK).await
}

async fn render_detail(c: &super::Console, me: &Me, id: &str, x: Extras, code: StatusCode) -> Page {
    let t = c.store().get_tunnel(c.org(), &me.workspace_id, id).await?;
    let certs = c
        .store()
        .list_certificates(c.org(), &me.workspace_id, id, &all())
        .await?
        .data;
    let live = t.archived_at.is_none();
    let manage = me.can_manage() && live;
    let base = format!("/console/tunnels/{}", t.id);
    let mut b = String::new();
    if let Some(n) = &x.notice {
        b.push_str(&banner("notice", n));
    }
    if let Some(e) = &x.error {
        b.push_str(&banner("error", e));
    }
    b.push_str(&format!(
        r#"<dl class="facts"><dt>Name</dt><dd>{}</dd><dt>ID</dt><dd><code>{}</code></dd>
<dt>Domain</dt><dd><code id="domain">{}</code></dd><dt>Status</dt><dd>{}</dd>
<dt>Connections</dt><dd id="connections">{}</dd><dt>Created</dt><dd>{}</dd><dt>Archived</dt><dd>{}</dd></dl>"#,
        esc(name_of(&t)),
        esc(&t.id),
        esc(&t.domain),
        status(t.status()),
        t.connections,
        when(t.created_at),
        when_opt(t.archived_at)
    ));
    b.push_str(r#"<section aria-labelledby="token-h"><h2 id="token-h">Tunnel token</h2>"#);
    if let Some(tok) = &x.token {
        b.push_str(&reveal_box(
            &format!("Tunnel token {} (shown once)", tok.id),
            "token",
            tok.tunnel_token.expose(),
            "Copy it into the connector's secret now: it is not shown again unless revealed again (which is audited).",
        ));
    }
    if manage {
        b.push_str(&format!(
            r#"<div class="actions">{}
<form method="post" action="{base}/rotate" class="row" aria-label="Rotate the token">{}
<label for="reason">Reason for rotation</label><input id="reason" name="reason" maxlength="1024" placeholder="e.g. scheduled rotation">
<button type="submit" class="warn">Rotate token</button></form></div>"#,
            button_form(me, &format!("{base}/reveal"), "Reveal token", "secondary"),
            csrf_field(me)
        ));
    } else if !live {
        b.push_str(
            r#"<p class="hint">An archived tunnel's token is invalid and cannot be revealed.</p>"#,
        );
    } else {
        b.push_str(
            r#"<p class="hint">Revealing or rotating the token needs the owner or admin role.</p>"#,
        );
    }
    b.push_str("</section>");
    b.push_str(&certificates_section(me, &base, &certs, manage));
    if manage {
        b.push_str(&format!(
            r#"<section aria-labelledby="archive-h"><h2 id="archive-h">Archive</h2>
<p>Archiving is irreversible: the token stops working, the certificates are archived and the domain is retired for ever.</p>
<p><a class="button danger" href="{base}/archive">Archive tunnel…</a></p></section>"#
        ));
    }
    let title = format!("Tunnel {}", name_of(&t));
    Ok((code, layout(&title, Some(me), "/console/tunnels", &b)).into_response())
}

fn certificates_section(
    me: &Me,
    base: &str,
    certs: &[crate::store::Certificate],
    manage: bool,
) -> String {
    let active = certs.iter().filter(|c| c.archived_at.is_none()).count();
    let now = now_ms();
    let rows: Vec<String> = certs
        .iter()
        .map(|cert| {
            let st = if cert.archived_at.is_some() {
                "revoked"
            } else if cert.expires_at.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            };
            let action = if manage && cert.archived_at.is_none() {
                button_form(
                    me,
                    &format!("{base}/certificates/{}/revoke", cert.id),
                    "Revoke",
                    "danger small",
                )
            } else {
                String::new()
            };
            format!(
                "{}{}{}<td>{}</td>{}{}<td>{action}</td>",
                td_code(&cert.fingerprint),
                td(&cert.subject),
                td(&when_opt(cert.expires_at)),
                status(st),
                td(&when(cert.created_at)),
                td(&when_opt(cert.archived_at)),
            )
        })
        .collect();
    let mut s = format!(
        r#"<section aria-labelledby="certs-h"><h2 id="certs-h">CA certificates</h2>
<p id="slots">Certificate slots: <strong>{active} of {MAX_ACTIVE_CERTIFICATES}</strong> in use</p>{}"#,
        table(
            "CA certificates of this tunnel",
            &[
                "Fingerprint (SHA-256)",
                "Subject",
                "Expires",
                "Status",
                "Added",
                "Revoked",
                ""
            ],
            &rows,
            "No CA certificate yet: the tunnel refuses traffic until one is added.",
        )
    );
    if manage {
        s.push_str(&format!(
            r#"<form method="post" action="{base}/certificates" enctype="multipart/form-data" class="stack card" aria-labelledby="add-cert-h">
<h3 id="add-cert-h">Add a CA certificate</h3>{}
<p class="hint">PEM, exactly one certificate, no private key, at most 8 KB. Choose a file or paste the PEM.</p>
<label for="ca_file">Certificate file</label><input id="ca_file" name="ca_file" type="file" accept=".pem,.crt,.cer,text/plain">
<label for="ca_pem">Or paste the PEM</label><textarea id="ca_pem" name="ca_pem" rows="6" spellcheck="false" placeholder="-----BEGIN CERTIFICATE-----"></textarea>
<button type="submit">Add certificate</button></form>"#,
            csrf_field(me)
        ));
    }
    s.push_str("</section>");
    s
}

pub async fn reveal(State(c): C, Path(id): Path<String>, Act(me, _): Act<CsrfOnly>) -> Page {
    let tok = c.store().reveal_token(&me.actor(), &id).await?;
    let x = Extras {
        token: Some(tok),
        ..Extras::default()
    };
    render_detail(&c, &me, &id, x, StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

impl CsrfForm for RotateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn rotate(State(c): C, Path(id): Path<String>, Act(me, f): Act<RotateForm>) -> Page {
    let reason = f.reason.trim();
    let reason = (!reason.is_empty()).then_some(reason);
    let tok = c.store().rotate_token(&me.actor(), &id, reason).await?;
    let x = Extras {
        token: Some(tok),
        notice: Some("Token rotated: new connector connections need the new token; established ones stay until they reconnect.".into()),
        ..Extras::default()
    };
    render_detail(&c, &me, &id, x, StatusCode::OK).await
}

/// The multipart form of "Add a CA certificate": the CSRF token, a file, a paste.
async fn read_cert_form(mut m: Multipart) -> Result<(String, String), ConsoleError> {
    let (mut csrf, mut file, mut paste) = (String::new(), Vec::new(), String::new());
    let bad = |e: axum::extract::multipart::MultipartError| {
        ConsoleError::BadRequest(format!("invalid upload: {}", e.body_text()))
    };
    while let Some(field) = m.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "csrf" => csrf = field.text().await.map_err(bad)?,
            "ca_file" => file = field.bytes().await.map_err(bad)?.to_vec(),
            "ca_pem" => paste = field.text().await.map_err(bad)?,
            _ => {}
        }
    }
    // A file wins over the text area; a file that is not UTF-8 is not PEM, and the
    // validator says so in its own words.
    let pem = if !file.is_empty() {
        String::from_utf8_lossy(&file).into_owned()
    } else {
        paste
    };
    Ok((csrf, pem))
}

pub async fn add_certificate(State(c): C, Path(id): Path<String>, req: Request) -> Page {
    let (mut parts, body) = req.into_parts();
    let me = Me::from_request_parts(&mut parts, &c).await?;
    me.require_manager()?;
    let m = Multipart::from_request(Request::from_parts(parts, body), &c)
        .await
        .map_err(|e| ConsoleError::BadRequest(format!("invalid upload: {}", e.body_text())))?;
    let (csrf, pem) = read_cert_form(m).await?;
    me.check_csrf(&csrf)?;
    if pem.trim().is_empty() {
        let x = Extras {
            error: Some("Choose a certificate file or paste a PEM.".into()),
            ..Extras::default()
        };
        return render_detail(&c, &me, &id, x, StatusCode::BAD_REQUEST).await;
    }
    match c.store().add_certificate(&me.actor(), &id, &pem).await {
        Ok(_) => Ok(Redirect::to(&format!(
            "/console/tunnels/{}?notice=certificate_added",
            pct(&id)
        ))
        .into_response()),
        Err(
            e @ (ControlError::Certificate(_) | ControlError::Invalid(_) | ControlError::Limit(_)),
        ) => {
            let msg = match e {
                ControlError::Certificate(rule) => rule.to_string(),
                ControlError::Invalid(m) | ControlError::Limit(m) => m,
                _ => String::new(),
            };
            let x = Extras {
                error: Some(msg),
                ..Extras::default()
            };
            render_detail(&c, &me, &id, x, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke_certificate(
    State(c): C,
    Path((id, cid)): Path<(String, String)>,
    Act(me, _): Act<CsrfOnly>,
) -> Page {
    c.store()
        .archive_certificate(&me.actor(), &id, &cid)
        .await?;
    Ok(Redirect::to(&format!(
        "/console/tunnels/{}?notice=certificate_revoked",
        pct(&id)
    ))
    .into_response())
}

pub async fn archive_confirm(State(c): C, me: Me, Path(id): Path<String>) -> Page {
    me.require_manager()?;
    let t = c.store().get_tunnel(c.org(), &me.workspace_id, &id).await?;
    let base = format!("/console/tunnels/{}", t.id);
    let body = format!(
        r#"<div class="card danger-zone" role="alertdialog" aria-labelledby="confirm-h" aria-describedby="confirm-d">
<h2 id="confirm-h">Archive {} ?</h2>
<p id="confirm-d">This cannot be undone. The token <strong>stops working at once</strong>, its {} certificate(s) are archived, and the domain <code>{}</code> is retired for ever.</p>
<div class="actions">{}<a class="button secondary" href="{base}">Cancel</a></div></div>"#,
        esc(name_of(&t)),
        t.active_certificates,
        esc(&t.domain),
        button_form(
            &me,
            &format!("{base}/archive"),
            "Yes, archive this tunnel",
            "danger"
        )
    );
    Ok(layout("Archive tunnel", Some(&me), "/console/tunnels", &body).into_response())
}

pub async fn archive(State(c): C, Path(id): Path<String>, Act(me, _): Act<CsrfOnly>) -> Page {
    c.store().archive_tunnel(&me.actor(), &id).await?;
    Ok(Redirect::to(&format!("/console/tunnels/{}?notice=archived", pct(&id))).into_response())
}
