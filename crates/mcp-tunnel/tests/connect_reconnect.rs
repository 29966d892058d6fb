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

/// A whole tunnel for connect: `server`, a proxy in front of a PyPI `mcp` server, a
/// connector with two links, and connect listening on loopback.
struct Stack {
    cp: ControlPlane,
    _server: McpServer,
    proxy: LoggedChild,
    proxy_addr: SocketAddr,
    /// The proxy's admin listener (`/metrics`).
    admin: SocketAddr,
    token: std::path::PathBuf,
    connector: LoggedChild,
    connect: LoggedChild,
    /// connect's local endpoint.
    addr: SocketAddr,
}

async fn stack(connect_timeout: &str) -> Stack {
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
            "listen_addr: \"127.0.0.1:0\"\nadmin_addr: \"127.0.0.1:0\"\ntunnel_domain: {domain}\ntls:\n  cert_file: {o}/tls.crt\n  key_file: {o}/tls.key\nroutes:\n  mcp: {up}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\n",
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
    let admin: SocketAddr = v["admin_addr"]
        .as_str()
        .and_then(|a| a.strip_prefix("Some(")?.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no admin address in {line}"))
        .parse()
        .unwrap();

    let token = out.join("tunnel-token");
    let connector = connector(proxy_addr, &token);
    registered(&connector, 2).await;

    let mut ccmd = bin();
    ccmd.args(["connect", "--tunnel-id", tunnel["id"].as_str().unwrap()])
        .args(["--edge", &cp.client_addr(), "--edge-ca-file"])
        .arg(&cp.ca_file)
        .args(["--api-url", &cp.url, "--api-ca-file"])
        .arg(&cp.ca_file)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--connect-timeout",
            connect_timeout,
        ])
        .args(["--streams-per-session", "8"])
        .env("MCP_TUNNEL_CLIENT_KEY", key["key"].as_str().unwrap())
        .env("MCP_TUNNEL_API_KEY", &cp.admin_key);
    let connect = LoggedChild::spawn(ccmd);
    let line = connect
        .wait_for(Duration::from_secs(30), |l| l.contains("connect listening"))
        .await;
    let v: Value = serde_json::from_str(&line).unwrap();
    let addr: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
    Stack {
        cp,
        _server: server,
        proxy,
        proxy_addr,
        admin,
        token,
        connector,
        connect,
        addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_survives_the_connector_dying_and_coming_back() {
    let Stack {
        cp: _cp,
        _server,
        proxy,
        proxy_addr,
        token,
        connector: first,
        connect,
        addr,
        ..
    } = stack("30s").await;
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

/// Reads an SSE response through connect to its end; returns the events' ids.
async fn ticks(addr: SocketAddr, n: usize) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ticks?n={n}&interval_ms=700 HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(str::to_owned)
        .collect()
}

async fn proxy_sessions(admin: SocketAddr) -> u64 {
    let http = HttpClient::new(None).unwrap();
    let resp = http
        .send(Method::GET, &format!("http://{admin}/metrics"), &[], None)
        .await
        .unwrap();
    String::from_utf8_lossy(&resp.body)
        .lines()
        .find_map(|l| l.strip_prefix("mcp_proxy_active_sessions "))
        .unwrap_or_else(|| panic!("no mcp_proxy_active_sessions"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_share_h2_sessions() {
    let st = stack("30s").await;
    // 20 SSE streams at once, from a cold pool, with 8 streams per session: 3 sessions.
    let streams: Vec<_> = (0..20).map(|_| tokio::spawn(ticks(st.addr, 4))).collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let during = proxy_sessions(st.admin).await;
    for s in streams {
        assert_eq!(s.await.unwrap(), ["0", "1", "2", "3"]);
    }
    assert_eq!(
        during,
        3,
        "inner sessions at the proxy while 20 streams were open\nconnect:\n{}",
        st.connect.lines().join("\n")
    );
    // Later requests reuse them rather than opening more.
    let http = HttpClient::new(None).unwrap();
    for _ in 0..5 {
        let (status, body) = through(&http, st.addr).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(proxy_sessions(st.admin).await <= 3);
    drop(st.proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_while_the_tunnel_is_down_share_one_timeout() {
    let Stack {
        cp: _cp,
        _server,
        proxy,
        connector,
        connect,
        addr,
        ..
    } = stack("2s").await;
    let mut connector = connector;
    connector.child.kill().await.unwrap();
    let _ = connector.child.wait().await;
    // Six requests at once, none with a session to reuse: they queue behind one open.
    let started = Instant::now();
    let answers: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(async move {
                let http = HttpClient::new(None).unwrap();
                through(&http, addr).await
            })
        })
        .collect();
    for a in answers {
        let (status, body) = a.await.unwrap();
        assert!(status >= 500, "{status} {body}");
    }
    // Each waits at most its own 2 s, not 2 s per request ahead of it (12 s).
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "six requests took {:?}\nconnect:\n{}",
        started.elapsed(),
        connect.lines().join("\n")
    );
    drop(proxy);
}
