//! Start and stop: readiness reflects the database, and shutdown (what SIGTERM does)
//! lets requests in flight finish before the database is closed.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::federation::{claims, exchange, setup};
use crate::common::{Backend, Harness};

/// How long the identity provider takes to serve its JWKS: the exchange is in flight
/// at least this long.
const JWKS_DELAY: Duration = Duration::from_millis(1500);

/// A JWKS endpoint that answers after [`JWKS_DELAY`] and reports each request it gets.
async fn slow_jwks(keys: serde_json::Value) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = keys.to_string();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = tx.send(());
                tokio::time::sleep(JWKS_DELAY).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, rx)
}

pub async fn shutdown_lets_requests_in_flight_finish(b: Backend) {
    let h = Harness::start(b).await;
    let issuer = crate::common::TestIssuer::new("k1");
    let (url, mut fetched) = slow_jwks(issuer.jwks()).await;
    let mut s = setup(&h, Some(url)).await;
    s.issuer = issuer;
    let assertion = s.issuer.sign(&claims());

    // The exchange reads the rule, waits for the JWKS, then writes the access token
    // and its audit event: shutdown begins while it waits.
    let in_flight = exchange(&h, &s, &assertion, json!({}));
    let shutdown = async {
        fetched.recv().await.expect("the JWKS was never fetched");
        let began = Instant::now();
        h.stop_serving();
        assert!(!h.store.is_closing());
        let drained = h.store.close().await;
        (drained, began.elapsed())
    };
    let ((status, body), (drained, took)) = tokio::join!(in_flight, shutdown);
    assert_eq!(status, 200, "the request in flight was cut off: {body}");
    assert!(body["access_token"].as_str().unwrap().starts_with("mtat_"));
    assert!(drained, "close() gave up before the request finished");
    assert!(
        took >= JWKS_DELAY / 2,
        "close() returned after {took:?}, before the request in flight had finished"
    );
    assert!(h.store.is_closing());

    // The listener is gone: a new request is not served.
    let refused = h
        .http
        .send(http::Method::GET, &format!("{}/healthz", h.base), &[], None)
        .await;
    assert!(refused.is_err(), "a request after shutdown was served");
}

pub async fn readiness_follows_the_database(b: Backend) {
    let h = Harness::start(b).await;
    // No credentials, no version header: probes send neither.
    let (status, body) = h.raw("GET", "/readyz", &[], None).await;
    assert_eq!((status, body.as_str()), (200, Some("ready\n")));
    assert_eq!(h.raw("GET", "/healthz", &[], None).await.0, 200);

    // The database goes away under a running API: not ready, but still alive.
    h.store.db().close().await;
    let (status, body) = h.raw("GET", "/readyz", &[], None).await;
    assert_eq!(
        (status, body.as_str()),
        (503, Some("not ready: database unavailable\n"))
    );
    assert_eq!(h.raw("GET", "/healthz", &[], None).await.0, 200);
}
