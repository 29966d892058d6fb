//! The audit log: every mutation and reveal recorded, chained, and tampering detected.

use mcp_tunnel_control::store::verify_jsonl;
use serde_json::json;

use crate::common::{Backend, Harness};

pub async fn audit_chain_detects_tampering(b: Backend) {
    let h = Harness::start(b).await;
    let t = h.create_tunnel("audited").await;
    let id = t["id"].as_str().unwrap();
    h.admin("POST", &format!("/v1/tunnels/{id}/reveal_token"), None)
        .await;
    h.admin(
        "POST",
        &format!("/v1/tunnels/{id}/rotate_token"),
        Some(json!({"reason": "drill"})),
    )
    .await;
    h.admin("POST", &format!("/v1/tunnels/{id}/archive"), None)
        .await;
    let page = h.admin("GET", "/v1/audit_events?limit=2", None).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["next_page"].as_str().is_some());
    let ev = &page["data"][0];
    assert_eq!(ev["action"], "tunnel.archive");
    assert_eq!(ev["actor"], format!("api_key:{}", h.boot.admin_key_id));
    assert!(ev["source"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(ev["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        h.actions().await,
        [
            "tunnel.archive",
            "tunnel.rotate_token",
            "tunnel.reveal_token",
            "tunnel.create",
            "api_key.create",
            "organization.create"
        ]
        .iter()
        .filter(|a| **a != "api_key.create")
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
    );
    let ok = h.admin("GET", "/v1/audit_events/verify", None).await;
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["events"], 5);

    // The JSONL export verifies offline; an edited line does not.
    let resp = h
        .http
        .send(
            http::Method::GET,
            &format!("{}/v1/audit_events/export", h.base),
            &[
                ("anthropic-version", "2023-06-01".into()),
                ("x-api-key", h.admin.clone()),
            ],
            None,
        )
        .await
        .unwrap();
    let jsonl = String::from_utf8(resp.body.to_vec()).unwrap();
    assert_eq!(jsonl.lines().count(), 5);
    assert!(verify_jsonl(&jsonl).valid);
    let edited = jsonl.replacen("\"drill\"", "\"routine\"", 1);
    let bad = verify_jsonl(&edited);
    assert!(
        !bad.valid && bad.error.as_deref().unwrap().contains("altered"),
        "{bad:?}"
    );
    let mut lines: Vec<&str> = jsonl.lines().collect();
    lines.remove(2);
    let gap = verify_jsonl(&lines.join("\n"));
    assert!(
        !gap.valid && gap.error.as_deref().unwrap().contains("deleted"),
        "{gap:?}"
    );

    // Edits in the database are detected too.
    let org = &h.boot.organization_id;
    let db = h.store.db();
    sqlx_exec(db, "UPDATE audit_events SET reason = 'nothing to see' WHERE action = 'tunnel.rotate_token' AND org_id = $1", org).await;
    let v = h.store.verify_audit_chain(org).await.unwrap();
    assert!(
        !v.valid && v.error.as_deref().unwrap().contains("altered"),
        "{v:?}"
    );
    sqlx_exec(db, "UPDATE audit_events SET reason = 'drill' WHERE action = 'tunnel.rotate_token' AND org_id = $1", org).await;
    assert!(h.store.verify_audit_chain(org).await.unwrap().valid);
    sqlx_exec(
        db,
        "DELETE FROM audit_events WHERE action = 'tunnel.archive' AND org_id = $1",
        org,
    )
    .await;
    let v = h.store.verify_audit_chain(org).await.unwrap();
    assert!(
        !v.valid && v.error.as_deref().unwrap().contains("deleted"),
        "{v:?}"
    );
    assert_eq!(
        h.admin("GET", "/v1/audit_events/verify", None).await["valid"],
        false
    );
}

async fn sqlx_exec(db: &mcp_tunnel_control::Db, sql: &'static str, org: &str) {
    sqlx::query(sql).bind(org).execute(db.pool()).await.unwrap();
}
