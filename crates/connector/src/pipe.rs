//! Byte pumping between an upgraded origin connection and a tunnel stream: the shared
//! implementation in `mcp_tunnel_net::pipe`, and the body types the connector answers with.

use bytes::Bytes;

pub use mcp_tunnel_net::pipe::{Attach, BoxError, reader_body};

/// Response body of a tunnel stream.
pub type TunnelBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Pumps bytes both ways between `io` (the origin) and the tunnel stream.
pub async fn pipe<IO>(io: IO, from_tunnel: hyper::body::Incoming, attach: Attach<IO>) -> (u64, u64)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    mcp_tunnel_net::pipe::pipe(io, from_tunnel, attach, |_, _| {}).await
}

#[cfg(test)]
mod tests {
    //! The pipe over a real in-process HTTP/2 connection, as the connector runs it.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use http_body_util::{BodyExt, Empty};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const WINDOW: u32 = 64 * 1024;

    /// An h2 stream whose response body reads `origin` through the pipe; returns the
    /// client's response and the origin's far end.
    async fn tunnel_stream() -> (http::Response<hyper::body::Incoming>, DuplexStream) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (origin, origin_far) = tokio::io::duplex(16 * 1024);
        let origin = Arc::new(std::sync::Mutex::new(Some(origin)));
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let origin = origin.lock().unwrap().take().expect("one stream");
            async move {
                let (attach, body) = reader_body();
                tokio::spawn(pipe(origin, req.into_body(), attach));
                Ok::<_, std::convert::Infallible>(http::Response::new(body.boxed()))
            }
        });
        tokio::spawn(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server_io), svc),
        );
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW * 4)
            .handshake(TokioIo::new(client_io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("http://tunnel/")
            .body(Empty::<Bytes>::new().map_err(|n| match n {}).boxed())
            .unwrap();
        (sender.send_request(req).await.unwrap(), origin_far)
    }

    #[tokio::test]
    async fn a_reader_that_stops_stops_the_origin_reads() {
        let (resp, mut origin) = tunnel_stream().await;
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        let total = 8u64 << 20;
        let writer = tokio::spawn(async move {
            let chunk = vec![0x5a; 16 * 1024];
            while counter.load(Ordering::Relaxed) < total {
                origin.write_all(&chunk).await.unwrap();
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            origin.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = origin.read_to_end(&mut rest).await;
        });
        // Nobody reads the response: what the origin can push is bounded by the stream
        // window, one read chunk and the socket buffers, not by the transfer size.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stalled = written.load(Ordering::Relaxed);
        assert!(stalled > 0, "the origin never got to write");
        assert!(
            stalled <= 512 * 1024,
            "{stalled} bytes left the origin while the reader was stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(written.load(Ordering::Relaxed), stalled, "buffering grew");
        // Reading again resumes the flow and every byte arrives.
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len() as u64, total);
        assert!(got.iter().all(|b| *b == 0x5a));
        writer.await.unwrap();
    }
}
