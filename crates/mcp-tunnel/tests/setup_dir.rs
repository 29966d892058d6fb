//! `mcp-tunnel setup init|renew-cert --output dir:…` as an operator runs it, against a
//! real `mcp-tunnel server`: files and modes, re-runs that change nothing, token
//! rotation by `--token-version`, and offline renewal.

mod setup_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use mcp_tunnel_control::client::Method;
use mcp_tunnel_proto::TunnelToken;
use setup_support::{ControlPlane, read, run};

const KEYS: [&str; 8] = [
    "tunnel-id",
    "tunnel-domain",
    "tunnel-token",
    "ca.crt",
    "ca.key",
    "tls.crt",
    "tls.key",
    "token-version",
];

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect();
    v.sort();
    v
}

fn not_after(dir: &Path) -> i64 {
    let certs = mcp_tunnel_pki::tls::load_certs(&dir.join("tls.crt")).unwrap();
    mcp_tunnel_pki::tls::validity(&certs[0]).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_the_output_once_and_rotates_on_a_new_token_version() {
    let cp = ControlPlane::start().await;
    let out = cp.dir.path().join("out");
    let spec = format!("dir:{}", out.display());
    let (ok, stdout, stderr) =
        run(cp.setup(&["init", "--output", &spec, "--token-version", "1"])).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("created"), "{stdout}");
    let me = {
        let probe = cp.dir.path().join("probe");
        std::fs::write(&probe, "").unwrap();
        std::fs::metadata(&probe).unwrap().uid()
    };
    for key in KEYS {
        let meta = std::fs::metadata(out.join(key)).unwrap();
        let want = if matches!(key, "tunnel-token" | "ca.key" | "tls.key") {
            0o600
        } else {
            0o644
        };
        assert_eq!(meta.permissions().mode() & 0o777, want, "{key}");
        assert_eq!(meta.uid(), me, "{key} not owned by the running user");
    }
    let id = read(&out, "tunnel-id");
    let tunnel = cp
        .call(Method::GET, &format!("/v1/tunnels/{}", id.trim()), None)
        .await;
    assert_eq!(tunnel["status"], "active");
    assert_eq!(
        tunnel["domain"].as_str().unwrap(),
        read(&out, "tunnel-domain").trim()
    );
    let token = TunnelToken::parse(&read(&out, "tunnel-token")).unwrap();
    assert_eq!(token.tunnel_id.as_str(), id.trim());
    // The token names the edge the server listens on for connectors.
    assert_eq!(token.edge.to_string(), cp.connector_addr);

    // The same command again: nothing written, no second tunnel or certificate.
    let before = snapshot(&out);
    let (ok, stdout, stderr) =
        run(cp.setup(&["init", "--output", &spec, "--token-version", "1"])).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("unchanged"), "{stdout}");
    assert_eq!(snapshot(&out), before);
    let list = cp.call(Method::GET, "/v1/tunnels", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let certs = cp
        .call(
            Method::GET,
            &format!("/v1/tunnels/{}/certificates", id.trim()),
            None,
        )
        .await;
    assert_eq!(certs["data"].as_array().unwrap().len(), 1);

    // A new --token-version rotates: the old token is dead at the API, the new one stored.
    let (ok, stdout, stderr) =
        run(cp.setup(&["init", "--output", &spec, "--token-version", "2"])).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("rotated (token version 1 -> 2)"),
        "{stdout}"
    );
    let rotated = read(&out, "tunnel-token");
    assert_ne!(rotated.trim(), token.encode());
    let revealed = cp
        .call(
            Method::POST,
            &format!("/v1/tunnels/{}/reveal_token", id.trim()),
            None,
        )
        .await;
    assert_eq!(revealed["tunnel_token"].as_str().unwrap(), rotated.trim());
    // No secret on stdout or stderr.
    assert!(!stdout.contains(rotated.trim()) && !stderr.contains(rotated.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_cert_is_a_no_op_on_a_fresh_certificate_and_renews_an_old_one_offline() {
    let cp = ControlPlane::start().await;
    let fresh = cp.dir.path().join("fresh");
    let old = cp.dir.path().join("old");
    for (dir, duration) in [(&fresh, "2160h"), (&old, "240h")] {
        let spec = format!("dir:{}", dir.display());
        let (ok, stdout, stderr) =
            run(cp.setup(&["init", "--output", &spec, "--cert-duration", duration])).await;
        assert!(ok, "{stdout}{stderr}");
    }
    // Offline: no API URL, no credentials.
    let renew = |dir: &Path| {
        let mut cmd = mcp_tunnel_testutil::harness::bin();
        cmd.args(["setup", "renew-cert", "--output"])
            .arg(format!("dir:{}", dir.display()))
            .args(["--renew-before", "720h"])
            .env_remove("API_URL")
            .env_remove("API_TOKEN")
            .env_remove("KUBERNETES_SERVICE_HOST");
        cmd
    };
    let before = snapshot(&fresh);
    let (ok, stdout, stderr) = run(renew(&fresh)).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("nothing to do"), "{stdout}");
    assert_eq!(snapshot(&fresh), before);

    let old_cert = read(&old, "tls.crt");
    let old_until = not_after(&old);
    let old_ca = read(&old, "ca.crt");
    let (ok, stdout, stderr) = run(renew(&old)).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("renewed"), "{stdout}");
    assert_ne!(read(&old, "tls.crt"), old_cert);
    assert_eq!(read(&old, "ca.crt"), old_ca, "renewal must keep the CA");
    let until = not_after(&old);
    assert!(until - old_until > 1900 * 3600, "{old_until} -> {until}");
    assert_eq!(
        std::fs::metadata(old.join("tls.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // The renewed certificate passes the client's rules against the registered CA.
    let domain = read(&old, "tunnel-domain");
    let leaf = mcp_tunnel_pki::tls::load_certs(&old.join("tls.crt")).unwrap();
    let ca = mcp_tunnel_pki::tls::load_certs(&old.join("ca.crt")).unwrap();
    mcp_tunnel_pki::validate::validate_server_cert(
        &leaf[0],
        &[],
        &[ca[0].as_ref()],
        &format!("mcp.{}", domain.trim()),
        until - 3600,
    )
    .unwrap();
    // Nothing to renew from: a clear message.
    let empty = cp.dir.path().join("empty");
    let (ok, _, stderr) = run(renew(&empty)).await;
    assert!(!ok);
    assert!(
        stderr.contains("run `mcp-tunnel setup init` first"),
        "{stderr}"
    );
}

#[tokio::test]
async fn output_and_credentials_are_required_and_named() {
    let cp_less = |args: &[&str]| {
        let mut cmd = mcp_tunnel_testutil::harness::bin();
        cmd.arg("setup")
            .args(args)
            .env("API_URL", "https://127.0.0.1:9")
            .env_remove("API_TOKEN")
            .env_remove("ANTHROPIC_FEDERATION_RULE_ID")
            .env_remove("ANTHROPIC_ORGANIZATION_ID")
            .env_remove("ANTHROPIC_IDENTITY_TOKEN")
            .env_remove("ANTHROPIC_IDENTITY_TOKEN_FILE")
            .env_remove("KUBERNETES_SERVICE_HOST");
        cmd
    };
    let (ok, _, stderr) = run(cp_less(&["init"])).await;
    assert!(
        !ok && stderr.contains("--output is required outside Kubernetes"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(cp_less(&["init", "--output", "dir:/nonexistent/x"])).await;
    assert!(
        !ok && stderr.contains("no credentials: set API_TOKEN"),
        "{stderr}"
    );
    let mut both = cp_less(&["init", "--output", "dir:/nonexistent/x"]);
    both.env("ANTHROPIC_FEDERATION_RULE_ID", "fdrl_x")
        .env("ANTHROPIC_ORGANIZATION_ID", "o")
        .env("ANTHROPIC_IDENTITY_TOKEN", "a")
        .env("ANTHROPIC_IDENTITY_TOKEN_FILE", "/b");
    let (ok, _, stderr) = run(both).await;
    assert!(!ok && stderr.contains("exactly one of"), "{stderr}");
    let (ok, _, stderr) = run(cp_less(&["init", "--output", "s3:bucket"])).await;
    assert!(
        !ok && stderr.contains("expected dir:/path or k8s-secret:NAME"),
        "{stderr}"
    );
}
