//! How many connections the API serves at once: in all (more wait in the listen backlog
//! until one ends, so the process never runs out of descriptors, which its database
//! connections need too) and per source address (more are closed at once, so one client
//! cannot take every slot).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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
}

/// One open connection; dropping it frees its slots.
#[derive(Debug)]
pub struct ConnSlot {
    _total: OwnedSemaphorePermit,
    source: IpAddr,
    by_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnCounter {
    pub fn new(limits: ConnLimits) -> Self {
        Self {
            limits,
            slots: Arc::new(Semaphore::new(limits.total.max(1))),
            by_source: Arc::default(),
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
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(source).or_insert(0);
        if *n >= self.limits.per_source.max(1) {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            _total: total,
            source,
            by_source: self.by_source.clone(),
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_source_share_and_total_are_enforced_and_freed() {
        let c = ConnCounter::new(ConnLimits {
            total: 3,
            per_source: 2,
        });
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
}
