//! Setup's identity at the Tunnels API (SPEC §9): a Tunnels API key in `API_TOKEN`, or
//! workload identity federation — an OIDC token from the platform exchanged at
//! `POST /v1/oauth/token` for a short-lived access token, as the official SDKs do.

use std::path::{Path, PathBuf};

use http::Method;
use mcp_tunnel_control::api::auth::API_VERSION;
use mcp_tunnel_control::client::ApiClient;
use mcp_tunnel_control::http_client::HttpClient;
use mcp_tunnel_pki::crypto::Secret;
use serde_json::{Value, json};

use crate::error::SetupError;

pub const API_TOKEN_ENV: &str = "API_TOKEN";
pub const RULE_ENV: &str = "ANTHROPIC_FEDERATION_RULE_ID";
pub const ORG_ENV: &str = "ANTHROPIC_ORGANIZATION_ID";
pub const WORKSPACE_ENV: &str = "ANTHROPIC_WORKSPACE_ID";
pub const SERVICE_ACCOUNT_ENV: &str = "ANTHROPIC_SERVICE_ACCOUNT_ID";
pub const IDENTITY_TOKEN_FILE_ENV: &str = "ANTHROPIC_IDENTITY_TOKEN_FILE";
pub const IDENTITY_TOKEN_ENV: &str = "ANTHROPIC_IDENTITY_TOKEN";

const FEDERATION_BETA: &str = "oidc-federation-2026-04-01";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Where the federation assertion comes from.
#[derive(Debug, Clone)]
pub enum IdentityToken {
    /// Re-read on use: platforms rotate projected tokens in place.
    File(PathBuf),
    Inline(Secret),
}

/// How setup authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    ApiKey {
        key: Secret,
        workspace_id: Option<String>,
    },
    Federation {
        rule_id: String,
        organization_id: String,
        workspace_id: Option<String>,
        service_account_id: Option<String>,
        token: IdentityToken,
    },
}

