//! End to end through edge and connector: sessions, refusals, rotation and archive.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use mcp_tunnel_connector::{Outcome, TokenSource};
use mcp_tunnel_edge::store::{TunnelRecord, WorkspaceId};
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_proto::token::generate_secret;
use mcp_tunnel_proto::{TunnelId, TunnelToken};

#[tokio::test]
async fn upgrade_echoes_both_ways_and_plain_requests_are_forwarded() {
    let world = World::new().await;
    let connector = world.connector(2).await;
    world.wait_live(2, Duration::from_secs(10)).await;

    let mut s = world.session().await;
    echo(&mut s, b"hello through the tunnel").await.unwrap();
    // Larger than every window and buffer on the path, in both directions at once.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    echo(&mut s, &big).await.unwrap();

    // A route host reaches the same tunnel; the Host is preserved, the key is not forwarded.
    let (status, body) = world
        .get(
            &format!("mcp.{DOMAIN}"),
            Some(world.client_key.expose()),
            "/p?q=1",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        format!("origin saw GET /p?q=1 host=mcp.{DOMAIN} authorization=false")
    );

    let m = connector.metrics();
    assert_eq!(m.ha_connections.get(), 2);
    assert!(m.requests.get(&["upgraded"]) >= 1);
    drop(connector);
}

#[tokio::test]
async fn refusals_are_distinct() {
    let world = World::new().await;
    let _connector = world.connector(1).await;
    world.wait_live(1, Duration::from_secs(10)).await;
    let key = world.client_key.expose();

    let refused = |r: Result<Session, (StatusCode, String)>| match r {
        Ok(_) => panic!("expected a refusal"),
        Err(e) => e,
    };
    let (s, b) = refused(world.open(DOMAIN, None).await);
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = refused(world.open(DOMAIN, Some("not-a-key")).await);
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b.contains("invalid client access key"), "{b}");
    let (s, b) = refused(world.open("zzzz9999.tun.test", Some(key)).await);
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(b.contains("tunnel not found"), "{b}");

    // A key of another workspace.
    let other = generate_secret();
    world.store.add_client_key(
        &other,
        mcp_tunnel_edge::store::ClientIdentity {
            workspace_id: WorkspaceId("wrkspc_other".into()),
            scopes: vec![mcp_tunnel_edge::store::USE_TUNNELS_SCOPE.into()],
            key_id: "ck_other".into(),
        },
    );
    let (s, b) = refused(world.open(DOMAIN, Some(other.expose())).await);
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b.contains("another workspace"), "{b}");

    // A tunnel with no connector, then without a certificate.
    let lonely = TunnelRecord {
        id: TunnelId::parse("tnl_lonely").unwrap(),
        workspace_id: WorkspaceId(WORKSPACE.into()),
        domain: "lonely00.tun.test".into(),
        archived: false,
        has_active_ca: true,
    };
    world.store.put_tunnel(lonely.clone(), [0; 32]);
    let (s, b) = refused(world.open("lonely00.tun.test", Some(key)).await);
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b.contains("no connector connected"), "{b}");
    world.store.set_has_active_ca(&lonely.id, false);
    let (s, b) = refused(world.open("lonely00.tun.test", Some(key)).await);
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b.contains("tunnel needs a certificate"), "{b}");
    world.store.archive(&lonely.id);
    let (s, b) = refused(world.open("lonely00.tun.test", Some(key)).await);
    assert_eq!(s, StatusCode::GONE, "{b}");
    assert!(b.contains("tunnel is archived"), "{b}");

    let metrics = world.edge().metrics().render();
    assert!(
        metrics.contains("mcpt_edge_client_requests_total{outcome=\"wrong_workspace\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn no_origin_answers_503_no_ingress() {
    let world = World::new().await;
    let source = TokenSource::fixed(&Secret::new(world.token.encode()), "test").unwrap();
    let mut config = world.connector_config(1, source);
    config.origin = None;
    let _c = mcp_tunnel_connector::start(config).await.unwrap();
    world.wait_live(1, Duration::from_secs(10)).await;
    let (status, body) = world
        .get(DOMAIN, Some(world.client_key.expose()), "/")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body.trim(), "No ingress rules were defined");
    let r = world.open(DOMAIN, Some(world.client_key.expose())).await;
    assert_eq!(r.err().map(|e| e.0), Some(StatusCode::SERVICE_UNAVAILABLE));
}

