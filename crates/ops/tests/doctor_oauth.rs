//! doctor's OAuth check against the real PyPI `mcp` server (testdata/mcp_server.py), with
//! and without the SDK's authorization settings.

mod common;

use std::time::Duration;

use common::*;
use mcp_tunnel_ops::finding::{Severity, Status};
use mcp_tunnel_testutil::logs::LoggedChild;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn mcp_server(args: &[&str]) -> (LoggedChild, u16) {
    let mut cmd = tokio::process::Command::new(mcp_tunnel_testutil::python());
    cmd.arg(mcp_tunnel_testutil::repo_root().join("testdata/mcp_server.py"))
        .args(args);
    let child = LoggedChild::spawn(cmd);
    let line = child
        .wait_for(Duration::from_secs(60), |l| l.starts_with("PORT "))
        .await;
    let port = line["PORT ".len()..].trim().parse().unwrap();
    (child, port)
}

async fn doctor_routes(routes: &str, probe_all: bool) -> mcp_tunnel_ops::Report {
    let d = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.proxy_config = Some(config(
        d.path(),
        &format!("routes:\n{routes}upstream:\n  allowed_ips: [127.0.0.1/32]\n"),
    ));
    o.probe_upstreams = probe_all;
    run(&o).await
}

#[tokio::test]
async fn mcp_server_without_auth_fails_high() {
    let (server, port) = mcp_server(&[]).await;
    let r = doctor_routes(&format!("  open: http://127.0.0.1:{port}\n"), false).await;
    let f = assert_finding(&r, "oauth.open", Status::Fail, Severity::High);
    assert!(f.evidence.contains("answered 200"), "{}", f.evidence);
    assert!(f.fix.contains("token_verifier"), "{}", f.fix);
    assert!(r.has_blocking());
    // The probe really reached the server, and closed the session it opened.
    let lines = server.lines().join("\n");
    assert!(lines.contains("Created new transport"), "{lines}");
}

#[tokio::test]
async fn mcp_server_requiring_oauth_passes_with_its_metadata() {
    let (_server, port) = mcp_server(&[
        "--require-auth",
        "test-token",
        "--issuer-url",
        "https://auth.example.test",
    ])
    .await;
    let r = doctor_routes(&format!("  guarded: http://127.0.0.1:{port}\n"), false).await;
    let f = assert_finding(&r, "oauth.guarded", Status::Pass, Severity::High);
    assert!(
        f.evidence.contains(&format!(
            "http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
        )),
        "{}",
        f.evidence
    );
    assert!(
        f.evidence.contains("https://auth.example.test"),
        "{}",
        f.evidence
    );
}

/// A server that answers every request `401` without a challenge.
async fn bare_401() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_401_without_a_bearer_challenge_fails_medium() {
    let port = bare_401().await;
    let r = doctor_routes(&format!("  odd: http://127.0.0.1:{port}\n"), false).await;
    let f = assert_finding(&r, "oauth.odd", Status::Fail, Severity::Medium);
    assert!(
        f.evidence.contains("without a WWW-Authenticate"),
        "{}",
        f.evidence
    );
}

#[tokio::test]
async fn remote_upstreams_are_not_probed_unless_asked() {
    // (Probing them with --probe-upstreams would send packets off this host, which the
    // tests never do; the probe itself is exercised on loopback above.)
    let r = doctor_routes("  far: http://10.255.255.1:8000\n", false).await;
    let f = assert_finding(&r, "oauth.far", Status::Unknown, Severity::High);
    assert!(f.fix.contains("--probe-upstreams"), "{}", f.fix);
}
