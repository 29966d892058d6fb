//! A minimal MCP responder for benchmarks: answers `tools/call` with a JSON result (the
//! streamable-HTTP "JSON response" mode), `GET /bytes?size=N` with N bytes, and
//! `GET /sse` with an MCP-style event stream that sends one event and then stays open
//! and quiet (the idle SSE sessions of the memory measurement).

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

const RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"42"}],"isError":false}}"#;

pub async fn start() -> SocketAddr {
    start_on("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind the upstream")
}

/// Serves on `addr` until the runtime ends.
pub async fn start_on(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(answer))
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    if req.uri().path() == "/bytes" {
        let size: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("size="))
            .and_then(|s| s.parse().ok())
            .unwrap_or(1 << 20);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = (0..size.div_ceil(chunk.len() as u64)).map(move |i| {
            let left = size - i * chunk.len() as u64;
            Ok::<_, std::convert::Infallible>(Frame::data(
                chunk.slice(..(left.min(chunk.len() as u64) as usize)),
            ))
        });
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        return Ok(Response::builder()
            .header("content-length", size)
            .body(BodyExt::boxed(body))
            .unwrap());
    }
    if req.uri().path() == "/sse" {
        let first = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(
                b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/ready\"}\n\n",
            )))
        });
        let body = StreamBody::new(first.chain(futures_util::stream::pending()));
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(BodyExt::boxed(body))
            .unwrap());
    }
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(RESULT.as_bytes())).boxed())
        .unwrap())
}
