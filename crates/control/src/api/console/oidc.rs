//! OpenID Connect sign-in against the organization's provider: discovery, the
//! authorization request (code flow, PKCE S256, state, nonce), the code exchange with
//! the client secret, and the ID token checks (signature by the provider's JWKS, `iss`,
//! `aud`, `azp`, `exp`, `nonce`, verified e-mail).

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use mcp_tunnel_pki::crypto::{self, Secret};
use serde::Deserialize;
use serde_json::Value;

use super::Console;
use super::html::pct;
use crate::jwt::{ALLOWED_ALGORITHMS, LEEWAY_SECS, parse_jwks};
use crate::store::{SsoConfig, check_jwks_url};

/// How long discovery and keys are reused before being fetched again.
const CACHE_TTL: Duration = Duration::from_secs(300);

/// Why an SSO sign-in failed. Messages name the check, never a token.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the identity provider's {what} is invalid: {reason}")]
    BadProvider { what: &'static str, reason: String },
    #[error("the identity provider refused the code exchange (HTTP {status}): {error}")]
    Exchange { status: u16, error: String },
    #[error("the ID token was refused: {0}")]
    IdToken(String),
}

/// The provider's endpoints and keys, as discovered.
#[derive(Debug, Clone)]
pub struct Provider {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks: JwkSet,
}

#[derive(Debug)]
pub struct Cached {
    issuer: String,
    at: Instant,
    provider: Provider,
}

/// An endpoint must be https, or http on loopback (tests), like JWKS URLs.
fn check_endpoint(what: &'static str, url: &str) -> Result<(), OidcError> {
    check_jwks_url(url).map_err(|_| OidcError::BadProvider {
        what,
        reason: format!("{url} is neither https nor http on a loopback address"),
    })
}

impl Console {
    async fn get_json(&self, what: &'static str, url: &str) -> Result<Value, OidcError> {
        check_endpoint(what, url)?;
        let resp = self
            .api
            .http
            .send(http::Method::GET, url, &[], None)
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        if !resp.status.is_success() {
            return Err(OidcError::BadProvider {
                what,
                reason: format!("HTTP {} from {url}", resp.status.as_u16()),
            });
        }
        serde_json::from_slice(&resp.body).map_err(|e| OidcError::BadProvider {
            what,
            reason: format!("not JSON: {e}"),
        })
    }

    /// The provider of `cfg`, from cache unless `refresh`.
    pub(super) async fn provider(
        &self,
        cfg: &SsoConfig,
        refresh: bool,
    ) -> Result<Provider, OidcError> {
        if !refresh {
            let cache = self.oidc.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.as_ref()
                && c.issuer == cfg.issuer
                && c.at.elapsed() < CACHE_TTL
            {
                return Ok(c.provider.clone());
            }
        }
        let url = format!("{}/.well-known/openid-configuration", cfg.issuer);
        let doc = self.get_json("discovery document", &url).await?;
        let field = |name: &str| {
            doc[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| OidcError::BadProvider {
                    what: "discovery document",
                    reason: format!("{name} is missing"),
                })
        };
        let issuer = field("issuer")?;
        if issuer.trim_end_matches('/') != cfg.issuer {
            return Err(OidcError::BadProvider {
                what: "discovery document",
                reason: format!("issuer is {issuer:?}, not the configured {:?}", cfg.issuer),
            });
        }
        let authorization_endpoint = field("authorization_endpoint")?;
        let token_endpoint = field("token_endpoint")?;
        check_endpoint("authorization endpoint", &authorization_endpoint)?;
        check_endpoint("token endpoint", &token_endpoint)?;
        let jwks_doc = self.get_json("JWKS", &field("jwks_uri")?).await?;
        let jwks = parse_jwks(&jwks_doc).map_err(|reason| OidcError::BadProvider {
            what: "JWKS",
            reason,
        })?;
        let provider = Provider {
            authorization_endpoint,
            token_endpoint,
            jwks,
        };
        *self.oidc.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
            issuer: cfg.issuer.clone(),
            at: Instant::now(),
            provider: provider.clone(),
        });
        Ok(provider)
    }

    /// Trades the authorization code for tokens; returns the ID token.
    pub(super) async fn exchange_code(
        &self,
        p: &Provider,
        cfg: &SsoConfig,
        secret: &Secret,
        code: &str,
        redirect_uri: &str,
        verifier: &Secret,
    ) -> Result<String, OidcError> {
        let body = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
            pct(code),
            pct(redirect_uri),
            pct(verifier.expose())
        );
        // RFC 6749 §2.3.1: id and secret form-encoded, then joined for Basic.
        let basic = STANDARD.encode(format!("{}:{}", pct(&cfg.client_id), pct(secret.expose())));
        let headers = [
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept", "application/json".to_owned()),
            ("authorization", format!("Basic {basic}")),
        ];
        let resp = self
            .api
            .http
            .send(
                http::Method::POST,
                &p.token_endpoint,
                &headers,
                Some(body.into_bytes()),
            )
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        if !resp.status.is_success() {
            return Err(OidcError::Exchange {
                status: resp.status.as_u16(),
                error: v["error"].as_str().unwrap_or("no error code").to_owned(),
            });
        }
        v["id_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| OidcError::IdToken("the token response has no id_token".into()))
    }
}

