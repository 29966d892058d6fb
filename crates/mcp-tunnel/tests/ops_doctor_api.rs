//! doctor's API checks against a real control plane: SSO (not available: "unknown", never
//! "pass"), the tunnel's state, the registered CA, the token's age from the audit log;
//! and the command's JSON output and exit status.

mod ops_support;

use std::time::Duration;

use mcp_tunnel_control::client::Method;
use mcp_tunnel_ops::doctor::{self, DoctorOptions};
use mcp_tunnel_ops::finding::{Severity, Status};
use mcp_tunnel_proxy::guard::SystemResolver;
use mcp_tunnel_testutil::harness::bin;
use ops_support::ControlPlane;

fn finding<'a>(r: &'a mcp_tunnel_ops::Report, id: &str) -> &'a mcp_tunnel_ops::Finding {
    r.get(id)
        .unwrap_or_else(|| panic!("no {id} in\n{}", r.to_table()))
}

#[tokio::test]
async fn api_checks_against_a_real_control_plane() {
    let cp = ControlPlane::start(false).await;
    let out = cp.dir.path().join("setup");
    let tunnel = cp.provision(&out).await;
    let id = tunnel["id"].as_str().unwrap().to_owned();
    let mut o = DoctorOptions {
        data_dir: Some(out.clone()),
        api: Some(cp.client()),
        ..DoctorOptions::default()
    };

    let r = doctor::run(&o, &SystemResolver).await;
    // A new organization signs in by password: SSO is not enforced.
    let sso = finding(&r, "org.sso");
    assert_eq!(sso.status, Status::Fail, "{sso:?}");
    assert!(
        sso.evidence.contains("does not enforce SSO") && sso.fix.contains("--sso-required"),
        "{sso:?}"
    );
    let st = finding(&r, "tunnel.state");
    assert_eq!(
        (st.status, st.severity),
        (Status::Pass, Severity::High),
        "{st:?}"
    );
    assert!(st.evidence.contains("active"), "{st:?}");
    assert_eq!(
        finding(&r, "cert.registered").status,
        Status::Pass,
        "{}",
        r.to_table()
    );
    let age = finding(&r, "token.age");
    assert_eq!(age.status, Status::Pass);
    assert!(
        age.evidence.contains("audit event tunnel.create"),
        "{age:?}"
    );

    // After a rotation, the age comes from the rotation event.
    cp.client()
        .call(
            Method::POST,
            &format!("/v1/tunnels/{id}/rotate_token"),
            Some(serde_json::json!({"reason": "doctor test"})),
        )
        .await
        .unwrap();
    let r = doctor::run(&o, &SystemResolver).await;
    assert!(
        finding(&r, "token.age")
            .evidence
            .contains("tunnel.rotate_token"),
        "{}",
        r.to_table()
    );

    // A ca.crt that is not the registered one.
    let other =
        mcp_tunnel_pki::generate::generate_ca("unregistered", Duration::from_secs(86_400)).unwrap();
    let registered = std::fs::read(out.join("ca.crt")).unwrap();
    std::fs::write(out.join("ca.crt"), &other.cert_pem).unwrap();
    let r = doctor::run(&o, &SystemResolver).await;
    let f = finding(&r, "cert.registered");
    assert_eq!(
        (f.status, f.severity),
        (Status::Fail, Severity::High),
        "{f:?}"
    );
    std::fs::write(out.join("ca.crt"), registered).unwrap();

    // SSO configured and made mandatory through the admin API: the check passes.
    let api = cp.client();
    let required = api
        .call(
            Method::POST,
            "/v1/admin/organization",
            Some(serde_json::json!({"sso_required": true})),
        )
        .await;
    assert!(required.is_err(), "SSO required before it is configured");
    api.call(
        Method::POST,
        "/v1/admin/organization/sso",
        Some(serde_json::json!({
            "issuer": "https://idp.example.test",
            "client_id": "mcp-tunnel-console",
            "client_secret": "doctor-test-secret",
        })),
    )
    .await
    .unwrap();
    let r = doctor::run(&o, &SystemResolver).await;
    assert_eq!(
        finding(&r, "org.sso").status,
        Status::Fail,
        "configured is not enforced"
    );
    api.call(
        Method::POST,
        "/v1/admin/organization",
        Some(serde_json::json!({"sso_required": true})),
    )
    .await
    .unwrap();
    let r = doctor::run(&o, &SystemResolver).await;
    let sso = finding(&r, "org.sso");
    assert_eq!(
        (sso.status, sso.severity),
        (Status::Pass, Severity::Medium),
        "{sso:?}"
    );

    // Archived: high, and the command exits 1 with the finding in its JSON.
    cp.client()
        .call(Method::POST, &format!("/v1/tunnels/{id}/archive"), None)
        .await
        .unwrap();
    o.rotation_days = 90;
    let r = doctor::run(&o, &SystemResolver).await;
    let f = finding(&r, "tunnel.state");
    assert_eq!(
        (f.status, f.severity),
        (Status::Fail, Severity::High),
        "{f:?}"
    );
    let cmd = bin()
        .args(["doctor", "--json", "--data-dir"])
        .arg(&out)
        .args(["--api-url", &cp.url, "--ca-file"])
        .arg(&cp.ca_file)
        .env("MCP_TUNNEL_API_KEY", &cp.admin_key)
        .output()
        .await
        .unwrap();
    assert_eq!(
        cmd.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&cmd.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&cmd.stdout).unwrap();
    let first = &v["findings"][0];
    assert_eq!(first["status"], "fail");
    assert_eq!(first["severity"], "high");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "tunnel.state" && f["status"] == "fail"),
        "{v:#}"
    );
    assert!(v["summary"]["high_failures"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn healthy_output_exits_zero_with_a_table() {
    let cp = ControlPlane::start(false).await;
    let out = cp.dir.path().join("setup");
    cp.provision(&out).await;
    let cmd = bin()
        .args(["doctor", "--data-dir"])
        .arg(&out)
        .args(["--api-url", &cp.url, "--ca-file"])
        .arg(&cp.ca_file)
        .env("MCP_TUNNEL_API_KEY", &cp.admin_key)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&cmd.stdout);
    assert_eq!(
        cmd.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&cmd.stderr)
    );
    assert!(text.starts_with("STATUS"), "{text}");
    assert!(text.contains("PASS     high    tunnel.state"), "{text}");
    assert!(text.contains("FAIL     medium  org.sso"), "{text}");
}
