//! The console's store and HTTP behaviour: organization SSO settings through the admin
//! API, users and roles, sessions and their timeouts, and the console's forms (CSRF,
//! origin, roles) over HTTP with the bootstrap password.

use std::time::Duration;

use mcp_tunnel_control::store::{
    Actor, AuditFilter, ListParams, LoginMethod, NewSsoConfig, Role, SessionLimits,
};
use mcp_tunnel_pki::crypto::Secret;
use serde_json::json;
use sqlx::Row as _;

use crate::common::{Backend, Harness, Options, error_of};

fn actor(h: &Harness) -> Actor {
    Actor {
        org_id: h.boot.organization_id.clone(),
        workspace_id: h.boot.workspace_id.clone(),
        name: "user:test".into(),
        source: "local".into(),
    }
}

pub async fn organization_sso_settings(b: Backend) {
    let h = Harness::start(b).await;
    let org = h.admin("GET", "/v1/admin/organization", None).await;
    assert_eq!(org["id"], h.boot.organization_id.as_str());
    assert_eq!(org["sso_required"], false);
    assert_eq!(org["sso_configured"], false);
    // Requiring SSO before configuring it would lock everybody out.
    let got = h
        .call(
            Some(&h.admin),
            "POST",
            "/v1/admin/organization",
            Some(json!({"sso_required": true})),
        )
        .await;
    assert!(error_of(&got, 400, "invalid_request_error").contains("configure an SSO provider"));
    // The secret is required the first time, then kept.
    let got = h
        .call(
            Some(&h.admin),
            "POST",
            "/v1/admin/organization/sso",
            Some(json!({"issuer": "https://idp.example", "client_id": "console"})),
        )
        .await;
    assert!(error_of(&got, 400, "invalid_request_error").contains("client_secret is required"));
    let got = h
        .call(
            Some(&h.admin),
            "POST",
            "/v1/admin/organization/sso",
            Some(json!({"issuer": "http://idp.example", "client_id": "c", "client_secret": "s"})),
        )
        .await;
    assert!(error_of(&got, 400, "invalid_request_error").contains("issuer must be an https URL"));
    let org = h
        .admin(
            "POST",
            "/v1/admin/organization/sso",
            Some(json!({"issuer": "https://idp.example/", "client_id": "console",
                "client_secret": "very-secret-value", "allowed_domains": "Example.com, corp.example",
                "auto_provision_role": "developer"})),
        )
        .await;
    assert_eq!(org["sso_configured"], true);
    assert_eq!(org["sso"]["issuer"], "https://idp.example");
    assert_eq!(
        org["sso"]["allowed_domains"],
        json!(["example.com", "corp.example"])
    );
    assert_eq!(org["sso"]["auto_provision_role"], "developer");
    assert!(!org.to_string().contains("very-secret-value"));
    // Sealed at rest, and it opens.
    let row = sqlx::query("SELECT client_secret_sealed FROM sso_configs WHERE org_id = $1")
        .bind(h.boot.organization_id.as_str())
        .fetch_one(h.store.db().pool())
        .await
        .unwrap();
    let sealed: Vec<u8> = row.try_get("client_secret_sealed").unwrap();
    assert!(!sealed.windows(17).any(|w| w == b"very-secret-value"));
    assert_eq!(
        h.store
            .sso_client_secret(&h.boot.organization_id)
            .await
            .unwrap()
            .expose(),
        "very-secret-value"
    );
    let org = h
        .admin(
            "POST",
            "/v1/admin/organization",
            Some(json!({"sso_required": true})),
        )
        .await;
    assert_eq!(org["sso_required"], true);
    // A developer key cannot read or change it.
    let (_, dev) = h.key(json!({"name": "dev", "role": "developer"})).await;
    let got = h
        .call(Some(&dev), "GET", "/v1/admin/organization", None)
        .await;
    error_of(&got, 403, "permission_error");
    let actions = h.actions().await;
    for a in ["organization.sso_configure", "organization.sso_required"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
}

pub async fn users_roles_and_sessions(b: Backend) {
    let h = Harness::start(b).await;
    let org = h.boot.organization_id.clone();
    let by = actor(&h);
    let (owner, pw) = h.store.create_bootstrap_admin(&org, "admin").await.unwrap();
    assert_eq!(owner.role, Role::Owner);
    assert!(owner.has_password && pw.expose().len() >= 20);
    // Users through the admin API.
    let dev = h
        .admin(
            "POST",
            "/v1/admin/users",
            Some(json!({"login": "Dave@Example.com"})),
        )
        .await;
    assert_eq!(dev["login"], "dave@example.com");
    assert_eq!(dev["role"], "developer");
    assert_eq!(dev["password_login"], false);
    let got = h
        .call(
            Some(&h.admin),
            "POST",
            "/v1/admin/users",
            Some(json!({"login": "dave@example.com"})),
        )
        .await;
    assert!(error_of(&got, 400, "invalid_request_error").contains("already exists"));
    let dev_id = dev["id"].as_str().unwrap().to_owned();
    // The last manager cannot be demoted or disabled; nobody changes themselves.
    let err = h
        .store
        .update_user(&by, None, &owner.id, Some(Role::Developer), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("last enabled owner or admin"),
        "{err}"
    );
    let err = h
        .store
        .update_user(&by, Some(&owner.id), &owner.id, None, Some(true))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("your own"), "{err}");

    // Sessions: live, touched, then ended by the idle limit.
    let limits = SessionLimits::default();
    let sid = h
        .store
        .create_session(&owner, LoginMethod::Password, "127.0.0.1:1")
        .await
        .unwrap();
    let s = h.store.session(&org, sid.expose(), limits).await.unwrap();
    assert_eq!(s.unwrap().user.id, owner.id);
    assert!(
        h.store
            .session(&org, "not-a-session", limits)
            .await
            .unwrap()
            .is_none()
    );
    let short = SessionLimits {
        idle: Duration::from_millis(50),
        absolute: Duration::from_secs(3600),
    };
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        h.store
            .session(&org, sid.expose(), short)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        h.store
            .session(&org, sid.expose(), limits)
            .await
            .unwrap()
            .is_none(),
        "an expired session is deleted, not just hidden"
    );
    // The absolute limit applies however active the session is.
    let sid = h
        .store
        .create_session(&owner, LoginMethod::Password, "127.0.0.1:1")
        .await
        .unwrap();
    let abs = SessionLimits {
        idle: Duration::from_secs(3600),
        absolute: Duration::from_millis(50),
    };
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        h.store
            .session(&org, sid.expose(), abs)
            .await
            .unwrap()
            .is_none()
    );

    // Disabling a user ends their sessions; requiring SSO ends password sessions only.
    let dev_user = h.store.get_user(&org, &dev_id).await.unwrap();
    let dev_sid = h
        .store
        .create_session(&dev_user, LoginMethod::Sso, "127.0.0.1:2")
        .await
        .unwrap();
    let pw_sid = h
        .store
        .create_session(&owner, LoginMethod::Password, "127.0.0.1:1")
        .await
        .unwrap();
    let sso_sid = h
        .store
        .create_session(&owner, LoginMethod::Sso, "127.0.0.1:1")
        .await
        .unwrap();
    h.store
        .set_sso_config(
            &by,
            NewSsoConfig {
                issuer: "https://idp.example".into(),
                client_id: "c".into(),
                client_secret: Some(Secret::new("s")),
                allowed_domains: vec!["example.com".into()],
                auto_provision_role: None,
            },
        )
        .await
        .unwrap();
    h.store.set_sso_required(&by, true).await.unwrap();
    assert!(
        h.store
            .session(&org, pw_sid.expose(), limits)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        h.store
            .session(&org, sso_sid.expose(), limits)
            .await
            .unwrap()
            .is_some()
    );
    let dis = h
        .admin(
            "POST",
            &format!("/v1/admin/users/{dev_id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert!(dis["disabled_at"].is_string());
    assert!(
        h.store
            .session(&org, dev_sid.expose(), limits)
            .await
            .unwrap()
            .is_none()
    );

    // SSO sign-in: domain allow-list, known users, no auto-provisioning here.
    let e = h
        .store
        .sso_user(&org, "eve@evil.example", "x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not in a domain allowed"), "{e}");
    let e = h
        .store
        .sso_user(&org, "new@example.com", "x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ask an owner or admin"), "{e}");
    let e = h
        .store
        .sso_user(&org, "dave@example.com", "x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("disabled"), "{e}");
    let actions = h.actions().await;
    for a in ["user.create", "user.update", "console.login"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
}

/// A tiny browser: one cookie jar, form posts with an Origin header.
struct Browser<'a> {
    h: &'a Harness,
    cookies: Vec<(String, String)>,
}

