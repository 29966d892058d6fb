//! Workload identity federation: the jwt-bearer exchange and its refusals.

use serde_json::{Value, json};

use crate::common::{Backend, Harness, TestIssuer, error_of, now};

const ISS: &str = "https://issuer.test";
const AUD: &str = "https://api.tunnels.test";
const SUB: &str = "system:serviceaccount:ci:deployer";

pub struct Setup {
    pub issuer: TestIssuer,
    pub rule: String,
    pub sa: String,
}

pub async fn setup(h: &Harness, jwks_url: Option<String>) -> Setup {
    let issuer = TestIssuer::new("k1");
    let sa = h
        .admin(
            "POST",
            "/v1/admin/service_accounts",
            Some(json!({"name": "deployer"})),
        )
        .await;
    let sa = sa["id"].as_str().unwrap().to_owned();
    assert!(sa.starts_with("svac_"));
    let body = match jwks_url {
        Some(u) => json!({"issuer_url": ISS, "jwks_url": u}),
        None => json!({"issuer_url": ISS, "jwks": issuer.jwks()}),
    };
    let fdis = h
        .admin("POST", "/v1/admin/federation/issuers", Some(body))
        .await;
    assert!(fdis["id"].as_str().unwrap().starts_with("fdis_"));
    let rule = h
        .admin(
            "POST",
            "/v1/admin/federation/rules",
            Some(json!({
                "issuer_id": fdis["id"], "subject": SUB, "audience": AUD, "service_account_id": sa,
                "scope": "workspace:manage_tunnels", "token_lifetime_seconds": 600,
            })),
        )
        .await;
    let rule = rule["id"].as_str().unwrap().to_owned();
    assert!(rule.starts_with("fdrl_"));
    Setup { issuer, rule, sa }
}

pub fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": SUB, "iat": now(), "exp": now() + 300})
}

pub async fn exchange(h: &Harness, s: &Setup, assertion: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "assertion": assertion,
        "federation_rule_id": s.rule,
        "organization_id": h.boot.organization_id,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let headers = [(
        "anthropic-beta",
        mcp_tunnel_control::api::FEDERATION_BETA.to_owned(),
    )];
    h.raw("POST", "/v1/oauth/token", &headers, Some(body)).await
}

pub async fn federation_exchange(b: Backend) {
    let h = Harness::start(b).await;
    let s = setup(&h, None).await;
    let (st, tok) = exchange(
        &h,
        &s,
        &s.issuer.sign(&claims()),
        json!({"service_account_id": s.sa, "workspace_id": "default"}),
    )
    .await;
    assert_eq!(st, 200, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 600);
    assert_eq!(tok["scope"], "workspace:manage_tunnels");
    let access = tok["access_token"].as_str().unwrap();
    let t = h
        .call(
            Some(access),
            "POST",
            "/v1/tunnels",
            Some(json!({"display_name": "via wif"})),
        )
        .await;
    assert_eq!(t.0, 200, "{}", t.1);
    // An access token is workspace-bound and not an admin.
    error_of(
        &h.call(Some(access), "GET", "/v1/admin/api_keys", None)
            .await,
        403,
        "permission_error",
    );
    let ev = h.admin("GET", "/v1/audit_events?limit=1", None).await;
    assert_eq!(ev["data"][0]["action"], "tunnel.create");
    assert_eq!(ev["data"][0]["actor"], format!("service_account:{}", s.sa));
    assert!(
        h.actions()
            .await
            .iter()
            .any(|a| a == "oauth.token_exchange")
    );
    // Live tokens survive the purge; expired ones stop working and are purged.
    h.store.purge_expired_access_tokens(0).await.unwrap();
    assert_eq!(
        h.call(Some(access), "GET", "/v1/tunnels", None).await.0,
        200
    );
    sqlx::query(
        "UPDATE credentials SET expires_at = 1 WHERE org_id = $1 AND kind = 'access_token'",
    )
    .bind(h.boot.organization_id.as_str())
    .execute(h.store.db().pool())
    .await
    .unwrap();
    error_of(
        &h.call(Some(access), "GET", "/v1/tunnels", None).await,
        401,
        "authentication_error",
    );
    assert!(h.store.purge_expired_access_tokens(0).await.unwrap() >= 1);
}

