//! DNS rebinding through the whole proxy: a route's name answers with an allowed address,
//! then flips to the cloud metadata address. Every new upstream connection resolves and
//! checks again, so the second request is refused even though the first went through.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use mcp_tunnel_client::{InnerTls, Session, Target};
use mcp_tunnel_proxy::guard::Resolver;
use mcp_tunnel_proxy::{Proxy, ProxyConfig};
use mcp_tunnel_testutil::pki::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DOMAIN: &str = "abcd1234.tunnel.test";

/// Answers `real` on the first lookup and `flipped` on every later one.
struct FlippingResolver {
    calls: AtomicUsize,
    real: IpAddr,
    flipped: IpAddr,
}

impl Resolver for FlippingResolver {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let ip = if n == 0 { self.real } else { self.flipped };
        Box::pin(async move { Ok(vec![SocketAddr::new(ip, port)]) })
    }
}

/// An HTTP/1.1 server that answers every request with `Connection: close`, so each
/// proxied request needs a new upstream connection.
async fn closing_server() -> (SocketAddr, Arc<AtomicUsize>) {
    upstream_server(true).await
}

/// An HTTP/1.1 server; with `close`, every answer carries `Connection: close`.
async fn upstream_server(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let answer: &[u8] = if close {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    };
                    if tcp.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, served)
}

async fn get(session: &mut Session) -> u16 {
    let req = http::Request::get("/")
        .body(
            Full::new(bytes::Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
        )
        .unwrap();
    let resp = session.send(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_rebinds_is_refused_on_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), DOMAIN);
    let (upstream, served) = closing_server().await;
    let yaml = format!(
        "listen_addr: \"127.0.0.1:0\"\nadmin_addr: off\ntunnel_domain: {DOMAIN}\ntls:\n  cert_file: {}\n  key_file: {}\nroutes:\n  flip: http://flip.internal.example:{}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\n",
        pki.cert_file.display(),
        pki.key_file.display(),
        upstream.port()
    );
    let config = ProxyConfig::from_yaml(&yaml, None).unwrap();
    let resolver = Arc::new(FlippingResolver {
        calls: AtomicUsize::new(0),
        real: IpAddr::V4(Ipv4Addr::LOCALHOST),
        flipped: IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    });
    let proxy = Proxy::with_resolver(config, resolver.clone())
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = proxy.local_addr();
    let tls = InnerTls::trusting(&[pki.ca_der()]).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut session = Session::open(
        tcp,
        &Target::new(addr.to_string(), format!("flip.{DOMAIN}")),
        &tls,
    )
    .await
    .unwrap();

    assert_eq!(get(&mut session).await, 200, "first answer is allowed");
    assert_eq!(
        get(&mut session).await,
        502,
        "rebound answer must be refused"
    );
    assert_eq!(get(&mut session).await, 502);
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "the upstream saw only the first request"
    );
    assert_eq!(
        resolver.calls.load(Ordering::SeqCst),
        3,
        "every new connection resolves again"
    );
    assert!(proxy.shutdown(std::time::Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_without_resolving_again() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), DOMAIN);
    let (upstream, served) = upstream_server(false).await;
    let yaml = format!(
        "listen_addr: \"127.0.0.1:0\"\nadmin_addr: off\ntunnel_domain: {DOMAIN}\ntls:\n  cert_file: {}\n  key_file: {}\nroutes:\n  flip: http://flip.internal.example:{}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\n",
        pki.cert_file.display(),
        pki.key_file.display(),
        upstream.port()
    );
    let config = ProxyConfig::from_yaml(&yaml, None).unwrap();
    let resolver = Arc::new(FlippingResolver {
        calls: AtomicUsize::new(0),
        real: IpAddr::V4(Ipv4Addr::LOCALHOST),
        flipped: IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    });
    let proxy = Proxy::with_resolver(config, resolver.clone())
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = proxy.local_addr();
    let tls = InnerTls::trusting(&[pki.ca_der()]).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let target = Target::new(addr.to_string(), format!("flip.{DOMAIN}"));
    let mut session = Session::open(tcp, &target, &tls).await.unwrap();
    for _ in 0..5 {
        assert_eq!(get(&mut session).await, 200);
    }
    assert_eq!(served.load(Ordering::SeqCst), 5);
    // One connection, checked once, carried all five requests.
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
    assert!(proxy.shutdown(std::time::Duration::from_secs(5)).await);
}