impl Credentials {
    /// From the environment (`env` looks a variable up; empty counts as unset).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, SetupError> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let api_token = get(API_TOKEN_ENV);
        let rule = get(RULE_ENV);
        let org = get(ORG_ENV);
        let token_file = get(IDENTITY_TOKEN_FILE_ENV);
        let token_inline = get(IDENTITY_TOKEN_ENV);
        let workspace_id = get(WORKSPACE_ENV);
        let wif_any =
            rule.is_some() || org.is_some() || token_file.is_some() || token_inline.is_some();
        if let Some(key) = api_token {
            if wif_any {
                return Err(SetupError::Credentials(format!(
                    "both {API_TOKEN_ENV} and workload identity variables are set: set only one kind of credential"
                )));
            }
            return Ok(Self::ApiKey {
                key: Secret::new(key.trim()),
                workspace_id,
            });
        }
        if !wif_any {
            return Err(SetupError::Credentials(format!(
                "no credentials: set {API_TOKEN_ENV} to a Tunnels API key, or workload identity federation with {RULE_ENV}, {ORG_ENV} and one of {IDENTITY_TOKEN_FILE_ENV} / {IDENTITY_TOKEN_ENV}"
            )));
        }
        let missing = |name: &str| {
            SetupError::Credentials(format!(
                "workload identity federation needs {name} (set {RULE_ENV}, {ORG_ENV} and one of {IDENTITY_TOKEN_FILE_ENV} / {IDENTITY_TOKEN_ENV})"
            ))
        };
        let rule_id = rule.ok_or_else(|| missing(RULE_ENV))?;
        let organization_id = org.ok_or_else(|| missing(ORG_ENV))?;
        let token = match (token_file, token_inline) {
            (Some(f), None) => IdentityToken::File(PathBuf::from(f)),
            (None, Some(t)) => IdentityToken::Inline(Secret::new(t.trim())),
            (Some(_), Some(_)) => {
                return Err(SetupError::Credentials(format!(
                    "set exactly one of {IDENTITY_TOKEN_FILE_ENV} and {IDENTITY_TOKEN_ENV}, not both"
                )));
            }
            (None, None) => {
                return Err(SetupError::Credentials(format!(
                    "workload identity federation needs one of {IDENTITY_TOKEN_FILE_ENV} / {IDENTITY_TOKEN_ENV}"
                )));
            }
        };
        Ok(Self::Federation {
            rule_id,
            organization_id,
            workspace_id,
            service_account_id: get(SERVICE_ACCOUNT_ENV),
            token,
        })
    }

    /// An API client authenticated as this identity (exchanging first if federated).
    pub async fn client(
        &self,
        api_url: &str,
        ca_file: Option<&Path>,
    ) -> Result<ApiClient, SetupError> {
        let api = |e| SetupError::Api {
            step: "connect",
            source: e,
        };
        match self {
            Self::ApiKey { key, workspace_id } => {
                ApiClient::new(api_url, key.clone(), ca_file, workspace_id.clone()).map_err(api)
            }
            Self::Federation { .. } => {
                let token = self.exchange(api_url, ca_file).await?;
                ApiClient::new(api_url, token, ca_file, None).map_err(api)
            }
        }
    }

    async fn exchange(&self, api_url: &str, ca_file: Option<&Path>) -> Result<Secret, SetupError> {
        let Self::Federation {
            rule_id,
            organization_id,
            workspace_id,
            service_account_id,
            token,
        } = self
        else {
            return Err(SetupError::Exchange("not a federated identity".into()));
        };
        let assertion = match token {
            IdentityToken::Inline(t) => t.clone(),
            IdentityToken::File(p) => Secret::new(
                std::fs::read_to_string(p)
                    .map(|s| s.trim().to_owned())
                    .map_err(|e| {
                        SetupError::Credentials(format!(
                            "{IDENTITY_TOKEN_FILE_ENV}: cannot read {}: {}",
                            p.display(),
                            mcp_tunnel_pki::tls::io_reason(&e)
                        ))
                    })?,
            ),
        };
        let mut body = json!({
            "grant_type": GRANT_TYPE,
            "assertion": assertion.expose(),
            "federation_rule_id": rule_id,
            "organization_id": organization_id,
        });
        if let Some(w) = workspace_id {
            body["workspace_id"] = json!(w);
        }
        if let Some(s) = service_account_id {
            body["service_account_id"] = json!(s);
        }
        let http = HttpClient::new(ca_file).map_err(|e| SetupError::Exchange(e.to_string()))?;
        let url = format!("{}/v1/oauth/token", api_url.trim_end_matches('/'));
        let headers = [
            ("anthropic-beta", FEDERATION_BETA.to_owned()),
            ("anthropic-version", API_VERSION.to_owned()),
        ];
        let resp = http
            .send(
                Method::POST,
                &url,
                &headers,
                Some(body.to_string().into_bytes()),
            )
            .await
            .map_err(|e| SetupError::Exchange(e.to_string()))?;
        let answer: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        if !resp.status.is_success() {
            let message = answer["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).into_owned());
            return Err(SetupError::Exchange(format!(
                "HTTP {}: {message}",
                resp.status.as_u16()
            )));
        }
        answer["access_token"]
            .as_str()
            .map(Secret::new)
            .ok_or_else(|| SetupError::Exchange("the answer has no access_token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn credential_rules() {
        assert!(matches!(
            Credentials::from_env(env(&[(API_TOKEN_ENV, "mtk_x")])).unwrap(),
            Credentials::ApiKey { .. }
        ));
        let wif = Credentials::from_env(env(&[
            (RULE_ENV, "fdrl_1"),
            (ORG_ENV, "org"),
            (IDENTITY_TOKEN_FILE_ENV, "/t"),
        ]))
        .unwrap();
        assert!(matches!(
            wif,
            Credentials::Federation {
                token: IdentityToken::File(_),
                ..
            }
        ));
        let err =
            |pairs: &[(&str, &str)]| Credentials::from_env(env(pairs)).unwrap_err().to_string();
        assert!(err(&[]).contains("no credentials"));
        assert!(
            err(&[
                (RULE_ENV, "r"),
                (ORG_ENV, "o"),
                (IDENTITY_TOKEN_FILE_ENV, "/t"),
                (IDENTITY_TOKEN_ENV, "jwt")
            ])
            .contains("exactly one")
        );
        assert!(err(&[(RULE_ENV, "r"), (IDENTITY_TOKEN_ENV, "jwt")]).contains(ORG_ENV));
        assert!(err(&[(RULE_ENV, "r"), (ORG_ENV, "o")]).contains(IDENTITY_TOKEN_ENV));
        assert!(err(&[(API_TOKEN_ENV, "k"), (RULE_ENV, "r")]).contains("only one"));
        // Secrets stay out of Debug.
        let c = Credentials::from_env(env(&[(API_TOKEN_ENV, "mtk_secret")])).unwrap();
        assert!(!format!("{c:?}").contains("mtk_secret"));
    }
}
