//! How many connections the API serves at once: in all (more wait in the listen backlog
//! until one ends, so the process never runs out of descriptors, which its database
//! connections need too) and per source address (more are closed at once, so one client
//! cannot take every slot). A trusted reverse proxy (`--trusted-proxy`) carries many
//! clients' connections, so only the total applies to it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use mcp_tunnel_net::forwarded::TrustedProxies;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits on open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub total: usize,
    pub per_source: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            total: 4096,
            per_source: 256,
        }
    }
}

/// The open connections, counted.
#[derive(Debug)]
pub struct ConnCounter {
    limits: ConnLimits,
    slots: Arc<Semaphore>,
    by_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Sources without a per-source share: the trusted reverse proxies.
    exempt: Arc<TrustedProxies>,
}

/// One open connection; dropping it frees its slots.
#[derive(Debug)]
pub struct ConnSlot {
    _total: OwnedSemaphorePermit,
    /// The source whose share it holds; none for a trusted proxy.
    source: Option<IpAddr>,
    by_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnCounter {
    pub fn new(limits: ConnLimits, exempt: Arc<TrustedProxies>) -> Self {
        Self {
            limits,
            slots: Arc::new(Semaphore::new(limits.total.max(1))),
            by_source: Arc::default(),
            exempt,
        }
    }

    /// Waits until a connection may be accepted at all.
    pub async fn ready(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the semaphore is never closed"))
    }

    /// Admits a connection from `source` into the slot `ready` gave, or `None` when that
    /// source already has its share open.
    pub fn admit(&self, total: OwnedSemaphorePermit, source: IpAddr) -> Option<ConnSlot> {
        if self.exempt.contains(source) {
            return Some(ConnSlot {
                _total: total,
                source: None,
                by_source: self.by_source.clone(),
            });
        }
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(source).or_insert(0);
        if *n >= self.limits.per_source.max(1) {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            _total: total,
            source: Some(source),
            by_source: self.by_source.clone(),
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let Some(source) = self.source else { return };
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_source_share_and_total_are_enforced_and_freed() {
        let c = ConnCounter::new(
            ConnLimits {
                total: 3,
                per_source: 2,
            },
            Arc::new(TrustedProxies::none()),
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = c.admit(c.ready().await, a).unwrap();
        let _a2 = c.admit(c.ready().await, a).unwrap();
        // A third from the same source is refused, and its total slot given back.
        assert!(c.admit(c.ready().await, a).is_none());
        let _b1 = c.admit(c.ready().await, b).unwrap();
        // Three open: the total is reached, so the next waits.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), c.ready());
        assert!(waiting.await.is_err(), "a fourth connection must wait");
        drop(a1);
        let again = c.admit(c.ready().await, a);
        assert!(again.is_some(), "a closed connection frees both its slots");
        assert_eq!(c.by_source.lock().unwrap().get(&a), Some(&2));
        drop(again);
        drop(_a2);
        assert_eq!(c.by_source.lock().unwrap().get(&a), None, "no entry kept");
    }

    #[tokio::test]
    async fn a_trusted_proxy_has_no_per_source_share_but_counts_in_the_total() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let c = ConnCounter::new(
            ConnLimits {
                total: 4,
                per_source: 1,
            },
            Arc::new(TrustedProxies::parse(&["10.0.0.0/8"]).unwrap()),
        );
        let mut held = Vec::new();
        for _ in 0..4 {
            let slot = c.admit(c.ready().await, proxy);
            held.push(slot.expect("a trusted proxy is not limited per source"));
        }
        assert!(c.by_source.lock().unwrap().is_empty(), "no share taken");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), c.ready());
        assert!(waiting.await.is_err(), "the total still applies");
        drop(held);
        // An untrusted neighbour keeps its share of one.
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        let _one = c.admit(c.ready().await, other).unwrap();
        assert!(c.admit(c.ready().await, other).is_none());
    }
}
