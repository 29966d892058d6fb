//! Bad input at the proxy's listener (issue 9), against the real `mcp-tunnel proxy`
//! process: slowloris in each phase, oversized headers, malformed WebSocket frames, TLS
//! garbage, and request smuggling on inner HTTP/1.1. Each abuse must end in a bounded,
//! clear failure, and a session opened before it keeps working during and after it.
//!
//! The upstream is an in-process hyper server that records every request it is handed,
//! so "never forwarded" is observed where it matters, not inferred from the proxy's
//! answer. `limits.handshake_timeout` is 1s and `limits.max_header_bytes` 8 KiB here;
//! bounds are asserted with wide margins (a hang would blow through them, jitter will not).

mod abuse_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use abuse_support::*;
use http::Request;
use mcp_tunnel_client::Session;
use mcp_tunnel_net::ws::WsByteStream;
use mcp_tunnel_testutil::harness::{ProxyHarness, empty, get, route_host};
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_HEADER_BYTES: usize = 8192;
/// Far beyond every bound under test: reaching it means the proxy never hung up.
const HANG: Duration = Duration::from_secs(15);
const SECRET: &str = "sk-abuse-secret";
const HANDSHAKE_FAILURES: &str = "mcp_proxy_tls_handshake_failures_total";

struct Fixture {
    upstream: Recorder,
    h: ProxyHarness,
    /// Opened before any abuse; must keep working throughout.
    live: Session,
}

impl Fixture {
    async fn start() -> Self {
        let upstream = Recorder::start().await;
        let h = ProxyHarness::start(&format!(
            "routes:\n  mcp: {}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\nlimits:\n  handshake_timeout: 1s\n  max_header_bytes: {MAX_HEADER_BYTES}\n  max_body_bytes: {MAX_BODY_BYTES}\n",
            upstream.origin()
        ))
        .await;
        let live = h.session("mcp").await;
        let mut fx = Self { upstream, h, live };
        fx.still_serves().await;
        fx
    }

    /// The session from before the abuse answers, and a new one can be opened.
    async fn still_serves(&mut self) {
        let (status, _, body) = get(&mut self.live, "/alive").await;
        assert_eq!((status, &body[..]), (200, &b"ok /alive"[..]));
        let mut fresh = self.h.session("mcp").await;
        let (status, _, _) = get(&mut fresh, "/alive-new").await;
        assert_eq!(status, 200);
    }

    async fn handshake_failures(&self) -> f64 {
        let (status, text) = self.h.admin_get("/metrics").await;
        assert_eq!(status, 200);
        metric(&text, HANDSHAKE_FAILURES)
    }

    /// Nothing the abusive clients sent as a credential or payload reaches the logs.
    fn assert_logs_hold_no_secret(&self) {
        let leaked: Vec<String> = self
            .h
            .proxy
            .lines()
            .into_iter()
            .filter(|l| l.contains(SECRET))
            .collect();
        assert!(leaked.is_empty(), "secret in proxy logs: {leaked:?}");
    }

