//! `mcp-tunnel connect` with a real MCP client (PyPI `mcp` 2.x, `streamable_http_client`)
//! in front and a real MCP server (PyPI `mcp`) behind the whole path: initialize,
//! tools/list, tools/call and a stream of progress notifications, through connect →
//! edge → connector → proxy. The operator and customer sides come from `quickstart
//! --upstream`, so this also checks that a user's own server can be tunneled that way.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mcp_tunnel_control::client::{ApiClient, Method};
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_testutil::harness::bin;
use mcp_tunnel_testutil::logs::LoggedChild;
use mcp_tunnel_testutil::mcp::McpServer;
use serde_json::Value;

const CLIENT: &str = r#"
import json, sys
import anyio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url):
    progress = []
    async def on_progress(done, total, message):
        progress.append([done, total, message])
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            tools = await s.list_tools()
            added = await s.call_tool("add", {"a": 20, "b": 22})
            counted = await s.call_tool("countdown", {"steps": 3, "delay_ms": 100},
                                        progress_callback=on_progress)
            # A second session's worth of traffic over the same pooled tunnel sessions.
            echoed = await s.call_tool("echo", {"text": "through connect"})
    print(json.dumps({
        "server": init.server_info.name,
        "tools": sorted(t.name for t in tools.tools),
        "add": added.content[0].text,
        "countdown": counted.content[0].text,
        "echo": echoed.content[0].text,
        "progress": progress,
    }))

anyio.run(main, sys.argv[1])
"#;

/// Stops a child with SIGINT (what Ctrl-C sends) so it can stop its own children.
struct Interrupt(LoggedChild);

impl Drop for Interrupt {
    fn drop(&mut self) {
        if let Some(pid) = self.0.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}"))
}

async fn start_connect(state: &Value, dir: &Path) -> (LoggedChild, SocketAddr) {
    let key = |f: &str| {
        std::fs::read_to_string(s(state, f))
            .unwrap()
            .trim()
            .to_owned()
    };
    let mut cmd = bin();
    cmd.args(["connect", "--tunnel-id", s(state, "tunnel_id")])
        .args(["--edge", s(state, "edge_clients")])
        .args(["--edge-ca-file", s(state, "edge_ca_file")])
        .args(["--api-url", s(state, "api_url")])
        .args(["--api-ca-file", s(state, "api_ca_file")])
        .args(["--listen", "127.0.0.1:0", "--refresh-interval", "1s"])
        .env("MCP_TUNNEL_CLIENT_KEY", key("client_key_file"))
        .env("MCP_TUNNEL_API_KEY", key("reader_key_file"))
        .current_dir(dir);
    let connect = LoggedChild::spawn(cmd);
    let line = connect
        .wait_for(Duration::from_secs(30), |l| {
            l.contains("\"connect listening\"")
        })
        .await;
    let v: Value = serde_json::from_str(&line).unwrap();
    let addr = s(&v, "addr").parse().unwrap();
    (connect, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_sdk_client_works_through_connect() {
    let server = McpServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let mut cmd = bin();
    cmd.args(["quickstart", "--dir"])
        .arg(&dir)
        .args(["--upstream", &server.origin()]);
    let quickstart = Interrupt(LoggedChild::spawn(cmd));
    quickstart
        .0
        .wait_for(Duration::from_secs(120), |l| l.contains("Press Ctrl-C"))
        .await;
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("quickstart.json")).unwrap())
            .unwrap();
    let (connect, addr) = start_connect(&state, tmp.path()).await;

    let script = tmp.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(mcp_tunnel_testutil::python())
            .arg(&script)
            .arg(format!("http://{addr}/mcp"))
            .output(),
    )
    .await
    .expect("the MCP client timed out")
    .unwrap();
    assert!(
        out.status.success(),
        "client failed:\n{}\nconnect:\n{}",
        String::from_utf8_lossy(&out.stderr),
        connect.lines().join("\n")
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["server"], "mcp-tunnel-test-server");
    assert_eq!(r["tools"], serde_json::json!(["add", "countdown", "echo"]));
    assert_eq!(r["add"], "42");
    assert_eq!(r["countdown"], "done after 3 steps");
    assert_eq!(r["echo"], "through connect");
    let progress = r["progress"].as_array().unwrap();
    assert_eq!(progress.len(), 3, "{progress:?}");
    assert_eq!(progress[2][0], 3.0);
    assert_eq!(progress[2][2], "step 3");

    // The proxy's CA is archived (a second CA keeps the tunnel active): once connect
    // has re-read the registered CAs, it refuses the proxy, naming the rule.
    let admin = ApiClient::new(
        s(&state, "api_url"),
        Secret::new(
            std::fs::read_to_string(s(&state, "admin_key_file"))
                .unwrap()
                .trim(),
        ),
        Some(Path::new(s(&state, "api_ca_file"))),
        None,
    )
    .unwrap();
    let tunnel = s(&state, "tunnel_id");
    let certs = admin
        .call(
            Method::GET,
            &format!("/v1/tunnels/{tunnel}/certificates"),
            None,
        )
        .await
        .unwrap();
    let old = certs["data"][0]["id"].as_str().unwrap().to_owned();
    let other =
        mcp_tunnel_pki::generate::generate_ca("second CA", Duration::from_secs(86_400)).unwrap();
    admin
        .call(
            Method::POST,
            &format!("/v1/tunnels/{tunnel}/certificates"),
            Some(serde_json::json!({"ca_certificate_pem": other.cert_pem})),
        )
        .await
        .unwrap();
    admin
        .call(
            Method::POST,
            &format!("/v1/tunnels/{tunnel}/certificates/{old}/archive"),
            None,
        )
        .await
        .unwrap();
    connect
        .wait_for(Duration::from_secs(10), |l| {
            l.contains("the tunnel's CA certificates changed")
        })
        .await;
    let http = mcp_tunnel_control::http_client::HttpClient::new(None).unwrap();
    let resp = http
        .send(
            Method::POST,
            &format!("http://{addr}/mcp"),
            &[("accept", "application/json, text/event-stream".to_owned())],
            Some(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec()),
        )
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&resp.body);
    assert_eq!(resp.status.as_u16(), 502, "{body}");
    assert!(body.contains("proxy certificate refused"), "{body}");
    drop(connect);
    drop(quickstart);
}
