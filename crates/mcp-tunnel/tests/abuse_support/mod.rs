//! For the bad-input tests (`abuse_*.rs`): raw sockets that misbehave on purpose, a
//! clock around "how long until the peer hung up", an upstream that records every
//! request it is handed, and a reader for Prometheus counters.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a connection ended from the abusive client's side.
#[derive(Debug)]
pub struct Ended {
    /// Everything the server sent before it hung up.
    pub received: Vec<u8>,
    /// From the start of the abuse to the hang-up.
    pub after: Duration,
    /// False when our own deadline fired first: the server never hung up.
    pub closed: bool,
}

impl Ended {
    fn now(received: Vec<u8>, started: Instant, closed: bool) -> Self {
        Self {
            received,
            after: started.elapsed(),
            closed,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// The status code of the first response the server sent, if any.
    pub fn status(&self) -> Option<u16> {
        let t = self.text();
        let rest = t.strip_prefix("HTTP/1.1 ")?;
        rest.get(..3)?.parse().ok()
    }
}

/// Reads until the peer closes (EOF or reset) or `limit` passes since `started`.
pub async fn read_to_close<S: AsyncRead + Unpin>(
    io: &mut S,
    started: Instant,
    limit: Duration,
) -> Ended {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, io.read(&mut buf)).await {
            Err(_) => {
                return Ended::now(received, started, false);
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ended::now(received, started, true);
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `bytes` one at a time, `interval` apart, while watching for the server to hang
/// up; stops at the hang-up, or when `limit` passes. The slowloris client.
pub async fn dribble<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    bytes: &[u8],
    interval: Duration,
    limit: Duration,
) -> Ended {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let mut next = 0;
    loop {
        if started.elapsed() >= limit {
            return Ended::now(received, started, false);
        }
        if next < bytes.len() {
            if io.write_all(&bytes[next..next + 1]).await.is_err() || io.flush().await.is_err() {
                return Ended::now(received, started, true);
            }
            next += 1;
        }
        match tokio::time::timeout(interval, io.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ended::now(received, started, true);
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// A request head long enough to overflow a `limit`-byte header buffer.
pub fn oversized_header(limit: usize) -> String {
    format!("x-padding: {}\r\n", "a".repeat(limit * 2))
}

/// Sends a WebSocket upgrade with `extra` header lines to `addr` and returns the
/// connection once the `101` head has been read (panics on any other answer).
pub async fn raw_upgrade(addr: SocketAddr, extra: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(upgrade_request(&addr.to_string(), extra).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    tcp
}

pub fn upgrade_request(host: &str, extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Reads a response head byte by byte, so nothing after it is consumed.
pub async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), io.read(&mut b))
            .await
            .expect("response head in time")
            .unwrap();
        assert!(
            n == 1,
            "closed mid-head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// One masked client WebSocket frame, FIN set (RFC 6455 §5.2), carrying `payload`.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(0x80 | opcode, payload, true)
}

/// A frame with a free-form first byte and optional masking.
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The value of an unlabelled counter or gauge in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name || key == format!("{name}{{}}")).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// What the recording upstream was handed.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Result<Bytes, String>,
}

/// An HTTP/1.1 upstream (hyper, as a real origin would parse) that records every request
/// and answers `200 ok <path>`.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .map_err(|e| e.to_string());
                            let path = parts.uri.path().to_owned();
                            log.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                path: path.clone(),
                                headers: parts.headers,
                                body,
                            });
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(format!("ok {path}")),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

/// The server hung up within `bound`.
pub fn assert_cut_off(what: &str, ended: &Ended, bound: Duration) {
    assert!(
        ended.closed,
        "{what}: still open after {:?}; received {:?}",
        ended.after,
        ended.text()
    );
    assert!(
        ended.after < bound,
        "{what}: cut off only after {:?} (bound {bound:?})",
        ended.after
    );
}

/// The server hung up because `deadline` ran out: not before half of it (the input was
/// valid so far), and well before a hang.
pub fn assert_cut_at_deadline(what: &str, ended: &Ended, deadline: Duration) {
    assert_cut_off(what, ended, 3 * deadline);
    assert!(
        ended.after >= deadline / 2,
        "{what}: cut at {:?}, before the {deadline:?} deadline",
        ended.after
    );
}

/// Opens `n` connections to `addr` and leaves them idle, half-way through a request head,
/// or holding TLS-looking garbage, in turn: what a listener's other clients must outlive.
pub async fn hold_bad_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        match i % 3 {
            0 => {}
            1 => tcp.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap(),
            _ => tcp
                .write_all(b"\x16\x03\x01\x00\xff\x01garbage")
                .await
                .unwrap(),
        }
        held.push(tcp);
    }
    held
}

/// A TLS client over `io` trusting `roots`, offering HTTP/1.1, for server name `name`.
pub async fn tls_http1<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    name: &str,
) -> tokio_rustls::client::TlsStream<S> {
    try_tls_http1(io, roots, name).await.unwrap()
}

/// [`tls_http1`], with the handshake's outcome for the caller to judge.
pub async fn try_tls_http1<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<S>> {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap(),
            io,
        )
        .await
}
