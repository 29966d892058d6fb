//! Memory held per idle upgraded session, all parties in one process (client, edge,
//! connector and origin). A measurement, not a pass/fail test: run with
//! `cargo test -p mcp-tunnel-connector --release --test idle_memory -- --ignored --nocapture`.

mod common;

use std::time::Duration;

use common::*;

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
