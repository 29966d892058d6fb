//! Measurements, not pass/fail tests: memory per idle session and bulk throughput through
//! the tunnel against direct loopback, all parties in one process. Run with
//! `cargo test -p mcp-tunnel-connector --release --test measurements -- --ignored --nocapture --test-threads 1`.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand or from the benchmark script"]
async fn idle_session_memory() {
    let world = World::new().await;
    let _c = world.connector(1).await;
    world.wait_live(1, Duration::from_secs(10)).await;
    // Warm up allocator pools and lazily built state.
    let mut warm = Vec::new();
    for _ in 0..200 {
        let mut s = world.session().await;
        echo(&mut s, b"warm").await.unwrap();
        warm.push(s);
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes();
    let n = 2000;
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = world.session().await;
        echo(&mut s, format!("idle {i}").as_bytes()).await.unwrap();
        sessions.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) / n as u64;
    println!(
        "idle sessions: {n}, RSS growth {} KiB, {} bytes per session for client+edge+connector+origin together",
        (after - before) / 1024,
        per
    );
    drop(sessions);
}

/// Echoes `total` bytes through `s`, writing and reading concurrently; returns MB/s.
async fn echo_throughput<S>(s: S, total: usize) -> f64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(s);
    let t0 = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            w.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        w
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < total {
        let n = r.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended early");
        got += n;
    }
    let _w = writer.await.unwrap();
    total as f64 / 1e6 / t0.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand or from the benchmark script"]
async fn bulk_throughput_against_direct() {
    let world = World::new().await;
    let _c = world.connector(1).await;
    world.wait_live(1, Duration::from_secs(10)).await;
    let total = 256 * 1024 * 1024;

    let direct = {
        let tcp = tokio::net::TcpStream::connect(world.origin).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn.with_upgrades());
        let mut resp = sender
            .send_request(upgrade_request("origin", None))
            .await
            .unwrap();
        let up = hyper::upgrade::on(&mut resp).await.unwrap();
        echo_throughput(hyper_util::rt::TokioIo::new(up), total).await
    };
    let tunnel = echo_throughput(world.session().await, total).await;
    println!(
        "bulk echo {} MiB: direct {direct:.0} MB/s, through edge+connector {tunnel:.0} MB/s ({:.0}% of direct)",
        total / (1024 * 1024),
        100.0 * tunnel / direct
    );
}
