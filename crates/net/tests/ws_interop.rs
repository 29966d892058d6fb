//! Our WebSocket codec against tokio-tungstenite, both ways: each side of the tunnel must
//! keep working with a general-purpose implementation (pings, fragments, close).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mcp_tunnel_net::ws::{HandshakeError, client_handshake, server_stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::Request;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const LIMIT: Duration = Duration::from_secs(10);

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 253) as u8).collect()
}

fn fragment(data: &'static [u8], first: bool, fin: bool) -> Message {
    let op = if first { Data::Binary } else { Data::Continue };
    Message::Frame(Frame::message(data, OpCode::Data(op), fin))
}

/// Next message that is not a pong, collecting pong payloads on the way.
async fn next_data<S>(ws: &mut WebSocketStream<S>, pongs: &mut Vec<Vec<u8>>) -> Option<Message>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("peer went quiet")?
        {
            Ok(Message::Pong(p)) => pongs.push(p.to_vec()),
            Ok(m) => return Some(m),
            Err(e) => panic!("tungstenite: {e}"),
        }
    }
}

/// Reads binary messages until `n` bytes came (noting pongs on the way), closes, and
/// checks that only the close answer follows; returns the pongs and the bytes.
async fn receive_then_close<S>(ws: &mut WebSocketStream<S>, n: usize) -> (Vec<Vec<u8>>, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut pongs, mut got) = (Vec::new(), Vec::new());
    while got.len() < n {
        match next_data(ws, &mut pongs).await {
            Some(Message::Binary(b)) => got.extend_from_slice(&b),
            other => panic!("{other:?}"),
        }
    }
    ws.close(None).await.unwrap();
    while let Some(m) = next_data(ws, &mut pongs).await {
        assert!(matches!(m, Message::Close(_)), "{m:?}");
    }
    (pongs, got)
}

#[tokio::test]
async fn our_server_with_a_tungstenite_client() {
    let (a, b) = tokio::io::duplex(1 << 14);
    let mut ours = server_stream(a).await;
    let mut theirs = WebSocketStream::from_raw_socket(b, Role::Client, None).await;

    let big = pattern(200_000);
    let sent = big.clone();
    let client = tokio::spawn(async move {
        theirs.send(Message::binary(sent)).await.unwrap();
        theirs
            .send(Message::Ping(b"hi there".to_vec().into()))
            .await
            .unwrap();
        theirs.send(fragment(b"frag", true, false)).await.unwrap();
        theirs
            .send(Message::Ping(b"mid-message".to_vec().into()))
            .await
            .unwrap();
        theirs.send(fragment(b"men", false, false)).await.unwrap();
        theirs.send(fragment(b"ted", false, true)).await.unwrap();
        // Our replies: pongs, then what the server writes, in frames; the server
        // answers the close, then the stream ends.
        receive_then_close(&mut theirs, 100_000).await
    });

    let mut want = big;
    want.extend_from_slice(b"fragmented");
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(LIMIT, ours.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);
    let reply = pattern(100_000);
    for chunk in reply.chunks(9_999) {
        ours.write_all(chunk).await.unwrap();
    }
    ours.flush().await.unwrap();
    // The client's close is EOF here.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(LIMIT, ours.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    // The close frame went out with the EOF; a server then ends the TCP connection.
    ours.shutdown().await.unwrap();
    let (pongs, echoed) = client.await.unwrap();
    assert_eq!(pongs, vec![b"hi there".to_vec(), b"mid-message".to_vec()]);
    assert_eq!(echoed, reply);
}

