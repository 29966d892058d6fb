//! The proxy's certificate: hot reload under an open session, a bad new pair ignored,
//! and certificates made with the documented openssl recipe served correctly.

mod common;

use std::path::Path;
use std::process::Command as StdCommand;
use std::time::Duration;

use common::*;
use mcp_tunnel_testutil::mcp::McpServer;
use mcp_tunnel_testutil::pki::TestPki;

/// Replaces a file the way careful tooling does: write aside, then rename over.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_without_dropping_sessions() {
    let server = McpServer::start().await;
    let h = ProxyHarness::start(&format!(
        "routes:\n  mcp: {}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\n",
        server.origin()
    ))
    .await;
    let old_fp = h.pki.server.fingerprint.clone();
    let mut open = h.session("mcp").await;
    assert_eq!(open.peer_fingerprint(), old_fp);
    assert_eq!(get(&mut open, "/headers").await.0, 200);

    // A new certificate from the same CA: key first, then certificate, as `setup
    // renew-cert` does; the half-written state (new key, old cert) must not be served.
    let renewed = TestPki::issue(&h.pki.ca, DOMAIN, Duration::from_secs(86_400 * 3));
    replace(&h.pki.key_file, renewed.key_pem.expose());
    replace(&h.pki.cert_file, &renewed.cert_pem);
    h.proxy
        .wait_for(Duration::from_secs(10), |l| {
            l.contains("\"certificate reloaded\"") && l.contains(&renewed.fingerprint)
        })
        .await;

    // The session opened before the reload keeps working...
    assert_eq!(get(&mut open, "/headers").await.0, 200);
    assert_eq!(open.peer_fingerprint(), old_fp);
    // ...and new sessions get the new certificate.
    let fresh = h.session("mcp").await;
    assert_eq!(fresh.peer_fingerprint(), renewed.fingerprint);

    // A broken pair is logged and ignored: the renewed certificate stays in service.
    let failures_before = count(&h, "certificate reload failed");
    replace(
        &h.pki.cert_file,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    wait_until(|| count(&h, "certificate reload failed") > failures_before).await;
    let mut after = h.session("mcp").await;
    assert_eq!(after.peer_fingerprint(), renewed.fingerprint);
    assert_eq!(get(&mut after, "/headers").await.0, 200);

    // A certificate whose key does not match is refused too.
    let other = TestPki::issue(&h.pki.ca, DOMAIN, Duration::from_secs(86_400));
    replace(&h.pki.cert_file, &other.cert_pem);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = h.session("mcp").await;
    assert_eq!(after.peer_fingerprint(), renewed.fingerprint);
    let (_, metrics) = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("mcp_proxy_certificate_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "mcp_proxy_certificate_not_after_seconds {}",
            renewed.not_after
        )),
        "{metrics}"
    );
}

fn count(h: &ProxyHarness, needle: &str) -> usize {
    h.proxy
        .lines()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within 10 s");
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = StdCommand::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_certificates_made_with_the_openssl_recipe() {
    let server = McpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-sha256",
            "-subj",
            "/CN=recipe CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            &format!("/CN=*.{DOMAIN}"),
        ],
    );
    std::fs::write(
        d.join("server.ext"),
        format!("subjectAltName=DNS:*.{DOMAIN}\nauthorityKeyIdentifier=keyid\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "tls.crt",
            "-days",
            "7",
            "-sha256",
            "-extfile",
            "server.ext",
        ],
    );

    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen_addr: \"127.0.0.1:0\"\nadmin_addr: off\ntunnel_domain: {DOMAIN}\ntls:\n  cert_file: {0}/tls.crt\n  key_file: {0}/tls.key\nroutes:\n  mcp: {1}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\n",
            d.display(),
            server.origin()
        ),
    )
    .unwrap();
    let mut cmd = bin();
    cmd.arg("proxy").arg("-config").arg(&config);
    let proxy = mcp_tunnel_testutil::logs::LoggedChild::spawn(cmd);
    let line = proxy
        .wait_for(Duration::from_secs(20), |l| {
            l.contains("\"proxy listening\"")
        })
        .await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr: std::net::SocketAddr = v["listen_addr"].as_str().unwrap().parse().unwrap();

    // The client trusts only the recipe's CA.
    let ca = mcp_tunnel_pki::tls::load_certs(&d.join("ca.crt")).unwrap();
    let tls = mcp_tunnel_client::InnerTls::trusting(&ca).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let session = mcp_tunnel_client::Session::open(
        tcp,
        &mcp_tunnel_client::Target::new(addr.to_string(), format!("mcp.{DOMAIN}")),
        &tls,
    )
    .await
    .unwrap();
    let mut mcp = mcp_tunnel_client::mcp::McpClient::new(session, "/mcp");
    mcp.initialize().await.unwrap();
    let result = mcp
        .call_tool("echo", serde_json::json!({"text": "recipe"}))
        .await
        .unwrap();
    assert_eq!(result["content"][0]["text"], "recipe");
}