/// The claims the console reads from a verified ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<bool>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    aud: Value,
    #[serde(default)]
    azp: Option<String>,
}

/// Verifies an ID token: signature by a key of `jwks` with an allowed asymmetric
/// algorithm, `iss`, `aud` (and `azp` when there are several audiences), `exp`, `nonce`.
pub fn verify_id_token(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> Result<IdClaims, OidcError> {
    let bad = |m: &str| OidcError::IdToken(m.to_owned());
    let header = decode_header(token).map_err(|_| bad("not a well-formed JWT"))?;
    if !ALLOWED_ALGORITHMS.contains(&header.alg) {
        return Err(bad(&format!("algorithm {:?} is not allowed", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid),
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    }
    .ok_or_else(|| bad("no key of the provider's JWKS matches its kid"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| bad("the provider's key is unusable"))?;
    let mut v = Validation::new(header.alg);
    v.leeway = LEEWAY_SECS;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.set_issuer(&[issuer]);
    v.set_audience(&[client_id]);
    let claims = decode::<IdClaims>(token, &key, &v)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            bad(match e.kind() {
                K::InvalidSignature => "invalid signature",
                K::ExpiredSignature => "expired",
                K::InvalidIssuer => "issuer (iss) does not match",
                K::InvalidAudience => "audience (aud) is not this console's client id",
                K::MissingRequiredClaim(_) => "a required claim is missing",
                _ => "it could not be verified",
            })
        })?
        .claims;
    let several = claims.aud.as_array().is_some_and(|a| a.len() > 1);
    if (several || claims.azp.is_some()) && claims.azp.as_deref() != Some(client_id) {
        return Err(bad(
            "authorized party (azp) is not this console's client id",
        ));
    }
    let got = claims.nonce.as_deref().unwrap_or("");
    if !crypto::ct_eq(got.as_bytes(), nonce.as_bytes()) {
        return Err(bad("nonce does not match this sign-in"));
    }
    Ok(claims)
}

/// The PKCE S256 challenge of a verifier.
pub fn challenge(verifier: &Secret) -> String {
    URL_SAFE_NO_PAD.encode(crypto::sha256(verifier.expose().as_bytes()))
}

/// The authorization request URL (only public values: client id, state, nonce and the
/// challenge; the verifier stays on the server).
pub fn authorize_url(
    p: &Provider,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    challenge: &str,
) -> String {
    let sep = if p.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}\
         &code_challenge={}&code_challenge_method=S256",
        p.authorization_endpoint,
        pct(client_id),
        pct(redirect_uri),
        pct("openid email profile"),
        pct(state),
        pct(nonce),
        pct(challenge)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Key {
        pkcs8: Vec<u8>,
        jwks: JwkSet,
    }

    fn key() -> Key {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let p = pair.public_key().as_ref().to_vec();
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])}]});
        Key {
            pkcs8: doc.as_ref().to_vec(),
            jwks: parse_jwks(&jwks).unwrap(),
        }
    }

    fn sign(k: &Key, claims: Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&k.pkcs8),
        )
        .unwrap()
    }

    #[test]
    fn id_token_checks() {
        let k = key();
        let now = crate::time::now_ms() / 1000;
        let base = serde_json::json!({"iss": "https://idp", "aud": "console", "sub": "u1",
            "exp": now + 300, "iat": now, "nonce": "n-1", "email": "a@example.com",
            "email_verified": true});
        let ok = verify_id_token(
            &sign(&k, base.clone()),
            &k.jwks,
            "https://idp",
            "console",
            "n-1",
        )
        .unwrap();
        assert_eq!(ok.email.as_deref(), Some("a@example.com"));
        let refused = |claims: Value, nonce: &str| {
            verify_id_token(&sign(&k, claims), &k.jwks, "https://idp", "console", nonce)
                .unwrap_err()
                .to_string()
        };
        assert!(refused(base.clone(), "n-2").contains("nonce"));
        let with = |f: &str, v: Value| {
            let mut c = base.clone();
            c[f] = v;
            c
        };
        assert!(refused(with("aud", "other".into()), "n-1").contains("audience"));
        assert!(refused(with("iss", "https://evil".into()), "n-1").contains("issuer"));
        assert!(refused(with("exp", (now - 3600).into()), "n-1").contains("expired"));
        let several = with("aud", serde_json::json!(["console", "other"]));
        assert!(refused(several.clone(), "n-1").contains("azp"));
        let mut good = several;
        good["azp"] = "console".into();
        assert!(verify_id_token(&sign(&k, good), &k.jwks, "https://idp", "console", "n-1").is_ok());
        // Another key's signature, and a symmetric algorithm, are refused.
        let other = key();
        let forged = sign(&other, base.clone());
        assert!(verify_id_token(&forged, &k.jwks, "https://idp", "console", "n-1").is_err());
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &base,
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        let e = verify_id_token(&hs, &k.jwks, "https://idp", "console", "n-1").unwrap_err();
        assert!(e.to_string().contains("not allowed"), "{e}");
    }

    #[test]
    fn pkce_known_answer() {
        // RFC 7636 appendix B.
        let v = Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(challenge(&v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }
}
