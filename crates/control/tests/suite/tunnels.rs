//! The tunnel endpoints: objects, pagination, limits, reveal/rotate/archive.

use mcp_tunnel_proto::TunnelToken;
use serde_json::json;

use crate::common::{Backend, Harness, Options, error_of};

pub async fn tunnel_object_and_headers(b: Backend) {
    let h = Harness::start(b).await;
    let t = h.create_tunnel("prod").await;
    assert_eq!(t["type"], "tunnel");
    let id = t["id"].as_str().unwrap();
    assert!(id.starts_with("tnl_"), "{t}");
    assert_eq!(t["display_name"], "prod");
    assert_eq!(t["status"], "needs_certificate");
    assert_eq!(t["connections"], 0);
    assert!(t["archived_at"].is_null());
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));
    let domain = t["domain"].as_str().unwrap();
    let (label, base) = domain.split_once('.').unwrap();
    assert_eq!(base, "tunnels.test");
    assert!(
        label.len() == 8
            && label
                .bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );

    // ?beta=true and a comma-separated beta list are accepted.
    let headers = vec![
        ("anthropic-version", "2023-06-01".to_owned()),
        (
            "anthropic-beta",
            format!(
                "oauth-2025-04-20, {}",
                mcp_tunnel_control::api::TUNNELS_BETA
            ),
        ),
        ("x-api-key", h.admin.clone()),
    ];
    let (st, got) = h
        .raw(
            "GET",
            &format!("/v1/tunnels/{id}?beta=true"),
            &headers,
            None,
        )
        .await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["id"], id);

    // Missing beta header: 400 even with good credentials.
    let no_beta = vec![
        ("anthropic-version", "2023-06-01".to_owned()),
        ("x-api-key", h.admin.clone()),
    ];
    let msg = error_of(
        &h.raw("GET", "/v1/tunnels", &no_beta, None).await,
        400,
        "invalid_request_error",
    );
    assert!(msg.contains("mcp-tunnels-2026-06-22"), "{msg}");
    let no_version = vec![
        (
            "anthropic-beta",
            mcp_tunnel_control::api::TUNNELS_BETA.to_owned(),
        ),
        ("x-api-key", h.admin.clone()),
    ];
    error_of(
        &h.raw("GET", "/v1/tunnels", &no_version, None).await,
        400,
        "invalid_request_error",
    );
    // Newer SDKs send a later version date; malformed or older ones are refused.
    for (version, status) in [("2026-10-21", 200), ("2023-01-01", 400), ("latest", 400)] {
        let mut hdrs = no_version.clone();
        hdrs.push(("anthropic-version", version.to_owned()));
        assert_eq!(
            h.raw("GET", "/v1/tunnels", &hdrs, None).await.0,
            status,
            "{version}"
        );
    }
    error_of(
        &h.call(Some(&h.admin), "GET", "/v1/tunnels/tnl_nope", None)
            .await,
        404,
        "not_found_error",
    );
    error_of(
        &h.call(Some(&h.admin), "GET", "/v1/nothing", None).await,
        404,
        "not_found_error",
    );

    // display_name rules.
    for bad in [
        json!({"display_name": ""}),
        json!({"display_name": "x".repeat(256)}),
        json!({"display_name": 5}),
        json!({"other": 1}),
    ] {
        error_of(
            &h.call(Some(&h.admin), "POST", "/v1/tunnels", Some(bad))
                .await,
            400,
            "invalid_request_error",
        );
    }
    let long = h
        .admin(
            "POST",
            "/v1/tunnels",
            Some(json!({"display_name": "é".repeat(255)})),
        )
        .await;
    assert_eq!(long["display_name"].as_str().unwrap().chars().count(), 255);
    let unnamed = h.admin("POST", "/v1/tunnels", None).await;
    assert!(unnamed["display_name"].is_null());
    assert_ne!(unnamed["domain"], t["domain"]);
}

