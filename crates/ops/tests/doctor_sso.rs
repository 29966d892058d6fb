//! The SSO check's reading of an organization's settings from fixed answers: what doctor
//! does with an older API (404), a key without org:admin, or an answer without the
//! field. Against the real control plane: crates/mcp-tunnel/tests/ops_doctor_api.rs.

#[allow(unused)]
mod common;

use mcp_tunnel_control::client::ApiClient;
use mcp_tunnel_ops::doctor::api::check_sso;
use mcp_tunnel_ops::finding::{Severity, Status};
use mcp_tunnel_pki::crypto::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every request with `status` and `body`.
async fn canned(status: u16, body: &'static str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn sso(status: u16, body: &'static str) -> mcp_tunnel_ops::Finding {
    let url = canned(status, body).await;
    let api = ApiClient::new(&url, Secret::new("k"), None, None).unwrap();
    check_sso(&api).await
}

#[tokio::test]
async fn enforced_sso_passes_and_optional_sso_fails() {
    let f = sso(200, r#"{"type":"organization","sso_required":true}"#).await;
    assert_eq!(
        (f.status, f.severity),
        (Status::Pass, Severity::Medium),
        "{f:?}"
    );
    let f = sso(200, r#"{"type":"organization","sso_required":false}"#).await;
    assert_eq!(
        (f.status, f.severity),
        (Status::Fail, Severity::Medium),
        "{f:?}"
    );
    assert!(f.fix.contains("--sso-required true"), "{f:?}");
}

#[tokio::test]
async fn no_setting_is_unknown_never_pass() {
    let f = sso(
        404,
        r#"{"type":"error","error":{"type":"not_found_error","message":"no route"}}"#,
    )
    .await;
    assert_eq!(f.status, Status::Unknown, "{f:?}");
    assert!(f.evidence.contains("cannot verify"), "{f:?}");
    let f = sso(200, r#"{"type":"organization"}"#).await;
    assert_eq!(f.status, Status::Unknown, "{f:?}");
    // A look-alike field is not the setting.
    let f = sso(200, r#"{"type":"organization","sso_enforced":true}"#).await;
    assert_eq!(f.status, Status::Unknown, "{f:?}");
    let f = sso(
        403,
        r#"{"type":"error","error":{"type":"permission_error","message":"needs org:admin"}}"#,
    )
    .await;
    assert_eq!(f.status, Status::Unknown, "{f:?}");
    assert!(f.fix.contains("org:admin"), "{f:?}");
}
