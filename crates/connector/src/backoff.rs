//! Exponential backoff with jitter for reconnects, applied from the very first attempt so
//! that a fleet of connectors restarting together does not hit the edge in lockstep.

use std::time::Duration;

/// Delay policy: `initial · 2^attempt`, capped at `max`, then scaled by a random factor
/// in [0.5, 1.0) ("equal jitter": never zero, never above the cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based), with `unit` in [0, 1) as the jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(31)));
        let capped = exp.min(self.max);
        capped.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Jitter before the first attempt: up to `initial`, spreading a synchronized start.
    pub fn first(&self, unit: f64) -> Duration {
        self.initial.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A uniform random number in [0, 1) from the system CSPRNG.
pub fn unit_random() -> f64 {
    let b = mcp_tunnel_pki::crypto::random_bytes(8);
    let mut a = [0u8; 8];
    a.copy_from_slice(&b);
    (u64::from_le_bytes(a) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(2));
        assert!(b.first(0.5) <= b.initial);
        let u = unit_random();
        assert!((0.0..1.0).contains(&u));
    }
}
