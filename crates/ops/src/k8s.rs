//! The few Kubernetes REST calls the security operations need: read and delete Secrets
//! (`/api/v1/namespaces/{ns}/secrets/{name}`), with a bearer token, as kubectl does. In a
//! pod the defaults come from the service account mount; outside, from flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use http::Method;
use mcp_tunnel_control::http_client::{HttpClient, HttpError};
use mcp_tunnel_pki::crypto::Secret;

/// The service account mount of a pod.
pub const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("Kubernetes API {method} {path}: HTTP {status}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("Kubernetes API: {0}")]
    Config(String),
    #[error("Secret {name}: key {key:?} is not valid base64")]
    BadData { name: String, key: String },
}

/// Where the API server is and how to authenticate.
#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// `https://host:port`; default from `KUBERNETES_SERVICE_HOST`/`_PORT`.
    pub api_url: Option<String>,
    /// Bearer token file; default the service account token.
    pub token_file: Option<PathBuf>,
    /// CA bundle of the API server; default the service account's `ca.crt`.
    pub ca_file: Option<PathBuf>,
    /// Default: the service account's namespace, else `default`.
    pub namespace: Option<String>,
}

#[derive(Debug, Clone)]
pub struct KubeClient {
    base: String,
    token: Option<Secret>,
    pub namespace: String,
    http: HttpClient,
}

impl KubeClient {
    pub fn new(o: &KubeOptions) -> Result<Self, KubeError> {
        let sa = Path::new(SA_DIR);
        let base = match &o.api_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    KubeError::Config(
                        "no --kube-api-url and not in a pod (KUBERNETES_SERVICE_HOST unset)".into(),
                    )
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let token_file = o.token_file.clone().or_else(|| {
            let p = sa.join("token");
            p.exists().then_some(p)
        });
        let token = match token_file {
            Some(p) => Some(Secret::new(
                std::fs::read_to_string(&p)
                    .map_err(|e| {
                        KubeError::Config(format!(
                            "token file {}: {}",
                            p.display(),
                            mcp_tunnel_pki::tls::io_reason(&e)
                        ))
                    })?
                    .trim()
                    .to_owned(),
            )),
            None => None,
        };
        let ca = o.ca_file.clone().or_else(|| {
            let p = sa.join("ca.crt");
            p.exists().then_some(p)
        });
        let namespace = match &o.namespace {
            Some(n) => n.clone(),
            None => std::fs::read_to_string(sa.join("namespace"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "default".into()),
        };
        Ok(Self {
            base,
            token,
            namespace,
            http: HttpClient::new(ca.as_deref())?.with_timeout(Duration::from_secs(20)),
        })
    }

    /// The Secret's URL path; names are DNS-1123 subdomains, so nothing else can reach
    /// the path.
    fn secret_path(&self, name: &str) -> Result<String, KubeError> {
        for (what, v) in [
            ("Secret name", name),
            ("namespace", self.namespace.as_str()),
        ] {
            let ok = !v.is_empty()
                && v.len() <= 253
                && v.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !v.starts_with(['-', '.'])
                && !v.ends_with(['-', '.']);
            if !ok {
                return Err(KubeError::Config(format!(
                    "invalid {what} {v:?} (lowercase letters, digits, '-' and '.')"
                )));
            }
        }
        Ok(format!(
            "/api/v1/namespaces/{}/secrets/{}",
            self.namespace, name
        ))
    }

    async fn send(&self, method: Method, path: &str) -> Result<(u16, Vec<u8>), KubeError> {
        self.send_body(method, path, None).await
    }

    async fn send_body(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), KubeError> {
        let mut headers = vec![("accept", "application/json".to_owned())];
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {}", t.expose())));
        }
        let resp = self
            .http
            .send(method, &format!("{}{path}", self.base), &headers, body)
            .await?;
        Ok((resp.status.as_u16(), resp.body.to_vec()))
    }

    fn status_error(method: &str, path: &str, status: u16, body: &[u8]) -> KubeError {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
        KubeError::Status {
            method: method.into(),
            path: path.into(),
            status,
            message,
        }
    }

    /// The Secret's decoded `data`, or `None` if it does not exist.
    pub async fn get_secret(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, KubeError> {
        let path = self.secret_path(name)?;
        let (status, body) = self.send(Method::GET, &path).await?;
        match status {
            200 => {}
            404 => return Ok(None),
            s => return Err(Self::status_error("GET", &path, s, &body)),
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| KubeError::Config(format!("GET {path}: not JSON ({e})")))?;
        let mut out = BTreeMap::new();
        for (k, val) in v["data"].as_object().into_iter().flatten() {
            let s = val.as_str().unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| KubeError::BadData {
                    name: name.into(),
                    key: k.clone(),
                })?;
            out.insert(k.clone(), bytes);
        }
        Ok(Some(out))
    }

    /// Sets keys of an existing Secret: read, change, replace with its
    /// `resourceVersion`, so a concurrent writer makes this fail (409) instead of being
    /// overwritten.
    pub async fn update_secret_data(
        &self,
        name: &str,
        updates: &[(&str, &[u8])],
    ) -> Result<(), KubeError> {
        let path = self.secret_path(name)?;
        let (status, body) = self.send(Method::GET, &path).await?;
        if status != 200 {
            return Err(Self::status_error("GET", &path, status, &body));
        }
        let mut obj: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| KubeError::Config(format!("GET {path}: not JSON ({e})")))?;
        if !obj["data"].is_object() {
            obj["data"] = serde_json::json!({});
        }
        for (k, v) in updates {
            obj["data"][*k] = base64::engine::general_purpose::STANDARD.encode(v).into();
        }
        let (status, body) = self
            .send_body(Method::PUT, &path, Some(obj.to_string().into_bytes()))
            .await?;
        match status {
            200 | 201 => Ok(()),
            s => Err(Self::status_error("PUT", &path, s, &body)),
        }
    }

    /// Deletes a Secret; `Ok(false)` when it was already gone (`--ignore-not-found`).
    pub async fn delete_secret(&self, name: &str) -> Result<bool, KubeError> {
        let path = self.secret_path(name)?;
        let (status, body) = self.send(Method::DELETE, &path).await?;
        match status {
            200 | 202 => Ok(true),
            404 => Ok(false),
            s => Err(Self::status_error("DELETE", &path, s, &body)),
        }
    }
}
