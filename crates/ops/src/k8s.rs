//! The few Kubernetes REST calls the security operations need: read, update and delete
//! Secrets (`/api/v1/namespaces/{ns}/secrets/{name}`), with a bearer token, as kubectl
//! does, over setup's [`SecretsApi`]. In a pod the defaults come from the service account
//! mount; outside, from flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use http::Method;
use mcp_tunnel_control::http_client::{HttpClient, HttpError};
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_setup::k8s::{ApiAnswer, ApiCallError, SecretsApi, api_message};

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
    api: SecretsApi,
    pub namespace: String,
}

impl KubeClient {
    pub fn new(o: &KubeOptions) -> Result<Self, KubeError> {
        let sa = Path::new(SA_DIR);
        let base = match &o.api_url {
            Some(u) => u.clone(),
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
        let http = HttpClient::new(ca.as_deref())?.with_timeout(Duration::from_secs(20));
        Ok(Self {
            api: SecretsApi::new(&base, token, namespace.clone(), http),
            namespace,
        })
    }

    async fn send(
        &self,
        method: Method,
        name: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ApiAnswer, KubeError> {
        self.api
            .call(method, name, body)
            .await
            .map_err(|e| match e {
                ApiCallError::Http { source, .. } => KubeError::Http(source),
                other => KubeError::Config(other.to_string()),
            })
    }

    fn status_error(method: &str, a: &ApiAnswer) -> KubeError {
        KubeError::Status {
            method: method.into(),
            path: a.path.clone(),
            status: a.status,
            message: api_message(&a.body),
        }
    }

    /// The Secret's decoded `data`, or `None` if it does not exist.
    pub async fn get_secret(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, KubeError> {
        let a = self.send(Method::GET, name, None).await?;
        match a.status {
            200 => {}
            404 => return Ok(None),
            _ => return Err(Self::status_error("GET", &a)),
        }
        let v: serde_json::Value = serde_json::from_slice(&a.body)
            .map_err(|e| KubeError::Config(format!("GET {}: not JSON ({e})", a.path)))?;
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
        let a = self.send(Method::GET, name, None).await?;
        if a.status != 200 {
            return Err(Self::status_error("GET", &a));
        }
        let mut obj: serde_json::Value = serde_json::from_slice(&a.body)
            .map_err(|e| KubeError::Config(format!("GET {}: not JSON ({e})", a.path)))?;
        if !obj["data"].is_object() {
            obj["data"] = serde_json::json!({});
        }
        for (k, v) in updates {
            obj["data"][*k] = base64::engine::general_purpose::STANDARD.encode(v).into();
        }
        let a = self
            .send(Method::PUT, name, Some(obj.to_string().into_bytes()))
            .await?;
        match a.status {
            200 | 201 => Ok(()),
            _ => Err(Self::status_error("PUT", &a)),
        }
    }

    /// Deletes a Secret; `Ok(false)` when it was already gone (`--ignore-not-found`).
    pub async fn delete_secret(&self, name: &str) -> Result<bool, KubeError> {
        let a = self.send(Method::DELETE, name, None).await?;
        match a.status {
            200 | 202 => Ok(true),
            404 => Ok(false),
            _ => Err(Self::status_error("DELETE", &a)),
        }
    }
}
