//! Fuzzes JWKS documents as an issuer's `jwks_uri` serves them (or an admin pastes them
//! inline): `mcp_tunnel_pki::jwt::parse_jwks`, then `verify` of a token signed by a real
//! key against whatever key set the document yields.
//!
//! Invariants: no panic; and the token is accepted only if the document holds that very
//! public key (its P-256 point), so no shape of key set lets a token through on another
//! key.
#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use libfuzzer_sys::fuzz_target;
use mcp_tunnel_pki::jwt::{Expected, parse_jwks, verify};
use serde_json::{Value, json};

/// A P-256 key made for this target only (PKCS#8, base64); it signs nothing else.
const KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+1ZLgef1bUqmm163WKcYqvfoh5N6zaDdDOprY8z59byhRANCAASvBZog1G1k7Dmkeg6UByihXe/qCAcCI5FmLyP6AqyQXdEgaCUGxe+zz1/HoUbVTPL5qDHIyXabnjLK+3qc3t0i";
const EXPECTED: Expected<'static> = Expected {
    issuer: "https://issuer.example",
    audience: "https://api.example",
    subject: "repo:acme/app:ref:refs/heads/main",
};

/// The signer's public point (x, y as base64url) and a token it signed with kid "k1".
fn signed() -> &'static (String, String, String) {
    static SIGNED: OnceLock<(String, String, String)> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let der = base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .expect("key base64");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).expect("key");
        let point = pair.public_key().as_ref().to_vec();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
        // Valid for a day, so a long campaign does not outlive it.
        let claims = json!({"iss": EXPECTED.issuer, "sub": EXPECTED.subject,
            "aud": EXPECTED.audience, "iat": now, "exp": now + 86_400});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        (
            B64.encode(&point[1..33]),
            B64.encode(&point[33..65]),
            format!("{input}.{}", B64.encode(sig.as_ref())),
        )
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
