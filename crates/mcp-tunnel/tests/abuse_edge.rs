//! Bad input at the edge's client listener (issue 9), through the whole data path as real
//! processes (`mcp-tunnel edge`, `connector run`, `proxy`): TLS garbage, slowloris before
//! and after the TLS handshake, oversized headers, missing and garbage client keys,
//! malformed WebSocket frames relayed to the proxy, `X-Forwarded-For` (read only from a
//! `--trusted-proxy`); and garbage at the edge's and the connector's health listeners.
//! A session opened before each abuse keeps working.
//!
//! The edge's client deadline (`client_header_timeout`, TLS handshake plus request head)
//! is 10s and not a flag, so the slowloris test waits it out once, for three clients at
//! a time. (The connector listener's pre-auth abuse is in crates/connector/tests.)

mod abuse_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use abuse_support::*;
use mcp_tunnel_client::Session;
use mcp_tunnel_testutil::free_port;
use mcp_tunnel_testutil::harness::{bin, get, http_get, route_host};
use mcp_tunnel_testutil::logs::LoggedChild;
use mcp_tunnel_testutil::stack::{CLIENT_KEY, EDGE_NAME, Stack};
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The edge's default `client_header_timeout`.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);
const HANG: Duration = Duration::from_secs(40);
/// hyper's request-head buffer on the client listener.
const EDGE_HEAD_LIMIT: usize = 64 * 1024;

struct Fixture {
    upstream: Recorder,
    stack: Stack,
    live: Session,
}

impl Fixture {
    async fn start() -> Self {
        let upstream = Recorder::start().await;
        let stack = Stack::start(&upstream.origin(), &[], 1).await;
        let live = stack.session("mcp").await.unwrap();
        let mut fx = Self {
            upstream,
            stack,
            live,
        };
        fx.still_serves().await;
        fx
    }

    async fn still_serves(&mut self) {
        let (status, _, body) = get(&mut self.live, "/alive").await;
        assert_eq!((status, &body[..]), (200, &b"ok /alive"[..]));
        let mut fresh = self.stack.session("mcp").await.unwrap();
        assert_eq!(get(&mut fresh, "/alive-new").await.0, 200);
    }

    /// Outer TLS to the client listener, as a client would open it.
    async fn outer_tls(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.stack.edge_client_addr)
            .await
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.stack.edge_ca.cert_der.clone().into())
            .unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(EDGE_NAME).unwrap(), tcp)
            .await
            .unwrap()
    }

    async fn edge_metric_line(&self, needle: &str) -> f64 {
        let (_, text) = http_get(self.stack.edge_admin_addr, "/metrics").await;
        text.lines()
            .filter(|l| l.starts_with("mcpt_edge_client_requests_total") && l.contains(needle))
            .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .unwrap_or(0.0)
    }
}

