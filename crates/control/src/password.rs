//! Console passwords: PBKDF2-HMAC-SHA256 (aws-lc-rs) with a per-password salt, stored as
//! `pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>`.
//!
//! People choose weak passwords, so unlike API keys (high-entropy, SHA-256 is right) a
//! password gets a deliberately slow hash. PBKDF2 is the strongest KDF available without
//! a new crate; 600 000 iterations is OWASP's figure for PBKDF2-HMAC-SHA256.

use std::num::NonZeroU32;

use aws_lc_rs::pbkdf2::{self, PBKDF2_HMAC_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use mcp_tunnel_pki::crypto::{self, Secret};

/// Iterations of new hashes.
pub const ITERATIONS: u32 = 600_000;
/// Fewest iterations a stored hash may have (refuses downgraded rows).
const MIN_ITERATIONS: u32 = 100_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
const SCHEME: &str = "pbkdf2-sha256";
/// Shortest password accepted when one is set.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Hashes `password` with a fresh salt.
pub fn hash(password: &str) -> String {
    let salt = crypto::random_bytes(SALT_LEN);
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    let mut out = [0u8; HASH_LEN];
    pbkdf2::derive(
        PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "{SCHEME}${ITERATIONS}${}${}",
        STANDARD_NO_PAD.encode(&salt),
        STANDARD_NO_PAD.encode(out)
    )
}

/// Whether `password` matches `stored` (constant time in the hash comparison). A
/// malformed stored value never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(iter), Some(salt), Some(expected), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Some(iterations) = iter
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= MIN_ITERATIONS)
        .and_then(NonZeroU32::new)
    else {
        return false;
    };
    let (Ok(salt), Ok(expected)) = (
        STANDARD_NO_PAD.decode(salt),
        STANDARD_NO_PAD.decode(expected),
    ) else {
        return false;
    };
    pbkdf2::verify(
        PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

/// Spends the time of one verification, so that an unknown login answers as slowly as
/// a wrong password.
pub fn burn(password: &str) {
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    let mut out = [0u8; HASH_LEN];
    pbkdf2::derive(
        PBKDF2_HMAC_SHA256,
        iterations,
        b"mcp-tunnel-no-user",
        password.as_bytes(),
        &mut out,
    );
}

/// A random password for the bootstrap admin: 24 base-62 characters (~142 bits).
pub fn generate() -> Secret {
    const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::new();
    while s.len() < 24 {
        for b in crypto::random_bytes(32) {
            // 248 = 4 * 62: values above it would bias the alphabet.
            if b < 248 && s.len() < 24 {
                s.push(ALNUM[usize::from(b) % ALNUM.len()] as char);
            }
        }
    }
    Secret::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let h = hash("correct horse battery staple");
        assert!(h.starts_with("pbkdf2-sha256$600000$"), "{h}");
        assert!(verify("correct horse battery staple", &h));
        assert!(!verify("correct horse battery stapl", &h));
        assert_ne!(h, hash("correct horse battery staple"), "salted");
        assert!(!verify("x", "garbage"));
        assert!(!verify("x", ""));
        // A row rewritten to a cheap iteration count is refused.
        let cheap = h.replacen("$600000$", "$1000$", 1);
        assert!(!verify("correct horse battery staple", &cheap));
        let p = generate();
        assert_eq!(p.expose().len(), 24);
        assert!(p.expose().bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
