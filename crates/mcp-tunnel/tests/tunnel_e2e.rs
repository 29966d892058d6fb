//! The whole data path, as a user runs it: a client reaches a private MCP server (PyPI
//! `mcp`) through the edge, the connector and the proxy, with inner TLS end to end.

mod common;

use std::time::{Duration, Instant};

use common::stack::{CLIENT_KEY, Stack};
use common::*;
use http::Request;
use http_body_util::BodyExt;
use mcp_tunnel_client::mcp::SseParser;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_call_through_edge_connector_and_proxy() {
    let mcp_server = mcp_tunnel_testutil::mcp::McpServer::start().await;
    let stack = Stack::start(&mcp_server.origin(), &[], 4).await;
    let mut mcp = stack.mcp().await;
    let init = mcp.initialize().await.unwrap();
    assert_eq!(init["serverInfo"]["name"], "mcp-tunnel-test-server");
    let tools = mcp.list_tools().await.unwrap();
    assert!(tools.iter().any(|t| t["name"] == "add"));
    let r = mcp
        .call_tool("add", json!({"a": 20, "b": 22}))
        .await
        .unwrap();
    assert_eq!(r["content"][0]["text"], "42");
    let r = mcp
        .call_tool("countdown", json!({"steps": 2, "delay_ms": 20}))
        .await
        .unwrap();
    assert_eq!(r["content"][0]["text"], "done after 2 steps");

    // The edge relayed ciphertext only: nothing the MCP server said appears in its logs.
    let edge_logs = stack.edge.lines().join("\n");
    assert!(!edge_logs.contains("mcp-tunnel-test-server"));
    assert!(
        !edge_logs.contains(CLIENT_KEY),
        "client key logged by the edge"
    );
    let connector_logs = stack.connector.lines().join("\n");
    assert!(!connector_logs.contains("mcp-tunnel-test-server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_sse_stream_outlives_every_timeout_on_the_path() {
    // The edge's handshake deadline is the shortest timer configurable on the path;
    // the stream stays silent for several times longer.
    let mcp_server = mcp_tunnel_testutil::mcp::McpServer::start().await;
    let stack = Stack::start(&mcp_server.origin(), &["--handshake-timeout", "500ms"], 2).await;
    let mut session = stack.session("mcp").await.unwrap();
    let resp = session
        .send(
            Request::get("/ticks?n=3&interval_ms=2000")
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
        if let Ok(d) = frame.unwrap().into_data() {
            for _ in parser.push(&d) {
                arrivals.push(Instant::now());
            }
        }
    }
    assert_eq!(arrivals.len(), 3, "the quiet stream was cut");
    for w in arrivals.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(1500),
            "events were batched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_distinct_and_clear() {
    let mcp_server = mcp_tunnel_testutil::mcp::McpServer::start().await;
    let stack = Stack::start(&mcp_server.origin(), &[], 1).await;
    // A wrong client key.
    let err = stack
        .dialer("ck_wrong_key_000000000000000000000000000")
        .open(&route_host("mcp"), &stack.proxy.tls())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            mcp_tunnel_client::ClientError::Refused { status: 401, .. }
        ),
        "{err}"
    );
    // An unknown tunnel domain.
    let err = stack
        .dialer(CLIENT_KEY)
        .open("mcp.zzzz9999.tunnel.test", &stack.proxy.tls())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            mcp_tunnel_client::ClientError::Refused { status: 404, .. }
        ),
        "{err}"
    );
    // The inner certificate is still checked end to end: a client trusting another CA
    // refuses the proxy even though the edge accepted the session.
    let other = tempfile::tempdir().unwrap();
    let other_pki = mcp_tunnel_testutil::pki::TestPki::new(other.path(), DOMAIN);
    let tls = mcp_tunnel_client::InnerTls::trusting(&[other_pki.ca_der()]).unwrap();
    let err = stack
        .dialer(CLIENT_KEY)
        .open(&route_host("mcp"), &tls)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("proxy certificate refused"),
        "{err}"
    );
    // With the connector gone, the edge says so.
    stack.connector.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut refused = None;
    for _ in 0..50 {
        match stack.session("mcp").await {
            Err(e @ mcp_tunnel_client::ClientError::Refused { .. }) => {
                refused = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let err = refused.expect("edge kept accepting sessions without a connector");
    assert!(
        matches!(
            err,
            mcp_tunnel_client::ClientError::Refused { status: 503, .. }
        ),
        "{err}"
    );
}
