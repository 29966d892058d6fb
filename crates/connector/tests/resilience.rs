//! End to end under failure: a dropped connection, edge and connector restarts, drain,
//! many concurrent streams, and hostile pre-authentication traffic.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use mcp_tunnel_connector::Outcome;
use mcp_tunnel_edge::EdgeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn one_of_four_killed_others_continue_new_sessions_avoid_it() {
    let world = World::new().await;
    let _c = world.connector(4).await;
    world.wait_live(4, Duration::from_secs(10)).await;
    let mut sessions = Vec::new();
    for i in 0..8u8 {
        let mut s = world.session().await;
        echo(&mut s, &[i; 8]).await.unwrap();
        sessions.push(s);
    }
    let conns = world.edge().registry().connections(&world.tunnel.id);
    // Sessions are spread: two per connection.
    assert!(
        conns.iter().all(|c| c.active_streams() == 2),
        "{:?}",
        conns.iter().map(|c| c.active_streams()).collect::<Vec<_>>()
    );
    let victim = conns[0].clone();
    victim.sever();

    // New sessions right away: none may land on the dead connection.
    for i in 0..6u8 {
        let mut s = world.session().await;
        echo(&mut s, &[100 + i; 8]).await.unwrap();
    }
    let mut alive = 0;
    for (i, s) in sessions.iter_mut().enumerate() {
        if echo(s, &[i as u8; 32]).await.is_ok() {
            alive += 1;
        }
    }
    assert_eq!(
        alive, 6,
        "exactly the two sessions of the killed connection are gone"
    );
    // The connector brings the connection back.
    world.wait_live(4, Duration::from_secs(10)).await;
    assert!(
        world
            .edge()
            .registry()
            .connections(&world.tunnel.id)
            .iter()
            .all(|c| c.id != victim.id)
    );
}

#[tokio::test]
async fn edge_restart_connector_reregisters_all_connections() {
    let mut world = World::new().await;
    let source = mcp_tunnel_connector::TokenSource::fixed(
        &mcp_tunnel_pki::crypto::Secret::new(world.token.encode()),
        "test",
    )
    .unwrap();
    // Production backoff, so the figure is the one operators will see.
    let mut config = world.connector_config(4, source);
    config.backoff = mcp_tunnel_connector::backoff::Backoff::default();
    let c = mcp_tunnel_connector::start(config).await.unwrap();
    world.wait_live(4, Duration::from_secs(10)).await;
    world.stop_edge().await;
    // The edge is down for a second: every connection fails and backs off.
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.restart_edge().await;
    let took = world.wait_live(4, Duration::from_secs(15)).await;
    println!(
        "edge restart: all 4 connections re-registered {took:?} after the new edge started (edge was down 1 s)"
    );
    assert!(
        took < Duration::from_secs(5),
        "re-registration took {took:?}"
    );
    let mut s = world.session().await;
    echo(&mut s, b"after edge restart").await.unwrap();
    assert!(c.metrics().registrations.total() >= 8);
}

#[tokio::test]
async fn connector_restart_edge_stops_routing_to_dead_connections_at_once() {
    let world = World::new().await;
    let c = world.connector(2).await;
    world.wait_live(2, Duration::from_secs(10)).await;
    let mut s = world.session().await;
    echo(&mut s, b"x").await.unwrap();
    c.abort();
    world.wait_live(0, Duration::from_secs(1)).await;
    assert!(closed_within(&mut s, Duration::from_secs(1)).await);
    let r = world.open(DOMAIN, Some(world.client_key.expose())).await;
    assert_eq!(r.err().map(|e| e.0), Some(StatusCode::SERVICE_UNAVAILABLE));
    let _c2 = world.connector(2).await;
    world.wait_live(2, Duration::from_secs(10)).await;
    let mut s = world.session().await;
    echo(&mut s, b"new connector").await.unwrap();
}

