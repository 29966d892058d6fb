//! A client of our API for the CLI: credentials, the SDK's headers, the error envelope.

use std::path::{Path, PathBuf};

pub use http::Method;
use mcp_tunnel_pki::crypto::Secret;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{API_VERSION, TUNNELS_BETA};
use crate::http_client::{HttpClient, HttpError};

/// Environment variables the CLI reads.
pub const API_URL_ENV: &str = "MCP_TUNNEL_API_URL";
pub const API_KEY_ENV: &str = "MCP_TUNNEL_API_KEY";
pub const CA_FILE_ENV: &str = "MCP_TUNNEL_CA_FILE";
pub const CREDENTIALS_FILE_ENV: &str = "MCP_TUNNEL_CREDENTIALS_FILE";
pub const DEFAULT_API_URL: &str = "https://127.0.0.1:8443";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{kind} (HTTP {status}): {message}")]
    Api {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("unexpected response (HTTP {status}): {body}")]
    Unexpected { status: u16, body: String },
    #[error(
        "no API key: set {API_KEY_ENV}, pass --api-key-file, or write a credentials file ({CREDENTIALS_FILE_ENV})"
    )]
    NoKey,
    #[error("credentials file {path}: {reason}")]
    Credentials { path: String, reason: String },
}

/// `{"api_url", "api_key", "ca_file"}`, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    pub api_url: Option<String>,
    pub api_key: Option<String>,
    pub ca_file: Option<PathBuf>,
}

impl CredentialsFile {
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let err = |reason: String| ClientError::Credentials {
            path: path.display().to_string(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| err(mcp_tunnel_pki::tls::io_reason(&e)))?;
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

/// A configured API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    key: Secret,
    workspace: Option<String>,
    http: HttpClient,
}

impl ApiClient {
    pub fn new(
        base: &str,
        key: Secret,
        ca_file: Option<&Path>,
        workspace: Option<String>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            workspace,
            http: HttpClient::new(ca_file)?,
        })
    }

    /// Sends a request with the SDK's headers; returns the JSON body of a 2xx.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let text = self.call_text(method, path, body).await?;
        serde_json::from_str(&text).map_err(|_| ClientError::Unexpected {
            status: 200,
            body: text,
        })
    }

    /// Like [`call`](Self::call), returning the body as text (the JSONL export).
    pub async fn call_text(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String, ClientError> {
        let mut headers = vec![
            ("anthropic-version", API_VERSION.to_owned()),
            ("anthropic-beta", TUNNELS_BETA.to_owned()),
            ("authorization", format!("Bearer {}", self.key.expose())),
        ];
        if let Some(ws) = &self.workspace {
            headers.push(("anthropic-workspace-id", ws.clone()));
        }
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .send(
                method,
                &url,
                &headers,
                body.map(|b| b.to_string().into_bytes()),
            )
            .await?;
        let status = resp.status.as_u16();
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        if resp.status.is_success() {
            return Ok(text);
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(v) if v["type"] == "error" => Err(ClientError::Api {
                status,
                kind: v["error"]["type"].as_str().unwrap_or("error").to_owned(),
                message: v["error"]["message"].as_str().unwrap_or("").to_owned(),
            }),
            _ => Err(ClientError::Unexpected { status, body: text }),
        }
    }
}