#[tokio::test]
#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn our_client_with_a_tungstenite_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp| {
            assert_eq!(req.uri().path(), "/tunnel");
            assert_eq!(req.headers()["authorization"], "Bearer t0k3n");
            assert_eq!(req.headers()["host"], addr.to_string().as_str());
            Ok(resp)
        })
        .await
        .unwrap();
        // Data right away, so it can arrive with the 101 and test the handshake's leftovers.
        ws.send(Message::binary(b"hello ".to_vec())).await.unwrap();
        ws.send(Message::Ping(b"ping!".to_vec().into()))
            .await
            .unwrap();
        ws.send(fragment(b"from ", true, false)).await.unwrap();
        ws.send(Message::Ping(b"again".to_vec().into()))
            .await
            .unwrap();
        ws.send(fragment(b"tungstenite", false, true))
            .await
            .unwrap();
        receive_then_close(&mut ws, 150_000).await
    });

    let tcp = TcpStream::connect(addr).await.unwrap();
    let headers = vec![("Authorization".to_owned(), "Bearer t0k3n".to_owned())];
    let mut ours = client_handshake(tcp, &addr.to_string(), "/tunnel", &headers)
        .await
        .unwrap();
    let want = b"hello from tungstenite";
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(LIMIT, ours.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, want);
    let up = pattern(150_000);
    for chunk in up.chunks(4_097) {
        ours.write_all(chunk).await.unwrap();
    }
    ours.flush().await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(LIMIT, ours.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the server's close is EOF");
    let (pongs, echoed) = server.await.unwrap();
    assert_eq!(pongs, vec![b"ping!".to_vec(), b"again".to_vec()]);
    assert_eq!(echoed, up);
}

/// A server that reads the request head, then answers with `response` and closes.
async fn canned(response: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let _ = tcp.write_all(response).await;
        let _ = tcp.shutdown().await;
    });
    addr
}

async fn handshake_with(response: &'static [u8]) -> HandshakeError {
    let addr = canned(response).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    match client_handshake(tcp, "example.test", "/", &[]).await {
        Ok(_) => panic!(
            "handshake succeeded against {:?}",
            String::from_utf8_lossy(response)
        ),
        Err(e) => e,
    }
}

#[tokio::test]
async fn refusals_keep_status_and_body() {
    let err =
        handshake_with(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nno entry\n\n").await;
    assert!(
        matches!(&err, HandshakeError::Refused { status: 403, body } if body == "no entry"),
        "{err}"
    );
    assert_eq!(err.to_string(), "websocket refused with HTTP 403: no entry");
    let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                    7\r\nno live\r\na\r\n connector\r\n0\r\n\r\n";
    let err = handshake_with(chunked).await;
    assert!(
        matches!(&err, HandshakeError::Refused { status: 503, body } if body == "no live connector"),
        "{err}"
    );
    let until_eof = b"HTTP/1.0 401 Unauthorized\r\n\r\nbad key";
    let err = handshake_with(until_eof).await;
    assert!(
        matches!(&err, HandshakeError::Refused { status: 401, body } if body == "bad key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_101_is_refused_with_the_reason() {
    let err = handshake_with(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: c3Bvb2ZlZA==\r\n\r\n",
    )
    .await;
    assert!(matches!(err, HandshakeError::BadAccept), "{err}");
    let err =
        handshake_with(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n").await;
    assert!(err.to_string().contains("Upgrade: websocket"), "{err}");
    let err = handshake_with(b"HTTP/1.1 101 Switching").await;
    assert!(matches!(err, HandshakeError::Closed), "{err}");
    let err = handshake_with(b"SSH-2.0-OpenSSH\r\n\r\n").await;
    assert!(matches!(err, HandshakeError::Malformed(_)), "{err}");
}

#[tokio::test]
async fn an_endless_response_head_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let _ = tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\n").await;
        while tcp
            .write_all(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")
            .await
            .is_ok()
        {}
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = tokio::time::timeout(LIMIT, client_handshake(tcp, "h", "/", &[]))
        .await
        .unwrap()
        .err()
        .unwrap();
    assert!(
        matches!(err, HandshakeError::HeadTooLarge { limit: 16_384 }),
        "{err}"
    );
}
