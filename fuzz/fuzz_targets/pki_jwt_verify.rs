//! Fuzzes workload-identity JWT checks (`mcp_tunnel_pki::jwt::verify`), the gate of the
//! `/v1/oauth/token` exchange. The first byte picks the input's shape:
//! - even: the rest is the token text, as an attacker would send it;
//! - odd: the rest is `header JSON \n claims JSON`, signed with the issuer's real key,
//!   so that the claim checks behind the signature are reached too.
//!
//! Invariant: a token is accepted only if an independent reading of it agrees that the
//! algorithm is ES256 and every claim rule holds.
#![no_main]

#[path = "common/issuer.rs"]
mod issuer;

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::EcdsaKeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use issuer::{EXPECTED, sign};
use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;
use mcp_tunnel_pki::jwt::{LEEWAY_SECS, parse_jwks, verify};
use serde_json::{Value, json};

fn issuer() -> &'static (EcdsaKeyPair, JwkSet) {
    static ISSUER: OnceLock<(EcdsaKeyPair, JwkSet)> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let pair = issuer::key_pair();
        let (x, y) = issuer::public_xy(&pair);
        let jwks = parse_jwks(&json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig", "x": x, "y": y,
        }]}))
        .expect("jwks");
        (pair, jwks)
    })
}

fn part(token: &str, i: usize) -> Value {
    let raw = token.split('.').nth(i).expect("three parts");
    serde_json::from_slice(&B64.decode(raw).expect("base64url")).expect("JSON")
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// What must be true of any token `verify` accepted, read without jsonwebtoken.
fn assert_acceptable(token: &str) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as f64;
    let leeway = LEEWAY_SECS as f64;
    let header = part(token, 0);
    let claims = part(token, 1);
    assert_eq!(header["alg"], "ES256", "only the key's algorithm: {header}");
    assert_eq!(claims["iss"], EXPECTED.issuer, "{claims}");
    assert_eq!(claims["sub"], EXPECTED.subject, "{claims}");
    let aud = &claims["aud"];
    assert!(
        aud == EXPECTED.audience
            || aud
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == EXPECTED.audience)),
        "audience: {claims}"
    );
    let exp = number(&claims["exp"]).expect("exp is required");
    assert!(exp + leeway >= now, "expired: {claims}");
    if let Some(nbf) = claims.get("nbf") {
        let nbf = number(nbf).expect("nbf is a number");
        assert!(nbf - leeway <= now, "not yet valid: {claims}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (pair, jwks) = issuer();
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        let (header, claims) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b"{}"[..]),
        };
        sign(pair, header, claims)
    };
    if let Ok(claims) = verify(&token, jwks, &EXPECTED) {
        assert_eq!(claims.sub, EXPECTED.subject);
        assert_eq!(claims.iss, EXPECTED.issuer);
        assert_acceptable(&token);
    }
});