pub async fn federation_refusals(b: Backend) {
    let h = Harness::start(b).await;
    let s = setup(&h, None).await;
    let good = s.issuer.sign(&claims());
    let mut c = claims();
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    c["exp"] = json!(now() - 120);
    cases.push(("expired", s.issuer.sign(&c), "expired"));
    let mut c = claims();
    c["nbf"] = json!(now() + 600);
    cases.push(("not yet valid", s.issuer.sign(&c), "not valid yet"));
    let mut c = claims();
    c["iss"] = json!("https://evil.test");
    cases.push(("wrong issuer", s.issuer.sign(&c), "issuer"));
    let mut c = claims();
    c["aud"] = json!("https://other.test");
    cases.push(("wrong audience", s.issuer.sign(&c), "audience"));
    let mut c = claims();
    c["sub"] = json!(format!("{SUB} "));
    cases.push(("subject differs by a byte", s.issuer.sign(&c), "subject"));
    let forger = TestIssuer::new("k1");
    cases.push(("forged", forger.sign(&claims()), "signature"));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    cases.push(("no exp", s.issuer.sign(&c), "exp"));
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    cases.push(("HS256", hs, "not allowed"));
    cases.push(("garbage", "not.a.jwt".into(), "well-formed"));
    for (name, jwt, expect) in &cases {
        let got = exchange(&h, &s, jwt, json!({})).await;
        let msg = error_of(&got, 401, "authentication_error");
        assert!(msg.contains(expect), "{name}: {msg}");
    }
    // Request-shape errors.
    let no_beta = h
        .raw(
            "POST",
            "/v1/oauth/token",
            &[],
            Some(json!({"grant_type": "x"})),
        )
        .await;
    error_of(&no_beta, 400, "invalid_request_error");
    error_of(
        &exchange(&h, &s, &good, json!({"grant_type": "client_credentials"})).await,
        400,
        "invalid_request_error",
    );
    error_of(
        &exchange(&h, &s, &good, json!({"federation_rule_id": "fdrl_nope"})).await,
        401,
        "authentication_error",
    );
    error_of(
        &exchange(
            &h,
            &s,
            &good,
            json!({"organization_id": "00000000-0000-4000-8000-000000000000"}),
        )
        .await,
        401,
        "authentication_error",
    );
    error_of(
        &exchange(&h, &s, &good, json!({"service_account_id": "svac_other"})).await,
        401,
        "authentication_error",
    );
    error_of(
        &exchange(&h, &s, &good, json!({"workspace_id": "wrkspc_other"})).await,
        403,
        "permission_error",
    );
    // The good assertion still works after all that; archiving the rule stops it.
    assert_eq!(exchange(&h, &s, &good, json!({})).await.0, 200);
    h.admin(
        "POST",
        &format!("/v1/admin/federation/rules/{}/archive", s.rule),
        None,
    )
    .await;
    error_of(
        &exchange(&h, &s, &good, json!({})).await,
        401,
        "authentication_error",
    );
    // Rule validation.
    let bad = h
        .call(
            Some(&h.admin),
            "POST",
            "/v1/admin/federation/rules",
            Some(json!({
        "issuer_id": "fdis_x", "subject": SUB, "audience": AUD, "service_account_id": s.sa})),
        )
        .await;
    error_of(&bad, 400, "invalid_request_error");
    let issuers = h.admin("GET", "/v1/admin/federation/issuers", None).await;
    let fdis = issuers["data"][0]["id"].clone();
    for lifetime in [59, 86_401] {
        let bad = h
            .call(
                Some(&h.admin),
                "POST",
                "/v1/admin/federation/rules",
                Some(json!({
            "issuer_id": fdis, "subject": SUB, "audience": AUD, "service_account_id": s.sa,
            "token_lifetime_seconds": lifetime})),
            )
            .await;
        assert!(error_of(&bad, 400, "invalid_request_error").contains("token_lifetime_seconds"));
    }
    let bad = h
        .call(
            Some(&h.admin),
            "POST",
            "/v1/admin/federation/issuers",
            Some(json!({"issuer_url": ISS, "jwks_url": "http://192.0.2.1/jwks"})),
        )
        .await;
    assert!(error_of(&bad, 400, "invalid_request_error").contains("loopback"));
}

/// JWKS fetched from a loopback URL, and re-fetched when the issuer rotates keys.
pub async fn federation_jwks_url(b: Backend) {
    let h = Harness::start(b).await;
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let served = keys.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = served.lock().unwrap().to_string();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let s = setup(&h, Some(url)).await;
    *keys.lock().unwrap() = s.issuer.jwks();
    assert_eq!(
        exchange(&h, &s, &s.issuer.sign(&claims()), json!({}))
            .await
            .0,
        200
    );
    let rotated = TestIssuer::new("k2");
    *keys.lock().unwrap() = rotated.jwks();
    let got = exchange(&h, &s, &rotated.sign(&claims()), json!({})).await;
    assert_eq!(got.0, 200, "{}", got.1);
}