    /// Inner TLS (ALPN http/1.1 only) to the `mcp` route over a fresh WebSocket: a raw
    /// byte stream to write hand-made HTTP/1.1 into.
    async fn inner_http1(&self) -> TlsStream<WsByteStream<TcpStream>> {
        let tcp = TcpStream::connect(self.h.addr).await.unwrap();
        let ws = mcp_tunnel_net::ws::client_handshake(tcp, &self.h.addr.to_string(), "/", &[])
            .await
            .unwrap();
        tls_http1(ws, vec![self.h.pki.ca_der()], &route_host("mcp")).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_upgrade_request_is_cut_off_by_the_handshake_timeout() {
    let mut fx = Fixture::start().await;
    let request = upgrade_request(&fx.h.addr.to_string(), "");
    let mut dribbler = TcpStream::connect(fx.h.addr).await.unwrap();
    let mut silent = TcpStream::connect(fx.h.addr).await.unwrap();
    let started = Instant::now();
    let (dribbled, quiet, ()) = tokio::join!(
        dribble(
            &mut dribbler,
            request.as_bytes(),
            Duration::from_millis(200),
            HANG
        ),
        read_to_close(&mut silent, started, HANG),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            fx.still_serves().await;
        },
    );
    // hyper's header_read_timeout, set to limits.handshake_timeout: 1s. Not before it
    // (the dribbled bytes are valid so far), and well before a hang.
    for (what, ended) in [("dribbled upgrade", &dribbled), ("silent client", &quiet)] {
        assert_cut_off(what, ended, 10 * HANDSHAKE_TIMEOUT);
        assert!(
            ended.after >= HANDSHAKE_TIMEOUT / 2,
            "{what}: cut at {:?}",
            ended.after
        );
    }
    assert!(
        dribbled.status().is_none_or(|s| s == 408),
        "{}",
        dribbled.text()
    );
    fx.still_serves().await;
    assert!(fx.upstream.paths().iter().all(|p| p.starts_with("/alive")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_client_that_never_sends_a_client_hello_is_cut_off() {
    let mut fx = Fixture::start().await;
    let before = fx.handshake_failures().await;
    let mut ws = raw_upgrade(fx.h.addr, "").await;
    // Half a ClientHello record header, then nothing: inner TLS must not wait forever.
    let mut dribbler = raw_upgrade(fx.h.addr, "").await;
    let partial_hello = masked_frame(0x2, &[0x16, 0x03, 0x01]);
    let started = Instant::now();
    let (silent, dribbled, ()) = tokio::join!(
        read_to_close(&mut ws, started, HANG),
        dribble(
            &mut dribbler,
            &partial_hello,
            Duration::from_millis(300),
            HANG
        ),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            fx.still_serves().await;
        },
    );
    assert_cut_off("silent after 101", &silent, 10 * HANDSHAKE_TIMEOUT);
    assert_cut_off("dribbled ClientHello", &dribbled, 10 * HANDSHAKE_TIMEOUT);
    assert!(silent.after >= HANDSHAKE_TIMEOUT / 2, "{:?}", silent.after);
    fx.h.proxy
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("\"tls handshake failed\"") && l.contains("timed out")
        })
        .await;
    // Both were cut at about the same deadline: the second may be counted a moment
    // after the first one's log line.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failures = fx.handshake_failures().await;
    while failures < before + 2.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        failures = fx.handshake_failures().await;
    }
    assert!(failures >= before + 2.0, "{failures} (before: {before})");
    fx.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_inside_inner_tls_is_cut_off_by_the_header_read_timeout() {
    // After inner TLS the proxy's inner HTTP/1.1 runs with a timer and hyper's default
    // header_read_timeout (30s); it is not tied to handshake_timeout because hyper's timer
    // also runs while a keep-alive session idles between requests. This is the slowest
    // test of the suite: it waits out that 30s.
    let mut fx = Fixture::start().await;
    let mut tls = fx.inner_http1().await;
    let request = format!("GET /slow HTTP/1.1\r\nHost: {}\r\n", route_host("mcp"));
    let (ended, ()) = tokio::join!(
        dribble(
            &mut tls,
            request.as_bytes(),
            Duration::from_millis(1000),
            Duration::from_secs(90)
        ),
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            fx.still_serves().await;
        },
    );
    assert_cut_off("dribbled inner request", &ended, Duration::from_secs(60));
    assert!(ended.after >= Duration::from_secs(20), "{:?}", ended.after);
    fx.still_serves().await;
    assert!(!fx.upstream.paths().contains(&"/slow".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_with_431() {
    let mut fx = Fixture::start().await;
    let big = oversized_header(MAX_HEADER_BYTES);

    // On the WebSocket upgrade request.
    let mut tcp = TcpStream::connect(fx.h.addr).await.unwrap();
    let started = Instant::now();
    tcp.write_all(upgrade_request(&fx.h.addr.to_string(), &big).as_bytes())
        .await
        .unwrap();
    let outer = read_to_close(&mut tcp, started, HANG).await;
    assert_cut_off("oversized upgrade", &outer, Duration::from_secs(5));
    assert_eq!(outer.status(), Some(431), "{}", outer.text());

    // On an inner HTTP/1.1 request.
    let mut tls = fx.inner_http1().await;
    let started = Instant::now();
    tls.write_all(
        format!(
            "GET /big HTTP/1.1\r\nHost: {}\r\n{big}\r\n",
            route_host("mcp")
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let inner = read_to_close(&mut tls, started, HANG).await;
    assert_cut_off("oversized inner HTTP/1.1", &inner, Duration::from_secs(5));
    assert_eq!(inner.status(), Some(431), "{}", inner.text());

    // On an inner HTTP/2 request: the stream is refused, the session survives.
    let mut h2 = fx.h.session("mcp").await;
    assert_eq!(h2.protocol(), "h2");
    let refused = h2
        .send(
            Request::get("/big-h2")
                .header("x-padding", "a".repeat(MAX_HEADER_BYTES * 2))
                .body(empty())
                .unwrap(),
        )
        .await;
    match refused {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    fx.still_serves().await;
    let paths = fx.upstream.paths();
    assert!(
        !paths.iter().any(|p| p.starts_with("/big")),
        "oversized request forwarded: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_websocket_frames_close_the_connection() {
    let mut fx = Fixture::start().await;
    let before = fx.handshake_failures().await;
    let payload = format!("{SECRET}-in-a-frame").into_bytes();
    let mut huge_len = vec![0x82, 0x80 | 127];
    huge_len.extend_from_slice(&(1u64 << 63).to_be_bytes());
    huge_len.extend_from_slice(&[1, 2, 3, 4]);
    let mut longest_len = vec![0x82, 0x80 | 127];
    longest_len.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    longest_len.extend_from_slice(&[1, 2, 3, 4]);
    let cases: [(&str, Vec<u8>); 7] = [
        ("unmasked client frame", frame(0x82, &payload, false)),
        (
            "reserved bits set",
            frame(0x80 | 0x40 | 0x2, &payload, true),
        ),
        ("text frame", masked_frame(0x1, &payload)),
        ("length 2^63", huge_len),
        ("length 2^63-1", longest_len),
        ("fragmented ping", frame(0x09, &payload, true)),
        ("unknown opcode", masked_frame(0x3, &payload)),
    ];
    let n = cases.len() as f64;
    for (what, bytes) in cases {
        let mut ws = raw_upgrade(fx.h.addr, &format!("Authorization: Bearer {SECRET}\r\n")).await;
        let started = Instant::now();
        ws.write_all(&bytes).await.unwrap();
        let ended = read_to_close(&mut ws, started, HANG).await;
        // Closed at once: the frame is refused, not waited out by the handshake timeout.
        assert_cut_off(what, &ended, HANDSHAKE_TIMEOUT);
        fx.still_serves().await;
    }
    fx.h.proxy
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("\"tls handshake failed\"")
        })
        .await;
    assert!(fx.handshake_failures().await >= before + n);
    fx.assert_logs_hold_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_the_websocket_and_garbage_in_place_of_a_client_hello_are_refused() {
    let mut fx = Fixture::start().await;

    // A real TLS ClientHello sent straight at the port (what `curl https://` does).
    let tcp = TcpStream::connect(fx.h.addr).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(fx.h.pki.ca_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let direct = tokio::time::timeout(
        HANG,
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(route_host("mcp")).unwrap(), tcp),
    )
    .await
    .expect("refused in bounded time");
    let err = direct.expect_err("TLS straight at the listener must fail");
    assert!(!err.to_string().is_empty());

    // Raw bytes that are neither HTTP nor TLS: hyper answers 400 and closes.
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..],
        &b"\x00\xff\xfe\x13\x37 not http at all\r\n\r\n"[..],
    ] {
        let mut tcp = TcpStream::connect(fx.h.addr).await.unwrap();
        let started = Instant::now();
        tcp.write_all(garbage).await.unwrap();
        let ended = read_to_close(&mut tcp, started, HANG).await;
        assert_cut_off("raw garbage", &ended, Duration::from_secs(5));
        assert_eq!(ended.status(), Some(400), "{}", ended.text());
    }
    fx.still_serves().await;

    // Well-formed WebSocket frames whose payload is not TLS.
    let before = fx.handshake_failures().await;
    for payload in [
        format!("GET / HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\n\r\n").into_bytes(),
        (0..=255u8).rev().cycle().take(3000).collect::<Vec<u8>>(),
        // A TLS record header that announces a handshake far larger than allowed.
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff],
    ] {
        let mut ws = raw_upgrade(fx.h.addr, "").await;
        let started = Instant::now();
        ws.write_all(&masked_frame(0x2, &payload)).await.unwrap();
        let ended = read_to_close(&mut ws, started, HANG).await;
        assert_cut_off(
            "garbage inside the WebSocket",
            &ended,
            5 * HANDSHAKE_TIMEOUT,
        );
    }
    fx.h.proxy
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("\"tls handshake failed\"") && l.contains("\"reason\"")
        })
        .await;
    assert!(fx.handshake_failures().await >= before + 3.0);
    fx.still_serves().await;
    fx.assert_logs_hold_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_on_inner_http1_are_never_forwarded_as_two_requests() {
    let mut fx = Fixture::start().await;
    let host = route_host("mcp");
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    // (what, request bytes, expected status)
    let cases: Vec<(&str, String, u16)> = vec![
        (
            // CL.TE: a front end honouring Content-Length would pass the tail as a body;
            // hyper honours Transfer-Encoding, drops Content-Length, and closes after the
            // response, so the tail is never parsed as a request.
            "Content-Length with Transfer-Encoding (tail after chunks)",
            format!(
                "POST /cl-te HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}",
                15 + smuggled.len()
            ),
            200,
        ),
        (
            // TE.CL: the smuggled request sits inside a chunk; it must stay body data.
            "Transfer-Encoding with a short Content-Length (request inside a chunk)",
            format!(
                "POST /te-cl HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                smuggled.len()
            ),
            200,
        ),
        (
            "two differing Content-Lengths",
            format!(
                "POST /two-cl HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{smuggled}",
                5 + smuggled.len()
            ),
            400,
        ),
        (
            "Content-Length list",
            format!("POST /cl-list HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 6\r\n\r\nhello!"),
            400,
        ),
        (
            "signed Content-Length",
            format!("POST /cl-plus HTTP/1.1\r\nHost: {host}\r\nContent-Length: +5\r\n\r\nhello"),
            400,
        ),
        (
            "Transfer-Encoding not ending in chunked",
            format!(
                "POST /te-identity HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            "obs-fold continuation line",
            format!(
                "POST /obs-fold HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n  Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello"
            ),
            400,
        ),
        (
            "space before the colon",
            format!(
                "POST /space-colon HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello"
            ),
            400,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            format!(
                "POST /te-http10 HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
            400,
        ),
    ];
    for (what, request, want) in &cases {
        let mut tls = fx.inner_http1().await;
        let started = Instant::now();
        tls.write_all(request.as_bytes()).await.unwrap();
        let ended = read_to_close(&mut tls, started, Duration::from_secs(5)).await;
        assert_eq!(ended.status(), Some(*want), "{what}: {}", ended.text());
        // Refusals close the connection; so does the CL+TE request once answered, which
        // is what keeps its tail from being read as a second request.
        assert_cut_off(what, &ended, Duration::from_secs(5));
        fx.still_serves().await;
    }

    // Bad chunk sizes: the head is valid, so the request starts towards the upstream; the
    // body then fails to parse and the request is abandoned, never split into two.
    for (path, body) in [
        ("/bad-chunk-hex", "zz\r\nhello\r\n0\r\n\r\n".to_owned()),
        (
            "/bad-chunk-overflow",
            format!("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
    ] {
        let mut tls = fx.inner_http1().await;
        let started = Instant::now();
        tls.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let ended = read_to_close(&mut tls, started, HANG).await;
        assert_cut_off(path, &ended, Duration::from_secs(10));
        // The client's broken body is the client's fault: 400, not an upstream error.
        assert_eq!(ended.status(), Some(400), "{path}: {}", ended.text());
        assert!(ended.text().contains("Malformed request body"), "{path}");
        fx.still_serves().await;
    }

    let seen = fx.upstream.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert!(
        !paths.contains(&"/smuggled"),
        "a smuggled request reached the upstream: {paths:?}"
    );
    for refused in [
        "/two-cl",
        "/cl-list",
        "/cl-plus",
        "/te-identity",
        "/obs-fold",
        "/space-colon",
        "/te-http10",
    ] {
        assert!(!paths.contains(&refused), "{refused} forwarded: {paths:?}");
    }
    let cl_te: Vec<&Seen> = seen.iter().filter(|s| s.path == "/cl-te").collect();
    assert_eq!(cl_te.len(), 1, "{paths:?}");
    assert_eq!(cl_te[0].body.as_deref().ok(), Some(&b"hello"[..]));
    let te_cl: Vec<&Seen> = seen.iter().filter(|s| s.path == "/te-cl").collect();
    assert_eq!(te_cl.len(), 1, "{paths:?}");
    assert_eq!(
        te_cl[0].body.as_deref().ok(),
        Some(smuggled.as_bytes()),
        "the chunk's bytes are the body, nothing more"
    );
    for s in &seen {
        assert!(
            !(s.headers.contains_key("content-length")
                && s.headers.contains_key("transfer-encoding")),
            "{} reached the upstream with both framings",
            s.path
        );
    }
    fx.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_keeps_answering_healthz_under_slowloris_and_garbage() {
    let fx = Fixture::start().await;
    let admin = fx.h.admin;
    let held = hold_bad_connections(admin, 64).await;
    let started = Instant::now();
    let (status, body) = fx.h.admin_get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Oversized headers on the admin listener: refused, listener still up.
    let mut tcp = TcpStream::connect(admin).await.unwrap();
    let started = Instant::now();
    tcp.write_all(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
            oversized_header(512 * 1024)
        )
        .as_bytes(),
    )
    .await
    .ok();
    let ended = read_to_close(&mut tcp, started, HANG).await;
    assert_cut_off("oversized admin request", &ended, Duration::from_secs(5));
    assert_eq!(fx.h.admin_get("/healthz").await.0, 200);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_the_upstream_never_sees_them_whole() {
    let mut fx = Fixture::start().await;
    let host = route_host("mcp");
    let big = "x".repeat(MAX_BODY_BYTES * 2);
    // Declared up front: refused before the upstream hears of it.
    let mut tls = fx.inner_http1().await;
    let started = Instant::now();
    tls.write_all(
        format!(
            "POST /declared HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    )
    .await
    // The proxy may answer and close before the whole body is written.
    .ok();
    let ended = read_to_close(&mut tls, started, HANG).await;
    assert_eq!(ended.status(), Some(413), "{}", ended.text());
    assert!(ended.text().contains("Request body too large"));
    // Chunked, so only counting finds out: the request is abandoned mid-body.
    let mut tls = fx.inner_http1().await;
    let started = Instant::now();
    let chunk = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    tls.write_all(
        format!(
            "POST /chunked HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
        )
        .as_bytes(),
    )
    .await
    // The proxy may answer and close before the whole body is written.
    .ok();
    let ended = read_to_close(&mut tls, started, HANG).await;
    assert_eq!(ended.status(), Some(413), "{}", ended.text());
    fx.still_serves().await;
    let seen = fx.upstream.seen();
    assert!(
        !seen.iter().any(|s| s.path == "/declared"),
        "a body declared over the limit was forwarded"
    );
    assert!(
        seen.iter()
            .filter(|s| s.path == "/chunked")
            .all(|s| s.body.as_ref().map_or(true, |b| b.len() <= MAX_BODY_BYTES)),
        "the upstream received more than the limit"
    );
}
