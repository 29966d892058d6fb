//! The workload-identity issuer the JWT fuzz targets sign with: a P-256 key made for
//! them only, and what the rule under test expects.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use mcp_tunnel_pki::jwt::Expected;

/// PKCS#8, base64; it signs nothing outside the fuzz targets.
const KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+1ZLgef1bUqmm163WKcYqvfoh5N6zaDdDOprY8z59byhRANCAASvBZog1G1k7Dmkeg6UByihXe/qCAcCI5FmLyP6AqyQXdEgaCUGxe+zz1/HoUbVTPL5qDHIyXabnjLK+3qc3t0i";

pub const EXPECTED: Expected<'static> = Expected {
    issuer: "https://issuer.example",
    audience: "https://api.example",
    subject: "repo:acme/app:ref:refs/heads/main",
};

pub fn key_pair() -> EcdsaKeyPair {
    let der = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key base64");
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).expect("key")
}

/// The public point's x and y, base64url, as a JWK carries them.
pub fn public_xy(pair: &EcdsaKeyPair) -> (String, String) {
    let point = pair.public_key().as_ref();
    (B64.encode(&point[1..33]), B64.encode(&point[33..65]))
}

/// A compact JWS over these header and claims bytes.
pub fn sign(pair: &EcdsaKeyPair, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let sig = pair
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", B64.encode(sig.as_ref()))
}
