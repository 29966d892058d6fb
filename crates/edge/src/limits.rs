//! Bounds on pre-authentication work: per-source limits on failed authentications.
//! (The cap on pending handshakes is a semaphore in the listener; the handshake timeout
//! comes from the protocol state machine.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sources tracked at most; beyond this, expired entries are dropped and, if that is not
/// enough, the oldest windows go first, so an address-spraying attacker costs bounded memory.
const MAX_TRACKED: usize = 65_536;

/// Counts failed authentications per source in fixed windows.
///
/// IPv6 sources are grouped by /64, the unit one host usually controls.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    sources: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` has used up its failures for the current window.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        match sources.get(&key) {
            Some(&(count, start)) => {
                now.duration_since(start) < self.window && count >= self.max_failures
            }
            None => false,
        }
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let key = source_key(ip);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= MAX_TRACKED && !sources.contains_key(&key) {
            let window = self.window;
            sources.retain(|_, (_, start)| now.duration_since(*start) < window);
            if sources.len() >= MAX_TRACKED {
                let mut starts: Vec<Instant> = sources.values().map(|(_, s)| *s).collect();
                starts.sort_unstable();
                let cutoff = starts[starts.len() / 2];
                sources.retain(|_, (_, start)| *start > cutoff);
            }
        }
        let entry = sources.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }

    /// Number of sources currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_window_ends() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!l.is_blocked(ip, t0));
            l.record_failure(ip, t0);
        }
        assert!(l.is_blocked(ip, t0 + Duration::from_secs(59)));
        assert!(!l.is_blocked(other, t0));
        assert!(!l.is_blocked(ip, t0 + Duration::from_secs(60)));
        l.record_failure(ip, t0 + Duration::from_secs(61));
        assert!(!l.is_blocked(ip, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn ipv6_grouped_by_64_and_mapped_v4_canonical() {
        let l = FailureLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        l.record_failure("2001:db8::1".parse().unwrap(), t0);
        assert!(l.is_blocked("2001:db8::ffff:2".parse().unwrap(), t0));
        assert!(!l.is_blocked("2001:db8:0:1::1".parse().unwrap(), t0));
        l.record_failure("::ffff:192.0.2.1".parse().unwrap(), t0);
        assert!(l.is_blocked("192.0.2.1".parse().unwrap(), t0));
    }

    #[test]
    fn memory_is_bounded() {
        let l = FailureLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.record_failure(
                IpAddr::V4(i.into()),
                t0 + Duration::from_nanos(u64::from(i)),
            );
        }
        assert!(l.tracked() <= MAX_TRACKED);
    }
}
