//! `mcp-tunnel connect` rides out the tunnel dropping: its pooled sessions die with the
//! connector that carried them, and a request made while no connector is registered
//! waits for one (within `--connect-timeout`) instead of failing. Real processes
//! throughout: `server` (edge + API), proxy, connector, connect, a PyPI `mcp` server.

mod ops_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mcp_tunnel_control::client::Method;
use mcp_tunnel_control::http_client::HttpClient;
use mcp_tunnel_testutil::harness::bin;
use mcp_tunnel_testutil::logs::LoggedChild;
use mcp_tunnel_testutil::mcp::McpServer;
use ops_support::ControlPlane;
use serde_json::{Value, json};

fn connector(proxy: SocketAddr, token: &Path) -> LoggedChild {
    let mut cmd = bin();
    cmd.args(["connector", "run", "--url", &format!("http://{proxy}")])
        .args([
            "--ha-connections",
            "2",
            "--grace-period",
            "1s",
            "--token-file",
        ])
        .arg(token);
    LoggedChild::spawn(cmd)
}

async fn registered(c: &LoggedChild, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .lines()
        .iter()
        .filter(|l| l.contains("Registered tunnel connection"))
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "connector did not register {n} links:\n{}",
            c.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET /headers on the MCP server, through connect.
async fn through(http: &HttpClient, connect: SocketAddr) -> (u16, String) {
    let resp = http
        .send(Method::GET, &format!("http://{connect}/headers"), &[], None)
        .await
        .expect("request to connect");
    (
        resp.status.as_u16(),
        String::from_utf8_lossy(&resp.body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_survives_the_connector_dying_and_coming_back() {
    let cp = ControlPlane::start(true).await;
    let out = cp.dir.path().join("stack");
    let tunnel = cp.provision(&out).await;
    let domain = tunnel["domain"].as_str().unwrap();
    let api = cp.client();
    let key = api
        .call(
            Method::POST,
            "/v1/admin/client_keys",
            Some(json!({"name": "reconnect test"})),
        )
        .await
        .unwrap();

    let server = McpServer::start().await;
    let cfg = cp.dir.path().join("proxy.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen_addr: \"127.0.0.1:0\"\nadmin_addr: off\ntunnel_domain: {domain}\ntls:\n  cert_file: {o}/tls.crt\n  key_file: {o}/tls.key\nroutes:\n  mcp: {up}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\n",
            o = out.display(),
            up = server.origin()
        ),
    )
    .unwrap();
    let mut pcmd = bin();
    pcmd.args(["proxy", "--config"]).arg(&cfg);
    let proxy = LoggedChild::spawn(pcmd);
    let line = proxy
        .wait_for(Duration::from_secs(20), |l| l.contains("proxy listening"))
        .await;
    let v: Value = serde_json::from_str(&line).unwrap();
    let proxy_addr: SocketAddr = v["listen_addr"].as_str().unwrap().parse().unwrap();

    let token = out.join("tunnel-token");
    let first = connector(proxy_addr, &token);
    registered(&first, 2).await;

    let mut ccmd = bin();
    ccmd.args(["connect", "--tunnel-id", tunnel["id"].as_str().unwrap()])
        .args(["--edge", &cp.client_addr(), "--edge-ca-file"])
        .arg(&cp.ca_file)
        .args(["--api-url", &cp.url, "--api-ca-file"])
        .arg(&cp.ca_file)
        .args(["--listen", "127.0.0.1:0", "--connect-timeout", "30s"])
        .env("MCP_TUNNEL_CLIENT_KEY", key["key"].as_str().unwrap())
        .env("MCP_TUNNEL_API_KEY", &cp.admin_key);
    let connect = LoggedChild::spawn(ccmd);
    let line = connect
        .wait_for(Duration::from_secs(30), |l| l.contains("connect listening"))
        .await;
    let v: Value = serde_json::from_str(&line).unwrap();
    let addr: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();

    let http = HttpClient::new(None).unwrap();
    for _ in 0..3 {
        let (status, body) = through(&http, addr).await;
        assert_eq!(status, 200, "{body}");
    }

    // The connector dies without draining: every pooled session goes with it.
    let mut first = first;
    first.child.kill().await.unwrap();
    let _ = first.child.wait().await;

    // A request made now waits for the tunnel instead of failing...
    let waiting = {
        let http = HttpClient::new(None).unwrap();
        tokio::spawn(async move { through(&http, addr).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "answered with no connector registered"
    );
    // ...and is answered once a connector registers again.
    let second = connector(proxy_addr, &token);
    registered(&second, 1).await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting request was never answered")
        .unwrap();
    assert_eq!(
        status,
        200,
        "{body}\nconnect:\n{}",
        connect.lines().join("\n")
    );
    for _ in 0..3 {
        let (status, body) = through(&http, addr).await;
        assert_eq!(status, 200, "{body}");
    }
    connect
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("tunnel unreachable, retrying")
        })
        .await;
    drop(proxy);
}
