//! The store as the edge sees it: domains, tokens, client keys, connections, events.

use mcp_tunnel_control::ControlStore;
use mcp_tunnel_edge::store::{ConnectionRecord, EdgeStore};
use mcp_tunnel_edge::{StoreEvent, TokenCheck};
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_proto::{TunnelId, TunnelToken};
use serde_json::json;

use crate::common::{Backend, Harness, good_ca};

async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<StoreEvent>, want: &StoreEvent) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("event within 5s")
            .unwrap();
        if &ev == want {
            return;
        }
    }
}

pub async fn edge_view(b: Backend) {
    let h = Harness::start(b).await;
    let store: &ControlStore = &h.store;
    let mut events = store.subscribe();
    let t = h.create_tunnel("edge").await;
    let id = TunnelId::parse(t["id"].as_str().unwrap()).unwrap();
    let domain = t["domain"].as_str().unwrap();

    let rec = store.tunnel_by_domain(domain).await.unwrap().unwrap();
    assert_eq!(rec.id, id);
    assert!(!rec.has_active_ca && !rec.archived);
    assert_eq!(rec.workspace_id.0, h.boot.workspace_id);
    assert!(
        store
            .tunnel_by_domain(&format!("x.{domain}"))
            .await
            .unwrap()
            .is_none()
    );
    h.admin(
        "POST",
        &format!("/v1/tunnels/{id}/certificates"),
        Some(json!({"ca_certificate_pem": good_ca("e")})),
    )
    .await;
    assert!(
        store
            .tunnel_by_id(&id)
            .await
            .unwrap()
            .unwrap()
            .has_active_ca
    );

    let token = h
        .admin("POST", &format!("/v1/tunnels/{id}/reveal_token"), None)
        .await;
    let old = TunnelToken::parse(token["tunnel_token"].as_str().unwrap()).unwrap();
    assert!(matches!(
        store.verify_token(&id, &old.secret).await.unwrap(),
        TokenCheck::Valid(_)
    ));
    assert_eq!(
        store
            .verify_token(&id, &Secret::new("wrong"))
            .await
            .unwrap(),
        TokenCheck::Rejected
    );
    let other = TunnelId::parse("tnl_unknown").unwrap();
    assert_eq!(
        store.verify_token(&other, &old.secret).await.unwrap(),
        TokenCheck::Rejected
    );

    // Connections registered by the edge show in the API.
    let conn = ConnectionRecord {
        tunnel_id: id.clone(),
        connection_id: format!("c-{}", t["id"].as_str().unwrap()),
        edge_id: "edge-a".into(),
        conn_index: 0,
        peer: "127.0.0.1:5555".parse().unwrap(),
    };
    store.connection_registered(&conn).await.unwrap();
    assert_eq!(
        h.admin("GET", &format!("/v1/tunnels/{id}"), None).await["connections"],
        1
    );
    store.connection_unregistered(&conn).await.unwrap();
    assert_eq!(
        h.admin("GET", &format!("/v1/tunnels/{id}"), None).await["connections"],
        0
    );

    let rotated = h
        .admin("POST", &format!("/v1/tunnels/{id}/rotate_token"), None)
        .await;
    next_event(
        &mut events,
        &StoreEvent::TokenRotated {
            tunnel_id: id.clone(),
        },
    )
    .await;
    let new = TunnelToken::parse(rotated["tunnel_token"].as_str().unwrap()).unwrap();
    assert_eq!(
        store.verify_token(&id, &old.secret).await.unwrap(),
        TokenCheck::Rejected
    );
    assert!(matches!(
        store.verify_token(&id, &new.secret).await.unwrap(),
        TokenCheck::Valid(_)
    ));

    h.admin("POST", &format!("/v1/tunnels/{id}/archive"), None)
        .await;
    next_event(
        &mut events,
        &StoreEvent::TunnelArchived {
            tunnel_id: id.clone(),
        },
    )
    .await;
    assert_eq!(
        store.verify_token(&id, &new.secret).await.unwrap(),
        TokenCheck::Archived
    );
    assert_eq!(
        store.verify_token(&id, &old.secret).await.unwrap(),
        TokenCheck::Rejected
    );
    let rec = store.tunnel_by_domain(domain).await.unwrap().unwrap();
    assert!(rec.archived && !rec.has_active_ca);

    // Client access keys.
    let ck = h
        .admin(
            "POST",
            "/v1/admin/client_keys",
            Some(json!({"name": "agent"})),
        )
        .await;
    let key = Secret::new(ck["key"].as_str().unwrap());
    let ident = store.verify_client_key(&key).await.unwrap().unwrap();
    assert_eq!(ident.workspace_id.0, h.boot.workspace_id);
    assert!(ident.has_scope("workspace:use_tunnels"));
    assert_eq!(ident.key_id, ck["id"].as_str().unwrap());
    // An API key is not a client key.
    assert!(
        store
            .verify_client_key(&Secret::new(h.admin.clone()))
            .await
            .unwrap()
            .is_none()
    );
    h.admin(
        "POST",
        &format!(
            "/v1/admin/client_keys/{}/revoke",
            ck["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert!(store.verify_client_key(&key).await.unwrap().is_none());
}

/// Two stores on one database (two replicas): an archive on one reaches the other's
/// subscribers within a second. Only meaningful on PostgreSQL.
pub async fn replicas_see_revocations(b: Backend) {
    if b != Backend::Postgres {
        return;
    }
    let h = Harness::start(b).await;
    let dir = tempfile::tempdir().unwrap();
    let db = crate::common::open_db(b, dir.path()).await;
    let master = mcp_tunnel_control::MasterKey::generate();
    let replica = ControlStore::new(db, master, crate::common::settings(10));
    let stop = tokio_util::sync::CancellationToken::new();
    let _task = replica.listen(stop.clone());
    let mut rx = replica.subscribe();
    // LISTEN is in place once a rotation made before it is heard: until then
    // notifications are lost, and a fixed pause is too short on a loaded machine.
    let warm = h.create_tunnel("warm-up").await;
    let warm_id = TunnelId::parse(warm["id"].as_str().unwrap()).unwrap();
    let heard = StoreEvent::TokenRotated {
        tunnel_id: warm_id.clone(),
    };
    let mut listening = false;
    for _ in 0..40 {
        h.admin("POST", &format!("/v1/tunnels/{warm_id}/rotate_token"), None)
            .await;
        let wait = tokio::time::sleep(std::time::Duration::from_millis(250));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                ev = rx.recv() => if ev.ok().as_ref() == Some(&heard) {
                    listening = true;
                    break;
                },
            }
        }
        if listening {
            break;
        }
    }
    assert!(listening, "the replica never heard a notification");
    let t = h.create_tunnel("replicated").await;
    let id = TunnelId::parse(t["id"].as_str().unwrap()).unwrap();
    let started = std::time::Instant::now();
    h.admin("POST", &format!("/v1/tunnels/{id}/rotate_token"), None)
        .await;
    next_event(
        &mut rx,
        &StoreEvent::TokenRotated {
            tunnel_id: id.clone(),
        },
    )
    .await;
    h.admin("POST", &format!("/v1/tunnels/{id}/archive"), None)
        .await;
    next_event(
        &mut rx,
        &StoreEvent::TunnelArchived {
            tunnel_id: id.clone(),
        },
    )
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(replica.tunnel_by_id(&id).await.unwrap().unwrap().archived);
    stop.cancel();
}

/// Replica bookkeeping: which live replica holds a tunnel, and reaping silent ones.
pub async fn replica_directory(b: Backend) {
    let h = Harness::start(b).await;
    let store: &ControlStore = &h.store;
    let t = h.create_tunnel("dir").await;
    let id = TunnelId::parse(t["id"].as_str().unwrap()).unwrap();
    let suffix = &t["id"].as_str().unwrap()[4..12];
    let (a, other) = (format!("a-{suffix}"), format!("b-{suffix}"));
    store.heartbeat_edge(&a, "10.0.0.1:9444").await.unwrap();
    store.heartbeat_edge(&other, "10.0.0.2:9444").await.unwrap();
    let conn = ConnectionRecord {
        tunnel_id: id.clone(),
        connection_id: format!("c-{suffix}"),
        edge_id: a.clone(),
        conn_index: 0,
        peer: "127.0.0.1:1".parse().unwrap(),
    };
    store.connection_registered(&conn).await.unwrap();
    let found = store
        .peer_for_tunnel(id.as_str(), &other, 15_000)
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some("10.0.0.1:9444"));
    // A replica is never its own peer.
    assert!(
        store
            .peer_for_tunnel(id.as_str(), &a, 15_000)
            .await
            .unwrap()
            .is_none()
    );
    // A server that takes no forwarded sessions advertises nothing and is never chosen.
    store.heartbeat_edge(&a, "").await.unwrap();
    assert!(
        store
            .peer_for_tunnel(id.as_str(), &other, 15_000)
            .await
            .unwrap()
            .is_none()
    );
    // A silent replica is not forwarded to, and is reaped with its connections.
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    store.heartbeat_edge(&other, "10.0.0.2:9444").await.unwrap();
    assert!(
        store
            .peer_for_tunnel(id.as_str(), &other, 50)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.reap_stale_edges(50).await.unwrap() >= 1);
    assert_eq!(
        h.admin("GET", &format!("/v1/tunnels/{id}"), None).await["connections"],
        0
    );
    store.forget_edge(&other).await.unwrap();
}
