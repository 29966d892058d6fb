//! The SSRF battery: upstreams that must never be dialed under the default allow-list
//! (RFC 1918 only), each refused with 502 and the exact log line, while allowed cases
//! keep working. Refusal happens before any socket is opened, so the public addresses
//! below are never contacted.

mod common;

use common::*;
use mcp_tunnel_testutil::mcp::McpServer;

/// (route, upstream, the address the refusal must name; "" = any loopback form).
const CASES: &[(&str, &str, &str)] = &[
    ("loop-num", "http://127.0.0.1:9", "127.0.0.1"),
    ("loop-other", "http://127.1.2.3:9", "127.1.2.3"),
    ("loop-name", "http://localhost:9", ""),
    ("loop-short", "http://127.1:9", "127.0.0.1"),
    ("loop-decimal", "http://2130706433:9", "127.0.0.1"),
    ("loop-hex", "http://0x7f000001:9", "127.0.0.1"),
    ("loop-hex-dotted", "http://0x7f.0.0.1:9", "127.0.0.1"),
    ("loop-octal", "http://0177.0.0.1:9", "127.0.0.1"),
    ("loop-v6", "http://[::1]:9", "::1"),
    ("mapped-loop", "http://[::ffff:127.0.0.1]:9", "127.0.0.1"),
    (
        "mapped-meta",
        "http://[::ffff:169.254.169.254]:80",
        "169.254.169.254",
    ),
    ("unspecified", "http://0.0.0.0:9", "0.0.0.0"),
    ("unspecified-v6", "http://[::]:9", "::"),
    ("zero-short", "http://0:9", "0.0.0.0"),
    ("metadata", "http://169.254.169.254:80", "169.254.169.254"),
    ("link-local", "http://169.254.0.1:80", "169.254.0.1"),
    ("link-local-v6", "http://[fe80::1]:80", "fe80::1"),
    ("cgnat-low", "http://100.64.0.1:80", "100.64.0.1"),
    ("cgnat-high", "http://100.127.255.254:80", "100.127.255.254"),
    ("multicast", "http://224.0.0.1:80", "224.0.0.1"),
    ("multicast-v6", "http://[ff02::1]:80", "ff02::1"),
    ("broadcast", "http://255.255.255.255:80", "255.255.255.255"),
    ("public-v4", "http://8.8.8.8:80", "8.8.8.8"),
    ("public-v4-b", "http://1.1.1.1:443", "1.1.1.1"),
    (
        "public-v6",
        "http://[2001:4860:4860::8888]:80",
        "2001:4860:4860::8888",
    ),
    ("ula-v6", "http://[fd00::1]:80", "fd00::1"),
    ("nat64", "http://[64:ff9b::7f00:1]:80", "64:ff9b::7f00:1"),
    ("below-172", "http://172.15.255.255:80", "172.15.255.255"),
    ("above-172", "http://172.32.0.1:80", "172.32.0.1"),
    ("above-10", "http://11.0.0.1:80", "11.0.0.1"),
    ("test-net", "http://192.0.2.1:80", "192.0.2.1"),
    ("near-192-168", "http://192.169.0.1:80", "192.169.0.1"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_allow_list_refuses_every_non_private_upstream() {
    let routes: String = CASES
        .iter()
        .map(|(name, upstream, _)| format!("  {name}: {upstream}\n"))
        .collect();
    let h = ProxyHarness::start(&format!("routes:\n{routes}")).await;
    for (name, _, ip) in CASES {
        let mut s = h.session(name).await;
        let (status, _, _) = get(&mut s, "/mcp").await;
        assert_eq!(status, 502, "{name} was not refused");
        // The refusal is logged before the 502 is sent; give the log reader a moment.
        let expected: Vec<String> = if ip.is_empty() {
            vec!["127.0.0.1".into(), "::1".into()]
        } else {
            vec![(*ip).to_owned()]
        };
        h.proxy
            .wait_for(std::time::Duration::from_secs(5), |l| {
                l.contains(&format!("\"route\":\"{name}\""))
                    && expected.iter().any(|ip| {
                        l.contains(&format!(
                            "\"message\":\"IP validation failed: {ip} is not a private address\""
                        ))
                    })
            })
            .await;
    }
    let (_, metrics) = h.admin_get("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("mcp_proxy_ip_validation_rejections_total"))
        .unwrap();
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= CASES.len() as u64, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_addresses_still_work_in_any_spelling() {
    let server = McpServer::start().await;
    let port = server.port;
    let h = ProxyHarness::start(&format!(
        "routes:\n  num: http://127.0.0.1:{port}\n  name: http://localhost:{port}\n  dec: http://2130706433:{port}\n  mapped: http://[::ffff:127.0.0.1]:{port}\nupstream:\n  allowed_ips: [\"127.0.0.0/8\"]\n"
    ))
    .await;
    for route in ["num", "name", "dec", "mapped"] {
        let mut s = h.session(route).await;
        let (status, _, body) = get(&mut s, "/headers").await;
        assert_eq!(status, 200, "{route}: {}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_admits_only_what_it_lists() {
    let server = McpServer::start().await;
    let port = server.port;
    // 127.0.0.2 is loopback too, but only 127.0.0.1 is listed.
    let h = ProxyHarness::start(&format!(
        "routes:\n  ok: http://127.0.0.1:{port}\n  other: http://127.0.0.2:{port}\nupstream:\n  allowed_ips: [\"127.0.0.1\"]\n"
    ))
    .await;
    let mut s = h.session("ok").await;
    assert_eq!(get(&mut s, "/headers").await.0, 200);
    let mut s = h.session("other").await;
    assert_eq!(get(&mut s, "/headers").await.0, 502);
    h.proxy
        .wait_for(std::time::Duration::from_secs(5), |l| {
            l.contains("IP validation failed: 127.0.0.2 is not a private address")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_ip_validation_admits_loopback() {
    let server = McpServer::start().await;
    let h = ProxyHarness::start(&format!(
        "routes:\n  mcp: {}\nupstream:\n  disable_ip_validation: true\n",
        server.origin()
    ))
    .await;
    let mut s = h.session("mcp").await;
    assert_eq!(get(&mut s, "/headers").await.0, 200);
}