/// The JSON body of a response read to its end.
fn json_body(ended: &Ended) -> serde_json::Value {
    let text = ended.text();
    let (_, body) = text.split_once("\r\n\r\n").expect("a response");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_garbage_at_the_client_listener_is_dropped() {
    let mut fx = Fixture::start().await;
    let before = fx.edge_metric_line("tls_error").await;
    let cases: [(&str, &[u8]); 3] = [
        ("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "TLS record of garbage",
            b"\x16\x03\x01\x00\x10\xde\xad\xbe\xef\xde\xad\xbe\xef\xde\xad\xbe\xef\xde\xad\xbe\xef",
        ),
        ("binary noise", &[0xff; 600]),
    ];
    for (what, bytes) in cases {
        let mut tcp = TcpStream::connect(fx.stack.edge_client_addr).await.unwrap();
        let started = Instant::now();
        tcp.write_all(bytes).await.unwrap();
        let ended = read_to_close(&mut tcp, started, HANG).await;
        assert_cut_off(what, &ended, Duration::from_secs(5));
        assert!(
            !ended.text().contains("HTTP/1.1 200"),
            "{what}: {}",
            ended.text()
        );
        fx.still_serves().await;
    }
    assert!(fx.edge_metric_line("tls_error").await >= before + 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_before_and_after_the_tls_handshake_is_cut_off() {
    let mut fx = Fixture::start().await;
    let mut silent = TcpStream::connect(fx.stack.edge_client_addr).await.unwrap();
    let mut hello_dribbler = TcpStream::connect(fx.stack.edge_client_addr).await.unwrap();
    let mut head_dribbler = fx.outer_tls().await;
    let upgrade = upgrade_request(
        &route_host("mcp"),
        &format!("Authorization: Bearer {CLIENT_KEY}\r\n"),
    );
    let hello: Vec<u8> = [0x16, 0x03, 0x01, 0x02, 0x00]
        .into_iter()
        .chain(std::iter::repeat_n(0x01, 512))
        .collect();
    let started = Instant::now();
    let (quiet, dribbled_hello, dribbled_head, ()) = tokio::join!(
        read_to_close(&mut silent, started, HANG),
        dribble(
            &mut hello_dribbler,
            &hello,
            Duration::from_millis(500),
            HANG
        ),
        dribble(
            &mut head_dribbler,
            upgrade.as_bytes(),
            Duration::from_millis(500),
            HANG
        ),
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            fx.still_serves().await;
        },
    );
    for (what, ended) in [
        ("silent before TLS", &quiet),
        ("dribbled ClientHello", &dribbled_hello),
        ("dribbled upgrade request after TLS", &dribbled_head),
    ] {
        assert_cut_at_deadline(what, ended, CLIENT_DEADLINE);
    }
    fx.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_upgrade_request_headers_get_431() {
    let mut fx = Fixture::start().await;
    let mut tls = fx.outer_tls().await;
    let started = Instant::now();
    let big = oversized_header(EDGE_HEAD_LIMIT);
    tls.write_all(
        upgrade_request(
            &route_host("mcp"),
            &format!("Authorization: Bearer {CLIENT_KEY}\r\n{big}"),
        )
        .as_bytes(),
    )
    .await
    .ok();
    let ended = read_to_close(&mut tls, started, HANG).await;
    assert_cut_off("oversized upgrade request", &ended, Duration::from_secs(5));
    assert_eq!(ended.status(), Some(431), "{}", ended.text());
    fx.still_serves().await;
    assert!(fx.upstream.paths().iter().all(|p| p.starts_with("/alive")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_garbage_client_keys_are_refused_distinctly() {
    let mut fx = Fixture::start().await;
    let long = "k".repeat(600);
    // (what, Authorization line or none, expected status, expected code)
    let cases: [(&str, Option<String>, u16, &str); 6] = [
        ("no Authorization", None, 401, "missing_key"),
        (
            "garbage key",
            Some("Bearer ck_not_a_real_key".into()),
            401,
            "bad_key",
        ),
        ("empty bearer", Some("Bearer ".into()), 401, "missing_key"),
        (
            "other scheme",
            Some(format!("Basic {CLIENT_KEY}")),
            401,
            "missing_key",
        ),
        (
            "overlong key",
            Some(format!("Bearer {long}")),
            401,
            "missing_key",
        ),
        (
            // obs-text passes the HTTP parser but is no header string: no key at all.
            "key with non-ASCII bytes",
            Some("Bearer ck_\u{ff}\u{fe}x".into()),
            401,
            "missing_key",
        ),
    ];
    for (what, auth, status, code) in cases {
        let mut tls = fx.outer_tls().await;
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n",
            route_host("mcp")
        );
        let started = Instant::now();
        tls.write_all(request.as_bytes()).await.unwrap();
        let ended = read_to_close(&mut tls, started, HANG).await;
        assert_cut_off(what, &ended, Duration::from_secs(5));
        // A bad request line in hyper would be a 400 without our JSON: require ours.
        if ended.status() == Some(400) {
            panic!(
                "{what}: refused by the parser, not the edge: {}",
                ended.text()
            );
        }
        assert_eq!(ended.status(), Some(status), "{what}: {}", ended.text());
        let body = json_body(&ended);
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert_eq!(body["error"]["type"], "authentication_error", "{what}");
        fx.still_serves().await;
    }
    let leaked: Vec<String> = fx
        .stack
        .edge
        .lines()
        .into_iter()
        .filter(|l| l.contains("ck_not_a_real_key") || l.contains(CLIENT_KEY))
        .collect();
    assert!(leaked.is_empty(), "client keys in edge logs: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_websocket_frames_through_the_edge_end_only_that_session() {
    let mut fx = Fixture::start().await;
    for (what, bytes) in [
        ("unmasked frame", frame(0x82, b"not masked", false)),
        ("text frame", masked_frame(0x1, b"text")),
        ("reserved bits", frame(0x80 | 0x20 | 0x2, b"rsv2", true)),
    ] {
        let mut tls = fx.outer_tls().await;
        tls.write_all(
            upgrade_request(
                &route_host("mcp"),
                &format!("Authorization: Bearer {CLIENT_KEY}\r\n"),
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let head = read_head(&mut tls).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{what}: {head}");
        let started = Instant::now();
        tls.write_all(&bytes).await.unwrap();
        let ended = read_to_close(&mut tls, started, HANG).await;
        assert_cut_off(what, &ended, Duration::from_secs(10));
        fx.still_serves().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_listeners_of_edge_and_connector_answer_under_slowloris_and_garbage() {
    let mut fx = Fixture::start().await;
    // A second connector with its metrics listener on, on the same tunnel.
    let port = free_port();
    let mut cmd = bin();
    cmd.args(["connector", "run", "--url"])
        .arg(format!("http://{}", fx.stack.proxy.addr))
        .args(["--ha-connections", "1", "--metrics"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--token-file")
        .arg(&fx.stack.token_file);
    let connector = LoggedChild::spawn(cmd);
    connector
        .wait_for(Duration::from_secs(20), |l| {
            l.contains("Registered tunnel connection")
        })
        .await;
    let connector_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    for (addr, path) in [
        (fx.stack.edge_admin_addr, "/healthz"),
        (connector_addr, "/ready"),
    ] {
        let held = hold_bad_connections(addr, 48).await;
        let started = Instant::now();
        let (status, _) = http_get(addr, path).await;
        assert_eq!(status, 200, "{addr}{path}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        tcp.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\n{}\r\n",
                oversized_header(512 * 1024)
            )
            .as_bytes(),
        )
        .await
        .ok();
        let ended = read_to_close(&mut tcp, started, HANG).await;
        assert_cut_off("oversized health request", &ended, Duration::from_secs(5));
        assert_eq!(http_get(addr, path).await.0, 200, "{addr}{path}");
        drop(held);
    }
    fx.still_serves().await;
}

/// The status of an upgrade request with a wrong client key and this `X-Forwarded-For`.
async fn bad_key_status(fx: &Fixture, forwarded_for: &str) -> u16 {
    let mut tls = fx.outer_tls().await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ck_not_a_real_key\r\nX-Forwarded-For: {forwarded_for}\r\n\r\n",
        route_host("mcp")
    );
    let started = Instant::now();
    tls.write_all(request.as_bytes()).await.unwrap();
    let ended = read_to_close(&mut tls, started, HANG).await;
    ended
        .status()
        .unwrap_or_else(|| panic!("no answer: {}", ended.text()))
}

/// The edge's failed client-key limit per source and minute (`client_auth_failures`).
const KEY_FAILURES: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    // 127.0.0.1 is a trusted proxy: each client it names has its own budget.
    let upstream = Recorder::start().await;
    let stack = Stack::start(&upstream.origin(), &["--trusted-proxy", "127.0.0.0/8"], 1).await;
    let live = stack.session("mcp").await.unwrap();
    let mut fx = Fixture {
        upstream,
        stack,
        live,
    };
    for _ in 0..KEY_FAILURES {
        assert_eq!(bad_key_status(&fx, "198.51.100.1").await, 401);
    }
    assert_eq!(bad_key_status(&fx, "198.51.100.1").await, 429);
    // A client cannot pass as another by writing the header itself: only the proxy's
    // (rightmost) entry counts.
    assert_eq!(bad_key_status(&fx, "198.51.100.2, 198.51.100.1").await, 429);
    assert_eq!(bad_key_status(&fx, "198.51.100.2").await, 401);
    // The proxy's own sessions (no header) are not held by its clients' failures.
    fx.still_serves().await;

    // Without --trusted-proxy the header changes nothing: the peer is the client.
    let fx = Fixture::start().await;
    for i in 0..KEY_FAILURES {
        let xff = format!("198.51.100.{}", i + 1);
        assert_eq!(bad_key_status(&fx, &xff).await, 401);
    }
    assert_eq!(
        bad_key_status(&fx, "203.0.113.77").await,
        429,
        "a fresh X-Forwarded-For escaped the limit"
    );
}

/// A TCP connection to `addr` from 127.0.0.2, the test's stand-in for an L4 balancer.
async fn from_balancer(addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A PROXY protocol v2 header for a TCP/IPv4 client.
fn proxy_v2(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&source);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_from_a_balancer_names_the_client_and_is_required_of_it() {
    let upstream = Recorder::start().await;
    let stack = Stack::start(
        &upstream.origin(),
        &["--proxy-protocol-from", "127.0.0.2"],
        1,
    )
    .await;
    let live = stack.session("mcp").await.unwrap();
    let mut fx = Fixture {
        upstream,
        stack,
        live,
    };
    let addr = fx.stack.edge_client_addr;
    let roots = vec![fx.stack.edge_ca.cert_der.clone().into()];
    // One bad-key upgrade through the "balancer", for a client it names; the status.
    let through = |header: Vec<u8>| {
        let roots = roots.clone();
        async move {
            let mut tcp = from_balancer(addr).await;
            tcp.write_all(&header).await.unwrap();
            let mut tls = tls_http1(tcp, roots, EDGE_NAME).await;
            let request = format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ck_not_a_real_key\r\n\r\n",
                route_host("mcp")
            );
            let started = Instant::now();
            tls.write_all(request.as_bytes()).await.unwrap();
            read_to_close(&mut tls, started, HANG).await.status()
        }
    };
    // Each client the header names has its own budget of failed keys.
    for _ in 0..KEY_FAILURES {
        assert_eq!(through(proxy_v2([198, 51, 100, 1], 40000)).await, Some(401));
    }
    assert_eq!(through(proxy_v2([198, 51, 100, 1], 40001)).await, Some(429));
    assert_eq!(
        through(b"PROXY TCP4 198.51.100.1 127.0.0.1 1 443\r\n".to_vec()).await,
        Some(429),
        "version 1 too"
    );
    assert_eq!(through(proxy_v2([198, 51, 100, 2], 40000)).await, Some(401));

    // From the balancer, a connection without a header (or a broken one) is dropped
    // before TLS.
    for bad in [
        &b""[..],
        b"PROXY TCP4 nope\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x31\x00\x00",
    ] {
        let mut tcp = from_balancer(addr).await;
        tcp.write_all(bad).await.unwrap();
        let roots = vec![fx.stack.edge_ca.cert_der.clone().into()];
        let tls = tokio::time::timeout(
            Duration::from_secs(15),
            try_tls_http1(tcp, roots, EDGE_NAME),
        )
        .await;
        assert!(matches!(tls, Ok(Err(_))), "{bad:?}: {tls:?}");
    }
    // Anyone else (the connector, direct clients on 127.0.0.1) is read as before; and a
    // PROXY header from them is just bytes that are not TLS.
    fx.still_serves().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&proxy_v2([203, 0, 113, 9], 1)).await.unwrap();
    let roots = vec![fx.stack.edge_ca.cert_der.clone().into()];
    let tls = tokio::time::timeout(
        Duration::from_secs(15),
        try_tls_http1(tcp, roots, EDGE_NAME),
    )
    .await;
    assert!(
        matches!(tls, Ok(Err(_))),
        "a PROXY header from a non-balancer was honoured: {tls:?}"
    );
    fx.still_serves().await;
}