pub async fn pagination_newest_first(b: Backend) {
    let h = Harness::start(b).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            h.create_tunnel(&format!("t{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/v1/tunnels?limit=2".to_owned();
    loop {
        let page = h.admin("GET", &path, None).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next_page"].as_str() {
            Some(c) => path = format!("/v1/tunnels?limit=2&page={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let all = h.admin("GET", "/v1/tunnels", None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
    assert!(all["next_page"].is_null());
    for q in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "page=bm9wZQ",
        "include_archived=maybe",
    ] {
        error_of(
            &h.call(Some(&h.admin), "GET", &format!("/v1/tunnels?{q}"), None)
                .await,
            400,
            "invalid_request_error",
        );
    }
    let big = h.admin("GET", "/v1/tunnels?limit=1000", None).await;
    assert_eq!(big["data"].as_array().unwrap().len(), 5);

    // Archived tunnels only with include_archived.
    h.admin("POST", &format!("/v1/tunnels/{}/archive", ids[0]), None)
        .await;
    let live = h.admin("GET", "/v1/tunnels", None).await;
    assert_eq!(live["data"].as_array().unwrap().len(), 4);
    let with = h
        .admin("GET", "/v1/tunnels?include_archived=true", None)
        .await;
    assert_eq!(with["data"][0]["id"], ids[0].as_str());
    assert_eq!(with["data"][0]["status"], "archived");
}

pub async fn tunnel_limit_per_org(b: Backend) {
    let h = Harness::start_with(
        b,
        Options {
            max_tunnels: 3,
            ..Options::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            h.create_tunnel(&format!("t{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let msg = error_of(
        &h.call(Some(&h.admin), "POST", "/v1/tunnels", None).await,
        400,
        "invalid_request_error",
    );
    assert!(msg.contains("limit 3"), "{msg}");
    h.admin("POST", &format!("/v1/tunnels/{}/archive", ids[1]), None)
        .await;
    h.create_tunnel("after archive").await;
}

pub async fn token_reveal_rotate_archive(b: Backend) {
    let h = Harness::start(b).await;
    let t = h.create_tunnel("tok").await;
    let id = t["id"].as_str().unwrap();
    let r1 = h
        .admin("POST", &format!("/v1/tunnels/{id}/reveal_token"), None)
        .await;
    let r2 = h
        .admin(
            "POST",
            &format!("/v1/tunnels/{id}/reveal_token"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r1["type"], "tunnel_token");
    assert!(r1["id"].as_str().unwrap().starts_with("ttkn_"));
    assert_eq!(r1, r2, "reveal returns the same value until rotated");
    let value = r1["tunnel_token"].as_str().unwrap();
    assert!(value.starts_with("eyJ"));
    let parsed = TunnelToken::parse(value).unwrap();
    assert_eq!(parsed.tunnel_id.as_str(), id);
    assert_eq!(parsed.edge.to_string(), "edge.tunnels.test:7844");

    let rot = h
        .admin(
            "POST",
            &format!("/v1/tunnels/{id}/rotate_token"),
            Some(json!({"reason": "laptop lost"})),
        )
        .await;
    assert_ne!(rot["id"], r1["id"]);
    assert_ne!(rot["tunnel_token"], r1["tunnel_token"]);
    let r3 = h
        .admin("POST", &format!("/v1/tunnels/{id}/reveal_token"), None)
        .await;
    assert_eq!(r3, rot);
    let events = h.admin("GET", "/v1/audit_events", None).await;
    let rotate = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "tunnel.rotate_token")
        .unwrap();
    assert_eq!(rotate["reason"], "laptop lost");
    assert_eq!(rotate["target"], id);
    // No secret in the audit log.
    assert!(!events.to_string().contains(value));
    assert!(
        !events
            .to_string()
            .contains(rot["tunnel_token"].as_str().unwrap())
    );

    let a1 = h
        .admin("POST", &format!("/v1/tunnels/{id}/archive"), None)
        .await;
    assert_eq!(a1["status"], "archived");
    let a2 = h
        .admin("POST", &format!("/v1/tunnels/{id}/archive"), None)
        .await;
    assert_eq!(
        a1["archived_at"], a2["archived_at"],
        "archive is idempotent"
    );
    error_of(
        &h.call(
            Some(&h.admin),
            "POST",
            &format!("/v1/tunnels/{id}/reveal_token"),
            None,
        )
        .await,
        400,
        "invalid_request_error",
    );
    error_of(
        &h.call(
            Some(&h.admin),
            "POST",
            &format!("/v1/tunnels/{id}/rotate_token"),
            None,
        )
        .await,
        400,
        "invalid_request_error",
    );
    let actions = h.actions().await;
    assert_eq!(actions.iter().filter(|a| *a == "tunnel.archive").count(), 1);
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "tunnel.reveal_token")
            .count(),
        3
    );
}

/// An archived tunnel keeps its domain for ever: it is still listed with it, and the
/// database refuses any other tunnel that would take it.
pub async fn archived_domain_stays_taken(b: Backend) {
    let h = Harness::start(b).await;
    let t = h.create_tunnel("retired").await;
    let id = t["id"].as_str().unwrap();
    h.admin("POST", &format!("/v1/tunnels/{id}/archive"), None)
        .await;
    let listed = h
        .admin("GET", "/v1/tunnels?include_archived=true", None)
        .await;
    assert_eq!(listed["data"][0]["domain"], t["domain"]);
    let copy = sqlx::query(
        "INSERT INTO tunnels (id, org_id, workspace_id, display_name, domain, created_at, \
         archived_at, token_id, token_hash, token_sealed, token_created_at) \
         SELECT 'tnl_copy', org_id, workspace_id, NULL, domain, created_at, NULL, 'ttkn_copy', \
         token_hash, token_sealed, token_created_at FROM tunnels WHERE id = $1",
    )
    .bind(id)
    .execute(h.store.db().pool())
    .await;
    let err = copy.expect_err("a second tunnel took an archived tunnel's domain");
    assert!(err.to_string().to_lowercase().contains("unique"), "{err}");
    // Fresh tunnels get fresh domains.
    let next = h.create_tunnel("next").await;
    assert_ne!(next["domain"], t["domain"]);
}
