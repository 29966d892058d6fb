//! Fuzzes JWKS documents as an issuer's `jwks_uri` serves them (or an admin pastes them
//! inline): `mcp_tunnel_pki::jwt::parse_jwks`, then `verify` of a token signed by a real
//! key against whatever key set the document yields.
//!
//! Invariants: no panic; and the token is accepted only if the document holds that very
//! public key (its P-256 point), so no shape of key set lets a token through on another
//! key.
#![no_main]

#[path = "common/issuer.rs"]
mod issuer;

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use issuer::EXPECTED;
use libfuzzer_sys::fuzz_target;
use mcp_tunnel_pki::jwt::{parse_jwks, verify};
use serde_json::{Value, json};

/// The signer's public point (x, y as base64url) and a token it signed with kid "k1".
fn signed() -> &'static (String, String, String) {
    static SIGNED: OnceLock<(String, String, String)> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let pair = issuer::key_pair();
        let (x, y) = issuer::public_xy(&pair);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
        // Valid for a day, so a long campaign does not outlive it.
        let claims = json!({"iss": EXPECTED.issuer, "sub": EXPECTED.subject,
            "aud": EXPECTED.audience, "iat": now, "exp": now + 86_400});
        let token = issuer::sign(&pair, header.to_string().as_bytes(), claims.to_string().as_bytes());
        (x, y, token)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(set) = parse_jwks(&doc) else {
        return;
    };
    let (x, y, token) = signed();
    if verify(token, &set, &EXPECTED).is_ok() {
        let holds_the_key = doc["keys"].as_array().is_some_and(|keys| {
            keys.iter().any(|k| {
                k["kty"] == "EC" && k["crv"] == "P-256" && k["x"] == x.as_str() && k["y"] == y.as_str()
            })
        });
        assert!(holds_the_key, "accepted on a key set without the signer's key: {doc}");
    }
});
