//! The real data path of SPEC §3: a WebSocket through edge and connector whose binary
//! messages carry a TLS session between the client and the origin. The tunnel only ever
//! sees ciphertext.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mcp_tunnel_net::ws::WsByteStream;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ROUTE_HOST: &str = "mcp.abcd1234.tun.test";

use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// The origin must see the route host, and never the client's access key.
#[allow(clippy::result_large_err)] // tungstenite's callback signature
fn check_host(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    assert_eq!(req.headers()["host"], ROUTE_HOST);
    assert!(
        req.headers().get("authorization").is_none(),
        "client key leaked to the origin"
    );
    Ok(resp)
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
                let ws = tokio_tungstenite::accept_hdr_async(tcp, check_host)
                    .await
                    .unwrap();
                let mut tls = acceptor.accept(WsByteStream::new(ws)).await.unwrap();
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

    let mut req = format!("ws://{ROUTE_HOST}/mcp")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", world.client_key.expose())
            .parse()
            .unwrap(),
    );
    let tcp = TcpStream::connect(world.client_addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new((*world.pki.client_config()).clone()));
    let mut tls = connector
        .connect(
            ServerName::try_from(ROUTE_HOST).unwrap(),
            WsByteStream::new(ws),
        )
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