#[tokio::test]
async fn drain_keeps_in_flight_sessions_and_refuses_new_ones() {
    let world = World::new().await;
    let c = world.connector(2).await;
    world.wait_live(2, Duration::from_secs(10)).await;
    let mut s = world.session().await;
    c.drain();
    // Both connections announce GOAWAY; the edge stops routing there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = world.open(DOMAIN, Some(world.client_key.expose())).await;
    let status = r.err().map(|e| e.0);
    assert!(
        matches!(
            status,
            Some(StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY)
        ),
        "{status:?}"
    );
    // The session in flight still works during the grace period.
    echo(&mut s, b"draining").await.unwrap();
    s.shutdown().await.unwrap();
    drop(s);
    let t0 = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), c.wait())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Drained);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "drain waited for the whole grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_through_one_connector() {
    let world = Arc::new(World::new().await);
    let c = world.connector(1).await;
    world.wait_live(1, Duration::from_secs(10)).await;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    for i in 0..1000u32 {
        let world = world.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let mut s = world.session().await;
            // Every session is open at once before any of them finishes.
            barrier.wait().await;
            echo(&mut s, format!("stream {i}").as_bytes())
                .await
                .unwrap();
            s
        });
    }
    let mut sessions = Vec::new();
    while let Some(r) = tasks.join_next().await {
        sessions.push(r.unwrap());
    }
    println!(
        "1000 concurrent sessions opened and echoed in {:?}",
        t0.elapsed()
    );
    let conn = &world.edge().registry().connections(&world.tunnel.id)[0];
    assert_eq!(conn.active_streams(), 1000);
    assert_eq!(c.metrics().active_sessions.get(), 1000);
    drop(sessions);
}

#[tokio::test]
async fn slow_and_bogus_pre_auth_clients_cannot_exhaust_the_edge() {
    let config = EdgeConfig {
        handshake_timeout: Duration::from_millis(500),
        max_pending_handshakes: 16,
        max_pending_handshakes_per_source: 16,
        connector_auth_failures: 1000,
        client_header_timeout: Duration::from_millis(500),
        ..fast_edge_config()
    };
    let world = World::with(config, false).await;
    // Silent connections on the connector port, far more than the cap.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(world.connector_addr).await.unwrap());
    }
    // Garbage: an HTTP request where a TLS ClientHello belongs.
    let mut garbage = TcpStream::connect(world.connector_addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Slowloris on the client listener.
    let mut slow_client = TcpStream::connect(world.client_addr).await.unwrap();
    slow_client
        .write_all(b"GET / HTTP/1.1\r\nHo")
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(100)).await;
    let pending = world.edge().metrics().pending_handshakes.get();
    assert!(pending <= 16, "pending handshakes {pending} above the cap");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(2), garbage.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "garbage connection not closed"
    );

    // Every silent connection is closed within the handshake timeout (or refused at once).
    let t0 = Instant::now();
    for s in &mut silent {
        let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "silent connection kept open"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    let r = tokio::time::timeout(Duration::from_secs(3), slow_client.read(&mut buf)).await;
    assert!(r.is_ok(), "slow client header not cut off");

    // The edge still serves a real connector and client afterwards.
    let _c = world.connector(2).await;
    world.wait_live(2, Duration::from_secs(10)).await;
    let mut s = world.session().await;
    echo(&mut s, b"still serving").await.unwrap();
    let m = world.edge().metrics();
    assert!(m.handshakes.get(&["pending_full"]) > 0);
    assert!(m.handshakes.get(&["timeout"]) > 0);
    assert_eq!(m.pending_handshakes.get(), 0);
}

#[tokio::test]
async fn failed_authentications_are_rate_limited_per_source() {
    let config = EdgeConfig {
        connector_auth_failures: 3,
        ..fast_edge_config()
    };
    let world = World::with(config, false).await;
    let mut wrong = world.token.clone();
    wrong.secret = mcp_tunnel_proto::token::generate_secret();
    let source = mcp_tunnel_connector::TokenSource::fixed(
        &mcp_tunnel_pki::crypto::Secret::new(wrong.encode()),
        "test",
    )
    .unwrap();
    let bad = mcp_tunnel_connector::start(world.connector_config(1, source))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = world.edge().metrics();
    assert_eq!(m.handshakes.get(&["token_rejected"]), 3);
    assert!(m.handshakes.get(&["rate_limited"]) >= 1);
    assert!(bad.metrics().connect_failures.get(&["token_rejected"]) == 3);
    bad.abort();
}
