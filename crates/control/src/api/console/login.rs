//! Signing in and out: the sign-in page, password sign-in (unless SSO is required), the
//! OIDC redirect and callback, and logout.

use std::sync::Arc;

use axum::extract::{FromRequest as _, FromRequestParts as _, Query, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use mcp_tunnel_pki::crypto::{self, Secret};
use serde::Deserialize;

use super::html::{banner, esc, layout};
use super::oidc::{self, OidcError};
use super::session::{ConsoleError, CsrfOnly, Me, OIDC, PRE, Page, SESSION, source};
use super::{C, Console};
use crate::password;
use crate::store::{LoginMethod, PendingLogin, User, random_token};

const CALLBACK: &str = "/console/sso/callback";

fn origin_of(url: &str) -> String {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("");
    let scheme = url.split_once("://").map_or("https", |(s, _)| s);
    format!("{scheme}://{host}")
}

/// Renders the sign-in page with an optional error, setting the pre-sign-in cookie that
/// its forms must echo (login CSRF).
async fn render(c: &Console, parts: &Parts, error: Option<&str>, status: StatusCode) -> Page {
    let org = c.store().organization(c.org()).await?;
    let pre = c
        .read_cookie(&parts.headers, PRE)
        .filter(|v| v.len() == 43)
        .unwrap_or_else(|| random_token().expose().to_owned());
    let mut body = String::new();
    if let Some(e) = error {
        body.push_str(&banner("error", e));
    }
    body.push_str(r#"<div class="signin">"#);
    if let Some(sso) = &org.sso {
        body.push_str(&format!(
            r#"<section aria-labelledby="sso-h"><h2 id="sso-h">Single sign-on</h2>
<p>Sign in with your organization's identity provider (<code>{}</code>).</p>
<form method="post" action="/console/login/sso"><input type="hidden" name="csrf" value="{pre}">
<button type="submit">Sign in with SSO</button></form></section>"#,
            esc(&sso.issuer)
        ));
    }
    if org.sso_required {
        body.push_str(
            r#"<p class="hint" id="password-off">Password sign-in is turned off: this organization requires single sign-on.</p>"#,
        );
    } else {
        body.push_str(&format!(
            r#"<section aria-labelledby="pw-h"><h2 id="pw-h">Password</h2>
<form method="post" action="/console/login" class="stack">
<input type="hidden" name="csrf" value="{pre}">
<label for="login">Login</label><input id="login" name="login" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form></section>"#
        ));
    }
    body.push_str("</div>");
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         form-action 'self'{}; frame-ancestors 'none'; base-uri 'none'",
        org.sso
            .as_ref()
            .map(|s| format!(" {}", origin_of(&s.issuer)))
            .unwrap_or_default()
    );
    let mut resp = (status, layout("Sign in", None, "", &body)).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    if let Ok(v) = HeaderValue::from_str(&c.set_cookie(PRE, &pre, Some(3600))) {
        h.append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

pub async fn page(State(c): C, req: Request) -> Page {
    let (mut parts, _) = req.into_parts();
    if Me::from_request_parts(&mut parts, &c).await.is_ok() {
        return Ok(Redirect::to("/console/tunnels").into_response());
    }
    render(&c, &parts, None, StatusCode::OK).await
}

/// Checks a pre-sign-in form: same origin, and the echoed pre-sign-in cookie.
fn check_pre(c: &Console, parts: &Parts, submitted: &str) -> Result<(), ConsoleError> {
    c.check_origin(parts)?;
    let cookie = c.read_cookie(&parts.headers, PRE).unwrap_or_default();
    if cookie.is_empty() || !crypto::ct_eq(cookie.as_bytes(), submitted.as_bytes()) {
        return Err(ConsoleError::Forbidden(
            "the sign-in form expired or did not come from this console: reload the page".into(),
        ));
    }
    Ok(())
}

/// Opens a session and sends the browser on to the console.
async fn signed_in(c: &Console, user: &User, method: LoginMethod, src: &str) -> Page {
    let id = c.store().create_session(user, method, src).await?;
    tracing::info!(user = %user.login, method = method.as_str(), source = %src, "console sign-in");
    let mut resp = Redirect::to("/console/tunnels").into_response();
    let h = resp.headers_mut();
    for cookie in [
        c.set_cookie(SESSION, id.expose(), None),
        c.set_cookie(PRE, "", Some(0)),
        c.set_cookie(OIDC, "", Some(0)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
}

pub async fn password(State(c): C, req: Request) -> Page {
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts.clone(), body);
    let axum::Form(f) = axum::Form::<PasswordForm>::from_request(req, &c)
        .await
        .map_err(|e| ConsoleError::BadRequest(format!("invalid form: {}", e.body_text())))?;
    check_pre(&c, &parts, &f.csrf)?;
    if c.store().organization(c.org()).await?.sso_required {
        return Err(ConsoleError::Forbidden(
            "Password sign-in is turned off: this organization requires single sign-on.".into(),
        ));
    }
    let src = source(&parts.extensions);
    let ip = parts
        .extensions
        .get::<crate::api::SourceAddr>()
        .map(|s| s.0.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    if c.api.limiter.check(ip).is_err() {
        return render(
            &c,
            &parts,
            Some("Too many failed sign-ins from this address: wait a minute and try again."),
            StatusCode::TOO_MANY_REQUESTS,
        )
        .await;
    }
    let pw = Secret::new(f.password);
    let found = c.store().user_by_login(c.org(), &f.login).await?;
    let user = match found {
        Some((u, Some(hash)))
            if u.disabled_at.is_none() && password::verify(pw.expose(), &hash) =>
        {
            Some(u)
        }
        Some((_, Some(_))) => None,
        _ => {
            password::burn(pw.expose());
            None
        }
    };
    match user {
        Some(u) => signed_in(&c, &u, LoginMethod::Password, &src).await,
        None => {
            c.api.limiter.failed(ip);
            tracing::info!(source = %src, "console password sign-in refused");
            render(
                &c,
                &parts,
                Some("Wrong login or password."),
                StatusCode::UNAUTHORIZED,
            )
            .await
        }
    }
}

pub async fn sso_start(State(c): C, req: Request) -> Page {
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts.clone(), body);
    let axum::Form(f) = axum::Form::<CsrfOnly>::from_request(req, &c)
        .await
        .map_err(|e| ConsoleError::BadRequest(format!("invalid form: {}", e.body_text())))?;
    check_pre(&c, &parts, &f.csrf)?;
    let Some(cfg) = c.store().sso_config(c.org()).await? else {
        return Err(ConsoleError::BadRequest(
            "SSO is not configured for this organization".into(),
        ));
    };
    let provider = match c.provider(&cfg, false).await {
        Ok(p) => p,
        Err(e) => return render(&c, &parts, Some(&e.to_string()), StatusCode::BAD_GATEWAY).await,
    };
    let state = random_token();
    let pending = PendingLogin {
        nonce: random_token(),
        verifier: random_token(),
    };
    c.store()
        .begin_oidc_login(c.org(), state.expose(), &pending)
        .await?;
    let url = oidc::authorize_url(
        &provider,
        &cfg.client_id,
        &format!("{}{CALLBACK}", c.origin(&parts)),
        state.expose(),
        pending.nonce.expose(),
        &oidc::challenge(&pending.verifier),
    );
    let mut resp = Redirect::to(&url).into_response();
    if let Ok(v) = HeaderValue::from_str(&c.set_cookie(OIDC, state.expose(), Some(600))) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

pub async fn sso_callback(State(c): C, Query(q): Query<Callback>, req: Request) -> Page {
    let (parts, _) = req.into_parts();
    match sso_finish(&c, &parts, q).await {
        Ok(resp) => Ok(resp),
        Err(SsoRefusal::Page(e)) => Err(e),
        Err(SsoRefusal::Oidc(e)) => {
            tracing::info!(reason = %e, "console SSO sign-in refused");
            render(&c, &parts, Some(&e.to_string()), StatusCode::FORBIDDEN).await
        }
    }
}

enum SsoRefusal {
    Page(ConsoleError),
    Oidc(OidcError),
}

impl From<ConsoleError> for SsoRefusal {
    fn from(e: ConsoleError) -> Self {
        Self::Page(e)
    }
}

impl From<OidcError> for SsoRefusal {
    fn from(e: OidcError) -> Self {
        Self::Oidc(e)
    }
}

impl From<crate::store::ControlError> for SsoRefusal {
    fn from(e: crate::store::ControlError) -> Self {
        Self::Page(e.into())
    }
}

async fn sso_finish(c: &Arc<Console>, parts: &Parts, q: Callback) -> Result<Response, SsoRefusal> {
    let state = q.state.unwrap_or_default();
    let cookie = c.read_cookie(&parts.headers, OIDC).unwrap_or_default();
    if state.is_empty() || !crypto::ct_eq(state.as_bytes(), cookie.as_bytes()) {
        return Err(ConsoleError::BadRequest(
            "this sign-in did not start in this browser (state mismatch): start again from the sign-in page".into(),
        )
        .into());
    }
    let pending = c
        .store()
        .take_oidc_login(c.org(), &state)
        .await?
        .ok_or_else(|| {
            ConsoleError::BadRequest(
                "this sign-in expired or was already used: start again from the sign-in page"
                    .into(),
            )
        })?;
    if let Some(err) = q.error {
        return Err(OidcError::Exchange {
            status: 0,
            error: err,
        }
        .into());
    }
    let code = q
        .code
        .ok_or_else(|| ConsoleError::BadRequest("the callback carries no code".into()))?;
    let cfg = c
        .store()
        .sso_config(c.org())
        .await?
        .ok_or_else(|| ConsoleError::BadRequest("SSO is not configured".into()))?;
    let secret = c.store().sso_client_secret(c.org()).await?;
    let provider = c.provider(&cfg, false).await?;
    let redirect_uri = format!("{}{CALLBACK}", c.origin(parts));
    let id_token = c
        .exchange_code(
            &provider,
            &cfg,
            &secret,
            &code,
            &redirect_uri,
            &pending.verifier,
        )
        .await?;
    let verify = |jwks| {
        oidc::verify_id_token(
            &id_token,
            jwks,
            &cfg.issuer,
            &cfg.client_id,
            pending.nonce.expose(),
        )
    };
    let claims = match verify(&provider.jwks) {
        Ok(c) => c,
        // The provider may have rotated its keys since they were cached.
        Err(_) => verify(&c.provider(&cfg, true).await?.jwks)?,
    };
    let email = claims.email.filter(|e| !e.is_empty()).ok_or_else(|| {
        OidcError::IdToken("it carries no email claim (request the email scope)".into())
    })?;
    if claims.email_verified == Some(false) {
        return Err(
            OidcError::IdToken(format!("the e-mail address {email} is not verified")).into(),
        );
    }
    let src = source(&parts.extensions);
    let user = match c.store().sso_user(c.org(), &email, &src).await {
        Ok(u) => u,
        Err(crate::store::ControlError::Forbidden(m)) => {
            return Err(OidcError::IdToken(m).into());
        }
        Err(e) => return Err(e.into()),
    };
    tracing::debug!(subject = %claims.sub, "SSO subject verified");
    Ok(signed_in(c, &user, LoginMethod::Sso, &src).await?)
}

pub async fn logout(State(c): C, req: Request) -> Page {
    let (mut parts, body) = req.into_parts();
    let me = Me::from_request_parts(&mut parts, &c).await?;
    let req = Request::from_parts(parts, body);
    let axum::Form(f) = axum::Form::<CsrfOnly>::from_request(req, &c)
        .await
        .map_err(|e| ConsoleError::BadRequest(format!("invalid form: {}", e.body_text())))?;
    me.check_csrf(&f.csrf)?;
    c.store()
        .end_session(&me.actor(), me.session_id.expose(), &me.user.id)
        .await?;
    let mut resp = Redirect::to("/console/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&c.set_cookie(SESSION, "", Some(0))) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}
