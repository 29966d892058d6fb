//! Checking workload-identity JWTs (SPEC §7.2): signature by a key of the issuer's JWKS,
//! `iss`, `aud` and `sub` compared byte for byte, `exp`/`nbf` with a small leeway, and
//! an algorithm allow-list (asymmetric algorithms only: an `HS*` token could be forged
//! by anyone who knows the public JWKS).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest assertion accepted, in bytes.
pub const MAX_ASSERTION_BYTES: usize = 16 * 1024;

/// Algorithms a federation JWT may be signed with.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why an assertion was refused. The message goes to the caller (it names the check,
/// never a key or the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("assertion is longer than {MAX_ASSERTION_BYTES} bytes")]
    TooLong,
    #[error("assertion is not a well-formed JWT")]
    Malformed,
    #[error("assertion algorithm {0} is not allowed (allowed: RS*, PS*, ES256, ES384, EdDSA)")]
    Algorithm(String),
    #[error("no key in the issuer's JWKS matches the assertion's kid")]
    UnknownKey,
    #[error("assertion signature is invalid")]
    Signature,
    #[error("assertion has expired")]
    Expired,
    #[error("assertion is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("assertion issuer (iss) does not match the federation issuer")]
    Issuer,
    #[error("assertion audience (aud) does not match the federation rule")]
    Audience,
    #[error("assertion subject (sub) does not match the federation rule")]
    Subject,
    #[error("assertion is missing the required claim {0}")]
    MissingClaim(String),
    #[error("assertion could not be verified: {0}")]
    Other(String),
}

/// What the rule expects of the token.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub subject: &'a str,
}

/// Claims we read after verification.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    #[serde(default)]
    pub jti: Option<String>,
}

/// Parses a JWKS document.
pub fn parse_jwks(v: &serde_json::Value) -> Result<JwkSet, String> {
    let set: JwkSet = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    if set.keys.is_empty() {
        return Err("the key set has no keys".into());
    }
    Ok(set)
}

/// Verifies `token` against `jwks` and the rule's expectations.
pub fn verify(token: &str, jwks: &JwkSet, expected: &Expected<'_>) -> Result<Claims, JwtError> {
    if token.len() > MAX_ASSERTION_BYTES {
        return Err(JwtError::TooLong);
    }
    let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
    if !ALLOWED_ALGORITHMS.contains(&header.alg) {
        return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid),
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    }
    .ok_or(JwtError::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| JwtError::UnknownKey)?;
    let mut v = Validation::new(header.alg);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.set_issuer(&[expected.issuer]);
    v.set_audience(&[expected.audience]);
    v.sub = Some(expected.subject.to_owned());
    let data = decode::<Claims>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.into_kind() {
            K::InvalidSignature => JwtError::Signature,
            K::ExpiredSignature => JwtError::Expired,
            K::ImmatureSignature => JwtError::NotYetValid,
            K::InvalidIssuer => JwtError::Issuer,
            K::InvalidAudience => JwtError::Audience,
            K::InvalidSubject => JwtError::Subject,
            K::MissingRequiredClaim(c) => JwtError::MissingClaim(c),
            K::InvalidAlgorithm => JwtError::Algorithm(format!("{:?}", header.alg)),
            K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => JwtError::Malformed,
            other => JwtError::Other(format!("{other:?}")),
        }
    })?;
    Ok(data.claims)
}
