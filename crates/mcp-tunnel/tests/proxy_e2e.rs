//! The proxy end to end: our client → WebSocket → inner TLS → proxy → a real MCP server
//! (PyPI `mcp` 2.x, `testdata/mcp_server.py`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::Request;
use http_body_util::BodyExt;
use mcp_tunnel_client::mcp::SseParser;
use mcp_tunnel_testutil::mcp::McpServer;
use serde_json::json;

async fn proxy_to(mcp: &McpServer, extra: &str) -> ProxyHarness {
    ProxyHarness::start(&format!(
        "routes:\n  mcp: {}\n  full.other.example: {}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\n{extra}",
        mcp.origin(),
        mcp.origin()
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_initialize_list_and_call_over_h2_and_http1() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "").await;

    for tls in [h.tls(), h.tls().http1_only()] {
        let session = h.try_session("mcp", &tls).await.unwrap();
        let protocol = session.protocol();
        let mut mcp = mcp_tunnel_client::mcp::McpClient::new(session, "/mcp");
        let init = mcp.initialize().await.unwrap();
        assert_eq!(
            init["serverInfo"]["name"], "mcp-tunnel-test-server",
            "{protocol}"
        );
        assert!(
            mcp.session_id().is_some(),
            "Mcp-Session-Id must pass through"
        );
        let tools = mcp.list_tools().await.unwrap();
        let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        assert!(
            names.contains(&"echo") && names.contains(&"add"),
            "{names:?}"
        );
        let result = mcp
            .call_tool("add", json!({"a": 40, "b": 2}))
            .await
            .unwrap_or_else(|e| panic!("{protocol}: {e}\n{}", h.proxy.lines().join("\n")));
        assert_eq!(result["content"][0]["text"], "42", "{protocol}: {result}");
    }
    assert_eq!(h.proxy.logs_with_message("route configured").len(), 2);
    // Log lines are read from the child's stdout asynchronously: wait for the last one.
    h.proxy
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("\"request completed\"") && l.contains("\"status\":200")
        })
        .await;
    let started = h.proxy.logs_with_message("request started");
    assert!(started.iter().all(|l| l["route"] == "mcp"));
    let completed = h.proxy.logs_with_message("request completed");
    assert!(completed.iter().any(|l| l["status"] == 200
        && l["bytes"].as_u64() > Some(0)
        && l["duration"].as_str().is_some_and(|d| d.ends_with('s'))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_stream_through() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "").await;
    let mut mcp = h.mcp("mcp").await;
    mcp.initialize().await.unwrap();
    let result = mcp
        .call_tool("countdown", json!({"steps": 3, "delay_ms": 50}))
        .await
        .unwrap();
    assert_eq!(result["content"][0]["text"], "done after 3 steps");
    let progress: Vec<f64> = mcp
        .notifications
        .iter()
        .filter(|n| n["method"] == "notifications/progress")
        .filter_map(|n| n["params"]["progress"].as_f64())
        .collect();
    assert_eq!(progress, [1.0, 2.0, 3.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_at_a_time() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "").await;
    let mut session = h.session("mcp").await;
    let resp = session
        .send(
            Request::get("/ticks?n=4&interval_ms=400")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut parser = SseParser::default();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            for _ in parser.push(&data) {
                arrivals.push(Instant::now());
            }
        }
    }
    assert_eq!(arrivals.len(), 4);
    // Each event is delivered when the server sends it, not when the stream ends: the
    // gaps between arrivals reflect the server's 400 ms pauses.
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(250),
            "events were batched: gap {gap:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_rewritten_as_specified() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "").await;
    let mut session = h.session("mcp").await;
    let req = Request::get("/headers?x=1&y=%2F")
        .header("authorization", "Bearer secret-token-value")
        .header("mcp-session-id", "abc")
        .header("proxy-authorization", "Basic hop")
        .header("x-custom", "kept")
        .body(empty())
        .unwrap();
    let resp = session.send(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let hd = &v["headers"];
    assert_eq!(hd["host"], format!("127.0.0.1:{}", server.port));
    assert_eq!(hd["x-forwarded-proto"], "https");
    assert_eq!(hd["x-forwarded-host"], format!("mcp.{DOMAIN}"));
    assert_eq!(hd["authorization"], "Bearer secret-token-value");
    assert_eq!(hd["mcp-session-id"], "abc");
    assert_eq!(hd["x-custom"], "kept");
    assert!(
        hd.get("proxy-authorization").is_none(),
        "hop-by-hop header forwarded"
    );
    assert_eq!(v["query"], "x=1&y=%2F", "query must be untouched");
    let logs = h.proxy.lines().join("\n");
    assert!(
        !logs.contains("secret-token-value"),
        "Authorization value logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_host_forwards_the_route_host() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "preserve_host: true\n").await;
    let mut session = h.session("mcp").await;
    let (status, _, body) = get(&mut session, "/headers").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["headers"]["host"], format!("mcp.{DOMAIN}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_hostname_routes_and_unknown_hosts() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "").await;
    // A full-hostname key matches exactly (the server cert must cover it: it does not, so
    // check routing through a session whose SNI is a covered name instead).
    let mut session = h.session("nothere").await;
    let (status, _, body) = get(&mut session, "/").await;
    assert_eq!(status, 502);
    assert_eq!(&body[..], b"No route configured for host");
    h.proxy
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("\"message\":\"no route for host\"")
                && l.contains(&format!("\"host\":\"nothere.{DOMAIN}\""))
        })
        .await;

    // Host differing from SNI: 421.
    let mut session = h.session("mcp").await;
    let resp = session
        .send(
            Request::get("/headers")
                .header("host", format!("other.{DOMAIN}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 421);

    // Host with a port and a trailing dot, in capitals, still routes.
    let resp = session
        .send(
            Request::get("/headers")
                .header("host", format!("MCP.{}.:443", DOMAIN.to_uppercase()))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_anything_but_a_websocket_tunnel() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "").await;
    // Plain HTTP: 426.
    let (status, body) = http_get(h.addr, "/").await;
    assert_eq!(status, 426);
    assert!(body.contains("WebSocket"));
    // TLS straight at the port (no WebSocket): the handshake fails.
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(h.pki.ca_der()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(format!("mcp.{DOMAIN}")).unwrap();
    let res = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await;
    assert!(res.is_err(), "a direct TLS handshake must not succeed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rejects_a_proxy_certificate_from_another_ca() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "").await;
    let other = tempfile::tempdir().unwrap();
    let other_pki = mcp_tunnel_testutil::pki::TestPki::new(other.path(), DOMAIN);
    let tls = mcp_tunnel_client::InnerTls::trusting(&[other_pki.ca_der()]).unwrap();
    let err = h.try_session("mcp", &tls).await.unwrap_err();
    assert!(
        matches!(err, mcp_tunnel_client::ClientError::Tls(_)),
        "{err}"
    );
    h.proxy
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("tls handshake failed")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_and_metrics() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "").await;
    assert_eq!(h.admin_get("/healthz").await.0, 200);
    assert_eq!(h.admin_get("/readyz").await.0, 200);
    let mut session = h.session("mcp").await;
    get(&mut session, "/headers").await;
    get(&mut session, "/headers").await;
    let (status, text) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("mcp_proxy_requests_total{route=\"mcp\",status=\"200\"} 2"),
        "{text}"
    );
    assert!(text.contains("mcp_proxy_active_sessions 1"), "{text}");
    assert!(
        text.contains("mcp_proxy_certificate_not_after_seconds "),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_zero() {
    let server = McpServer::start().await;
    let h = proxy_to(&server, "shutdown_timeout: 10s\n").await;
    let mut session = h.session("mcp").await;
    let resp = session
        .send(
            Request::get("/ticks?n=3&interval_ms=500")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.proxy.terminate();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let events = SseParser::default().push(&body);
    assert_eq!(events.len(), 3, "the in-flight stream was cut");
    let ProxyHarness { proxy, .. } = h;
    let (code, out) = proxy.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("shutdown complete"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verified_against_upstream_ca_file() {
    // The upstream MCP server speaks TLS with a certificate for `localhost` from its own CA.
    let up = tempfile::tempdir().unwrap();
    let up_pki = mcp_tunnel_testutil::pki::TestPki::new(up.path(), "unused.test");
    let cert = mcp_tunnel_pki::generate::issue_server_cert(
        &up_pki.ca.cert_pem,
        up_pki.ca.key_pem.expose(),
        &["localhost".to_owned()],
        Duration::from_secs(86_400),
        mcp_tunnel_pki::generate::KeyKind::EcdsaP256,
    )
    .unwrap();
    let (cert_file, key_file) = (up.path().join("up.crt"), up.path().join("up.key"));
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    std::fs::write(&key_file, cert.key_pem.expose()).unwrap();
    let server = McpServer::start_tls(&cert_file, &key_file).await;
    let port = server.port;

    let h = ProxyHarness::start(&format!(
        "routes:\n  mcp: https://localhost:{port}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\", \"::1/128\"]\n  tls:\n    ca_file: {}\n",
        up_pki.ca_file.display()
    ))
    .await;
    let mut mcp = h.mcp("mcp").await;
    mcp.initialize().await.unwrap();
    let r = mcp
        .call_tool("echo", json!({"text": "over https"}))
        .await
        .unwrap();
    assert_eq!(r["content"][0]["text"], "over https");

    // Trusting a different CA: the upstream's certificate is refused, 502.
    let other = tempfile::tempdir().unwrap();
    let other_pki = mcp_tunnel_testutil::pki::TestPki::new(other.path(), "x.test");
    let h = ProxyHarness::start(&format!(
        "routes:\n  mcp: https://localhost:{port}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\", \"::1/128\"]\n  tls:\n    ca_file: {}\n",
        other_pki.ca_file.display()
    ))
    .await;
    let mut session = h.session("mcp").await;
    let (status, _, body) = get(&mut session, "/headers").await;
    assert_eq!(status, 502);
    assert_eq!(&body[..], b"Upstream TLS failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_outlives_every_proxy_timeout() {
    let server = McpServer::start().await;
    // The proxy's only timeouts are for handshakes and request headers; set them far
    // below the stream's silence.
    let h = proxy_to(&server, "limits:\n  handshake_timeout: 500ms\n").await;
    let mut session = h.session("mcp").await;
    let resp = session
        .send(
            Request::get("/ticks?n=2&interval_ms=2500")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        SseParser::default().push(&body).len(),
        2,
        "the idle stream was cut"
    );
    // And the session is still usable afterwards.
    assert_eq!(get(&mut session, "/headers").await.0, 200);
}
