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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    // Defaulted so that a missing claim is reported by the required-claims check by
    // name, not as a malformed token.
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
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

#[cfg(test)]
mod tests {
    //! Every refusal at the function level; the API's authorization matrix
    //! (crates/control/tests) checks the same through `/v1/oauth/token`.

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use serde_json::{Value, json};

    use super::*;

    const ISS: &str = "https://issuer.example";
    const AUD: &str = "https://api.example";
    const SUB: &str = "system:serviceaccount:mcp:setup";
    const EXPECTED: Expected<'static> = Expected {
        issuer: ISS,
        audience: AUD,
        subject: SUB,
    };

    struct Issuer {
        pair: EcdsaKeyPair,
        jwks: JwkSet,
    }

    impl Issuer {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let jwks = parse_jwks(&json!({"keys": [{
                "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
                "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
            }]}))
            .unwrap();
            Self { pair, jwks }
        }

        /// A compact JWS over exactly these header and payload objects.
        fn sign(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                B64.encode(header.to_string()),
                B64.encode(claims.to_string())
            );
            let sig = self
                .pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap();
            format!("{input}.{}", B64.encode(sig.as_ref()))
        }

        fn token(&self, claims: &Value) -> String {
            self.sign(&json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}), claims)
        }

        fn check(&self, token: &str) -> Result<Claims, JwtError> {
            verify(token, &self.jwks, &EXPECTED)
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn good() -> Value {
        json!({"iss": ISS, "aud": AUD, "sub": SUB, "exp": now() + 300, "iat": now(), "jti": "j1"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut c = good();
        c[key] = value;
        c
    }

    fn without(key: &str) -> Value {
        let mut c = good();
        c.as_object_mut().unwrap().remove(key);
        c
    }

    #[test]
    fn a_token_that_meets_every_rule_is_accepted() {
        let i = Issuer::new();
        let claims = i.check(&i.token(&good())).unwrap();
        assert_eq!((claims.sub.as_str(), claims.iss.as_str()), (SUB, ISS));
        assert_eq!(claims.jti.as_deref(), Some("j1"));
        // `aud` as a list that contains ours, and no kid with a one-key set.
        let listed = with("aud", json!(["other", AUD]));
        i.check(&i.sign(&json!({"alg": "ES256"}), &listed)).unwrap();
        // Inside the leeway on both ends.
        i.check(&i.token(&with("exp", json!(now() - 10)))).unwrap();
        i.check(&i.token(&with("nbf", json!(now() + 10)))).unwrap();
    }

    #[test]
    fn each_claim_rule_is_refused_by_name() {
        let i = Issuer::new();
        let cases = [
            (with("exp", json!(now() - 120)), JwtError::Expired),
            (with("nbf", json!(now() + 120)), JwtError::NotYetValid),
            (with("iss", json!("https://evil.example")), JwtError::Issuer),
            (with("iss", json!(format!("{ISS}/"))), JwtError::Issuer),
            (
                with("aud", json!("https://api.example.evil")),
                JwtError::Audience,
            ),
            (with("aud", json!([])), JwtError::Audience),
            (with("sub", json!(format!("{SUB}x"))), JwtError::Subject),
            (with("sub", json!(SUB.to_uppercase())), JwtError::Subject),
            (without("exp"), JwtError::MissingClaim("exp".into())),
            (without("iss"), JwtError::MissingClaim("iss".into())),
            (without("aud"), JwtError::MissingClaim("aud".into())),
            (without("sub"), JwtError::MissingClaim("sub".into())),
        ];
        for (claims, want) in cases {
            assert_eq!(i.check(&i.token(&claims)).unwrap_err(), want, "{claims}");
        }
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let i = Issuer::new();
        let token = i.token(&good());
        let (input, sig) = token.rsplit_once('.').unwrap();

        // Another key's signature, a flipped signature byte, a swapped payload.
        let other = Issuer::new();
        assert_eq!(i.check(&other.token(&good())), Err(JwtError::Signature));
        let mut raw = B64.decode(sig).unwrap();
        raw[7] ^= 1;
        let flipped = format!("{input}.{}", B64.encode(&raw));
        assert_eq!(i.check(&flipped), Err(JwtError::Signature));
        let header = input.split('.').next().unwrap();
        let swapped = format!(
            "{header}.{}.{sig}",
            B64.encode(with("sub", json!("attacker")).to_string())
        );
        assert_eq!(i.check(&swapped), Err(JwtError::Signature));

        // Algorithms outside the allow-list, whatever the key says.
        for alg in ["none", "HS256", "HS512"] {
            let t = i.sign(&json!({"alg": alg, "kid": "k1"}), &good());
            assert!(
                matches!(
                    i.check(&t),
                    Err(JwtError::Algorithm(_) | JwtError::Malformed)
                ),
                "{alg}"
            );
        }
        let unsigned = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none"}"#),
            B64.encode(good().to_string())
        );
        assert!(i.check(&unsigned).is_err());

        // A kid the set does not hold; a key of the wrong type for the algorithm.
        let t = i.sign(&json!({"alg": "ES256", "kid": "k2"}), &good());
        assert_eq!(i.check(&t), Err(JwtError::UnknownKey));
        let t = i.sign(&json!({"alg": "RS256", "kid": "k1"}), &good());
        assert!(i.check(&t).is_err());

        // Not a JWT at all, or too long to look at.
        for bad in ["", "a", "a.b", "a.b.c", "..", "eyJ.eyJ.eyJ", "\u{0}"] {
            assert_eq!(i.check(bad), Err(JwtError::Malformed), "{bad:?}");
        }
        let long = format!("{token}{}", "A".repeat(MAX_ASSERTION_BYTES));
        assert_eq!(i.check(&long), Err(JwtError::TooLong));
    }

    #[test]
    fn an_empty_or_invalid_key_set_is_refused() {
        assert!(parse_jwks(&json!({"keys": []})).is_err());
        assert!(parse_jwks(&json!({"keys": "x"})).is_err());
        assert!(parse_jwks(&json!([])).is_err());
    }
}
