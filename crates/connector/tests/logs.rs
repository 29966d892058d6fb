//! Log lines operators rely on. In a test binary of its own: tracing caches per-callsite
//! interest process-wide, so a scoped subscriber in one test misses events whose callsite
//! another test's thread registered first.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// Captures log output for one test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn registered_tunnel_connection_logged_once_per_connection() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let world = World::new().await;
    let _c = world.connector(3).await;
    world.wait_live(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let registered: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "Registered tunnel connection")
        .collect();
    assert_eq!(registered.len(), 3, "{text}");
    let mut indexes: Vec<u64> = registered
        .iter()
        .map(|v| v["fields"]["connIndex"].as_u64().unwrap())
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, vec![0, 1, 2]);
    for v in &registered {
        assert_eq!(v["fields"]["protocol"], "http2");
        assert!(
            v["fields"]["edge"]
                .as_str()
                .unwrap()
                .starts_with("localhost:")
        );
    }
    // No secret in any log line.
    assert!(!text.contains(world.token.secret.expose()));
    assert!(!text.contains(world.client_key.expose()));
}
