//! The real data path of SPEC §3: a WebSocket through edge and connector whose binary
//! messages carry a TLS session between the client and the origin. The tunnel only ever
//! sees ciphertext.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mcp_tunnel_net::ws::{Role, WsByteStream};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUTE_HOST: &str = "mcp.abcd1234.tun.test";

/// The origin's side of the upgrade, by hand: it must see the route host, and never the
/// client's access key.
async fn accept_websocket(mut tcp: TcpStream) -> WsByteStream<TcpStream> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    assert_eq!(header("host").as_deref(), Some(ROUTE_HOST));
    assert!(
        header("authorization").is_none(),
        "client key leaked to the origin"
    );
    let key = header("sec-websocket-key").expect("Sec-WebSocket-Key");
    let accept = mcp_tunnel_net::ws::accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    tcp.write_all(response.as_bytes()).await.unwrap();
    WsByteStream::with_buffered(tcp, Role::Server, &buf[head_end..])
}

/// A WebSocket origin that terminates TLS inside the WebSocket and echoes the plaintext
/// with a prefix; it records whether it saw the Host the client sent.
async fn start_tls_ws_origin(pki: &Pki) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let ws = accept_websocket(tcp).await;
                let mut tls = acceptor.accept(ws).await.unwrap();
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    let mut out = b"origin: ".to_vec();
                    out.extend_from_slice(&buf[..n]);
                    if tls.write_all(&out).await.is_err() || tls.flush().await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn inner_tls_over_websocket_through_the_tunnel() {
    let mut world = World::new().await;
    world.origin = start_tls_ws_origin(&world.pki).await;
    let _c = world.connector(2).await;
    world.wait_live(2, Duration::from_secs(10)).await;

    let auth = vec![(
        "authorization".to_owned(),
        format!("Bearer {}", world.client_key.expose()),
    )];
    let tcp = TcpStream::connect(world.client_addr).await.unwrap();
    let ws = mcp_tunnel_net::ws::client_handshake(tcp, ROUTE_HOST, "/mcp", &auth)
        .await
        .unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new((*world.pki.client_config()).clone()));
    let mut tls = connector
        .connect(ServerName::try_from(ROUTE_HOST).unwrap(), ws)
        .await
        .unwrap();
    for msg in [&b"tools/list"[..], b"tools/call"] {
        tls.write_all(msg).await.unwrap();
        tls.flush().await.unwrap();
        let mut got = Vec::new();
        let want = b"origin: ".len() + msg.len();
        while got.len() < want {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&got[8..], msg);
    }
    // The edge relayed bytes but could not have read them: it never had the inner keys.
    let relayed = world.edge().metrics().bytes.total();
    assert!(relayed > 0);
}
