//! The authorization matrix for API keys: scopes, roles, workspaces, revocation, limits.

use serde_json::json;

use crate::common::{Backend, Harness, Options, error_of};

pub async fn authorization_matrix(b: Backend) {
    let h = Harness::start(b).await;
    let t = h.create_tunnel("mine").await;
    let id = t["id"].as_str().unwrap();

    error_of(
        &h.call(None, "GET", "/v1/tunnels", None).await,
        401,
        "authentication_error",
    );
    error_of(
        &h.call(Some("mtk_notakey"), "GET", "/v1/tunnels", None)
            .await,
        401,
        "authentication_error",
    );

    // Developer role: reads, never writes or reveals.
    let (_, dev) = h.key(json!({"name": "dev", "role": "developer"})).await;
    assert_eq!(
        h.call(Some(&dev), "GET", &format!("/v1/tunnels/{id}"), None)
            .await
            .0,
        200
    );
    assert_eq!(h.call(Some(&dev), "GET", "/v1/tunnels", None).await.0, 200);
    for (m, p) in [
        ("POST", "/v1/tunnels".to_owned()),
        ("POST", format!("/v1/tunnels/{id}/reveal_token")),
        ("POST", format!("/v1/tunnels/{id}/rotate_token")),
        ("POST", format!("/v1/tunnels/{id}/archive")),
    ] {
        error_of(
            &h.call(Some(&dev), m, &p, None).await,
            403,
            "permission_error",
        );
    }
    error_of(
        &h.call(Some(&dev), "GET", "/v1/audit_events", None).await,
        403,
        "permission_error",
    );

    // A manage key without org:admin cannot administer.
    let (_, ops) = h
        .key(json!({"name": "ops", "scopes": ["workspace:manage_tunnels"]}))
        .await;
    assert_eq!(h.call(Some(&ops), "POST", "/v1/tunnels", None).await.0, 200);
    error_of(
        &h.call(
            Some(&ops),
            "POST",
            "/v1/admin/api_keys",
            Some(json!({"name": "x"})),
        )
        .await,
        403,
        "permission_error",
    );

    // Client access keys cannot call the API.
    let ck = h
        .admin(
            "POST",
            "/v1/admin/client_keys",
            Some(json!({"name": "agent"})),
        )
        .await;
    assert_eq!(ck["scopes"], json!(["workspace:use_tunnels"]));
    error_of(
        &h.call(ck["key"].as_str(), "GET", "/v1/tunnels", None).await,
        403,
        "permission_error",
    );

    // Another workspace: its key cannot see this workspace's tunnel.
    let ws = h
        .admin(
            "POST",
            "/v1/admin/workspaces",
            Some(json!({"name": "other"})),
        )
        .await;
    let ws_id = ws["id"].as_str().unwrap();
    assert!(ws_id.starts_with("wrkspc_"));
    let (_, other) = h
        .key(json!({"name": "o", "role": "admin", "workspace_id": ws_id}))
        .await;
    error_of(
        &h.call(Some(&other), "GET", &format!("/v1/tunnels/{id}"), None)
            .await,
        404,
        "not_found_error",
    );
    error_of(
        &h.call(
            Some(&other),
            "POST",
            &format!("/v1/tunnels/{id}/reveal_token"),
            None,
        )
        .await,
        404,
        "not_found_error",
    );
    assert!(
        h.call(Some(&other), "GET", "/v1/tunnels", None).await.1["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A workspace key naming another workspace: 403.
    let mut hdrs = vec![
        ("anthropic-version", "2023-06-01".to_owned()),
        (
            "anthropic-beta",
            mcp_tunnel_control::api::TUNNELS_BETA.to_owned(),
        ),
        ("authorization", format!("Bearer {other}")),
        ("anthropic-workspace-id", h.boot.workspace_id.clone()),
    ];
    error_of(
        &h.raw("GET", "/v1/tunnels", &hdrs, None).await,
        403,
        "permission_error",
    );
    // The organization-wide admin key selects the other workspace by header.
    hdrs[2] = ("authorization", format!("Bearer {}", h.admin));
    hdrs[3] = ("anthropic-workspace-id", ws_id.to_owned());
    let (st, created) = h.raw("POST", "/v1/tunnels", &hdrs, None).await;
    assert_eq!(st, 200);
    assert_eq!(created["workspace_id"], ws_id);
    hdrs[3] = ("anthropic-workspace-id", "wrkspc_unknown".to_owned());
    error_of(
        &h.raw("GET", "/v1/tunnels", &hdrs, None).await,
        403,
        "permission_error",
    );

    // Revocation takes effect at once.
    let (kid, k) = h.key(json!({"name": "temp"})).await;
    assert_eq!(h.call(Some(&k), "GET", "/v1/tunnels", None).await.0, 200);
    h.admin("POST", &format!("/v1/admin/api_keys/{kid}/revoke"), None)
        .await;
    error_of(
        &h.call(Some(&k), "GET", "/v1/tunnels", None).await,
        401,
        "authentication_error",
    );
    let keys = h.admin("GET", "/v1/admin/api_keys", None).await;
    let listed = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == kid.as_str())
        .unwrap();
    assert!(listed["revoked_at"].as_str().is_some());
    assert!(listed.get("key").is_none(), "keys are shown once");
    assert!(h.actions().await.iter().any(|a| a == "api_key.revoke"));

    // Bad key requests.
    for bad in [
        json!({"name": "x", "role": "root"}),
        json!({"name": "x", "scopes": ["nope"]}),
        json!({"name": "x", "scopes": ["workspace:use_tunnels"]}),
        json!({"role": "admin"}),
    ] {
        error_of(
            &h.call(Some(&h.admin), "POST", "/v1/admin/api_keys", Some(bad))
                .await,
            400,
            "invalid_request_error",
        );
    }
}

pub async fn expired_key_and_rate_limit(b: Backend) {
    let h = Harness::start_with(
        b,
        Options {
            failed_auth_per_minute: 5,
            ..Options::default()
        },
    )
    .await;
    let (_, k) = h
        .key(json!({"name": "short", "expires_in_seconds": 1}))
        .await;
    assert_eq!(h.call(Some(&k), "GET", "/v1/tunnels", None).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    error_of(
        &h.call(Some(&k), "GET", "/v1/tunnels", None).await,
        401,
        "authentication_error",
    );
    for _ in 0..4 {
        error_of(
            &h.call(Some("mtk_wrong"), "GET", "/v1/tunnels", None).await,
            401,
            "authentication_error",
        );
    }
    error_of(
        &h.call(Some("mtk_wrong"), "GET", "/v1/tunnels", None).await,
        429,
        "rate_limit_error",
    );
    // Even a good key is refused from that address for the rest of the window.
    error_of(
        &h.call(Some(&h.admin), "GET", "/v1/tunnels", None).await,
        429,
        "rate_limit_error",
    );
}