impl Browser<'_> {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn request(&mut self, method: &str, path: &str, form: Option<&str>) -> (u16, String) {
        let mut headers = vec![("cookie", self.cookie_header())];
        if form.is_some() {
            headers.push((
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ));
            headers.push(("origin", self.h.base.clone()));
        }
        let resp = self
            .h
            .http
            .send(
                method.parse().unwrap(),
                &format!("{}{path}", self.h.base),
                &headers,
                form.map(|f| f.as_bytes().to_vec()),
            )
            .await
            .unwrap();
        for v in resp.headers.get_all("set-cookie") {
            let (kv, _) = v.to_str().unwrap().split_once(';').unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.into(), v.into()));
            }
        }
        let location = resp
            .headers
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        (resp.status.as_u16(), location.unwrap_or(body))
    }
}

fn hidden_csrf(html: &str) -> String {
    let i = html.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    html[i..].split('"').next().unwrap().to_owned()
}

pub async fn console_forms_over_http(b: Backend) {
    let h = Harness::start_with(
        b,
        Options {
            console: Some(SessionLimits::default()),
            ..Options::default()
        },
    )
    .await;
    let org = h.boot.organization_id.clone();
    let (_, pw) = h.store.create_bootstrap_admin(&org, "admin").await.unwrap();
    let mut web = Browser {
        h: &h,
        cookies: Vec::new(),
    };
    let (st, loc) = web.request("GET", "/console/tunnels", None).await;
    assert_eq!((st, loc.as_str()), (303, "/console/login"));
    let (st, page) = web.request("GET", "/console/login", None).await;
    assert_eq!(st, 200);
    let pre = hidden_csrf(&page);
    // Wrong password, then a forged pre-sign-in token, then the real thing.
    let (st, _) = web
        .request(
            "POST",
            "/console/login",
            Some(&format!("csrf={pre}&login=admin&password=nope")),
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = web
        .request(
            "POST",
            "/console/login",
            Some(&format!("csrf=forged&login=admin&password={}", pw.expose())),
        )
        .await;
    assert_eq!(st, 403);
    let (st, loc) = web
        .request(
            "POST",
            "/console/login",
            Some(&format!("csrf={pre}&login=admin&password={}", pw.expose())),
        )
        .await;
    assert_eq!((st, loc.as_str()), (303, "/console/tunnels"));
    assert!(
        web.cookies.iter().any(|(k, _)| k == "mcpt_session"),
        "{:?}",
        web.cookies
    );
    let (st, page) = web.request("GET", "/console/tunnels", None).await;
    assert_eq!(st, 200);
    let csrf = hidden_csrf(&page);
    // Without the token nothing is created; with it the tunnel is, audited as the user.
    let (st, body) = web
        .request("POST", "/console/tunnels", Some("display_name=nope"))
        .await;
    assert_eq!(st, 403, "{body}");
    let (st, loc) = web
        .request(
            "POST",
            "/console/tunnels",
            Some(&format!("csrf={csrf}&display_name=from-console")),
        )
        .await;
    assert_eq!(st, 303);
    assert!(loc.starts_with("/console/tunnels/tnl_"), "{loc}");
    let tunnel = loc
        .trim_start_matches("/console/tunnels/")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let (st, page) = web
        .request(
            "POST",
            &format!("/console/tunnels/{tunnel}/reveal"),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(st, 200);
    assert!(page.contains(r#"id="token" type="text" readonly value="eyJ"#));
    let (st, _) = web
        .request("GET", &format!("/console/tunnels/{tunnel}/reveal"), None)
        .await;
    assert_eq!(st, 405, "no reveal by GET");
    let events = h.admin("GET", "/v1/audit_events?limit=100", None).await;
    let by_user: Vec<_> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "user:admin")
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        by_user,
        ["tunnel.reveal_token", "tunnel.create", "console.login"]
    );

    // A developer (password set for the test) can read but every POST is refused.
    let by = actor(&h);
    let dev_pw = Secret::new("developer-password-123");
    h.store
        .create_user(&by, "dev", Role::Developer, Some(&dev_pw))
        .await
        .unwrap();
    let mut dev = Browser {
        h: &h,
        cookies: Vec::new(),
    };
    let (_, page) = dev.request("GET", "/console/login", None).await;
    let pre = hidden_csrf(&page);
    let (st, _) = dev
        .request(
            "POST",
            "/console/login",
            Some(&format!(
                "csrf={pre}&login=dev&password={}",
                dev_pw.expose()
            )),
        )
        .await;
    assert_eq!(st, 303);
    let (st, page) = dev
        .request("GET", &format!("/console/tunnels/{tunnel}"), None)
        .await;
    assert_eq!(st, 200);
    assert!(!page.contains("Reveal token") && !page.contains("Add certificate"));
    let dcsrf = hidden_csrf(&page);
    let (st, body) = dev
        .request(
            "POST",
            &format!("/console/tunnels/{tunnel}/reveal"),
            Some(&format!("csrf={dcsrf}")),
        )
        .await;
    assert_eq!(st, 403);
    assert!(body.contains("can view but not change anything"));
}

pub async fn audit_filters(b: Backend) {
    let h = Harness::start(b).await;
    let org = h.boot.organization_id.clone();
    let t = h.create_tunnel("filtered").await;
    let tid = t["id"].as_str().unwrap();
    h.admin("POST", &format!("/v1/tunnels/{tid}/reveal_token"), None)
        .await;
    let by = Actor {
        name: "user:a_b%c@example.com".into(),
        ..actor(&h)
    };
    h.store.create_service_account(&by, "sa").await.unwrap();
    let params = ListParams {
        include_archived: true,
        limit: 100,
        page: None,
    };
    let search = |f: AuditFilter| {
        let store = h.store.clone();
        let org = org.clone();
        let params = params.clone();
        async move {
            store
                .search_audit_events(&org, &f, &params)
                .await
                .unwrap()
                .data
                .into_iter()
                .map(|e| e.action)
                .collect::<Vec<_>>()
        }
    };
    let tunnel = search(AuditFilter {
        action_prefix: Some("tunnel.".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(tunnel, ["tunnel.reveal_token", "tunnel.create"]);
    let on_target = search(AuditFilter {
        target: Some(tid.into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(on_target, tunnel);
    // LIKE wildcards in a filter match only themselves.
    let literal = search(AuditFilter {
        actor: Some("a_b%c@".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(literal, ["service_account.create"]);
    let wildcard = search(AuditFilter {
        actor: Some("%".into()),
        action_prefix: Some("tunnel".into()),
        ..AuditFilter::default()
    })
    .await;
    assert!(wildcard.is_empty(), "{wildcard:?}");
    let all = search(AuditFilter::default()).await;
    assert_eq!(all.len(), 4, "{all:?}");
}