#[tokio::test]
async fn tls_client_listener_and_ready_endpoint() {
    let world = World::with(fast_edge_config(), true).await;
    let source = TokenSource::fixed(&Secret::new(world.token.encode()), "test").unwrap();
    let mut config = world.connector_config(2, source);
    config.metrics = Some("127.0.0.1:0".parse().unwrap());
    let c = mcp_tunnel_connector::start(config).await.unwrap();
    let metrics_addr = c.metrics_addr().unwrap();
    let ready = || async move {
        let tcp = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/ready")
            .header("host", "x")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        )
    };
    world.wait_live(2, Duration::from_secs(10)).await;
    let (status, body) = ready().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["readyConnections"], 2);

    let mut s = world.session().await;
    echo(&mut s, b"over outer TLS").await.unwrap();

    world.store.archive(&world.tunnel.id);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), c.wait())
            .await
            .unwrap(),
        Outcome::Archived
    );
    let _ = ready;
}

#[tokio::test]
async fn rotation_keeps_established_refuses_old_token_accepts_new() {
    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, world.token.encode()).unwrap();
    let c = mcp_tunnel_connector::start(
        world.connector_config(2, TokenSource::File(token_file.clone())),
    )
    .await
    .unwrap();
    world.wait_live(2, Duration::from_secs(10)).await;
    let mut s = world.session().await;
    echo(&mut s, b"before rotation").await.unwrap();

    let new_token = TunnelToken::generate(
        world.tunnel.id.clone(),
        world.token.edge.clone(),
        world.token.edge_ca_pin,
    );
    world
        .store
        .rotate_token(&world.tunnel.id, new_token.secret_hash());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Established connections and sessions keep working.
    assert_eq!(world.live(), 2);
    echo(&mut s, b"after rotation").await.unwrap();
    let mut s2 = world.session().await;
    echo(&mut s2, b"new session on an old connection")
        .await
        .unwrap();

    // A new connection with the old token is refused.
    let fresh = world.connector(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.live(), 2);
    assert!(fresh.metrics().connect_failures.get(&["token_rejected"]) >= 1);
    fresh.abort();

    // One connection drops: it cannot come back with the old token…
    world.edge().registry().connections(&world.tunnel.id)[0].sever();
    world.wait_live(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.live(), 1);
    assert!(c.metrics().connect_failures.get(&["token_rejected"]) >= 1);
    // …until the new token is written to the file.
    std::fs::write(&token_file, new_token.encode()).unwrap();
    world.wait_live(2, Duration::from_secs(10)).await;
    let mut s3 = world.session().await;
    echo(&mut s3, b"with the new token").await.unwrap();
}

#[tokio::test]
async fn archive_severs_everything_at_once_and_connector_exits() {
    let world = World::new().await;
    let c = world.connector(4).await;
    world.wait_live(4, Duration::from_secs(10)).await;
    let mut sessions = Vec::new();
    for i in 0..8u8 {
        let mut s = world.session().await;
        echo(&mut s, &[i; 16]).await.unwrap();
        sessions.push(s);
    }
    let t0 = Instant::now();
    world.store.archive(&world.tunnel.id);
    for s in &mut sessions {
        assert!(
            closed_within(s, Duration::from_secs(2)).await,
            "session not severed"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(world.live(), 0);
    let outcome = tokio::time::timeout(Duration::from_secs(10), c.wait())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Archived);
    // A new connector is refused too.
    let again = world.connector(1).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), again.wait())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Archived);
    assert_eq!(world.live(), 0);
}

#[tokio::test]
async fn connections_per_tunnel_are_capped() {
    let config = mcp_tunnel_edge::EdgeConfig {
        max_connections_per_tunnel: 2,
        ..fast_edge_config()
    };
    let world = World::with(config, false).await;
    let c = world.connector(3).await;
    world.wait_live(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.live(), 2);
    assert!(c.metrics().connect_failures.get(&["too_many_connections"]) >= 1);
    // A freed slot is taken again, and the cap still holds.
    world.edge().registry().connections(&world.tunnel.id)[0].sever();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.live(), 2);
}
