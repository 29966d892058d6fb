//! `k8s-secret:NAME`: the Secret in the pod's namespace, through the Kubernetes REST API
//! with the pod's service-account token — `GET` then `PUT` of
//! `/api/v1/namespaces/{ns}/secrets/{name}`, nothing else. The Helm chart creates the
//! Secret empty and its Role allows only get/update/patch on that one name (RBAC cannot
//! limit `create` to a name), so a missing Secret is an error here, not created.
//!
//! Updates carry the `resourceVersion` that was read: a concurrent writer makes the
//! update fail with 409 instead of being overwritten, and the write is retried once
//! over a fresh read. The API replaces a Secret's data as a whole, so every key is
//! switched in one step, which is as atomic as a directory rename.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use http::Method;
use mcp_tunnel_control::http_client::{HttpClient, HttpError};
use mcp_tunnel_pki::crypto::Secret;
use serde_json::{Value, json};

use crate::keys;
use crate::output::Contents;

/// Where Kubernetes mounts a pod's service-account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Overrides [`SERVICE_ACCOUNT_DIR`] (a token mounted elsewhere, or tests).
pub const SERVICE_ACCOUNT_DIR_ENV: &str = "MCP_TUNNEL_K8S_SERVICE_ACCOUNT_DIR";

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error(
        "not inside Kubernetes: KUBERNETES_SERVICE_HOST is not set (k8s-secret: outputs work from a pod only; use dir:/path elsewhere)"
    )]
    NotInCluster,
    #[error("cannot read the service account's {what} at {path}: {reason}")]
    ServiceAccount {
        what: &'static str,
        path: String,
        reason: String,
    },
    /// The call could not be made: a bad Secret name or namespace, or the HTTP exchange.
    #[error(transparent)]
    Call(#[from] ApiCallError),
    #[error(
        "Secret {namespace}/{name} does not exist: create it empty first (`kubectl -n {namespace} create secret generic {name}`; the Helm chart does this), setup's RBAC allows no create"
    )]
    NotFound { namespace: String, name: String },
    #[error(
        "Kubernetes API refused {method} on Secret {namespace}/{name} (HTTP {status}): {message} — the service account needs get and update on this Secret"
    )]
    Refused {
        method: Method,
        namespace: String,
        name: String,
        status: u16,
        message: String,
    },
    #[error("Secret {namespace}/{name} changed while setup was writing it, twice: re-run setup")]
    Conflict { namespace: String, name: String },
    #[error("Kubernetes API returned an unexpected answer for Secret {name}: {reason}")]
    Shape { name: String, reason: String },
}

/// How to reach the API server and as whom.
#[derive(Debug, Clone)]
pub struct K8sConfig {
    /// `https://host:port`
    pub api_url: String,
    pub token: Secret,
    /// The API server's CA (the service account's `ca.crt`).
    pub ca_file: PathBuf,
    pub namespace: String,
}

impl K8sConfig {
    /// From inside a pod: `KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's
    /// token and CA, and the namespace from `POD_NAMESPACE` (the chart sets it) or the
    /// service account's `namespace` file.
    pub fn in_cluster(env: impl Fn(&str) -> Option<String>) -> Result<Self, K8sError> {
        let host = env("KUBERNETES_SERVICE_HOST")
            .filter(|h| !h.is_empty())
            .ok_or(K8sError::NotInCluster)?;
        let port = env("KUBERNETES_SERVICE_PORT")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let dir = env(SERVICE_ACCOUNT_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR));
        let read = |what: &'static str, name: &str| -> Result<String, K8sError> {
            let p = dir.join(name);
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| K8sError::ServiceAccount {
                    what,
                    path: p.display().to_string(),
                    reason: mcp_tunnel_pki::tls::io_reason(&e),
                })
        };
        let token = Secret::new(read("token", "token")?);
        let namespace = match env("POD_NAMESPACE").filter(|n| !n.is_empty()) {
            Some(ns) => ns,
            None => read("namespace", "namespace")?,
        };
        Ok(Self {
            api_url: format!("https://{host}:{port}"),
            token,
            ca_file: dir.join("ca.crt"),
            namespace,
        })
    }
}

/// The Secrets of one namespace on a Kubernetes API server, reached with a bearer token:
/// the one HTTP path to Secrets for setup (`k8s-secret:`) and for the security
/// operations (doctor, rotate, teardown).
#[derive(Debug, Clone)]
pub struct SecretsApi {
    /// `https://host:port`, no trailing slash.
    base: String,
    token: Option<Secret>,
    namespace: String,
    http: HttpClient,
}

/// What the API server answered to one call.
#[derive(Debug)]
pub struct ApiAnswer {
    /// The Secret's URL path, for error messages.
    pub path: String,
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a call could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    #[error("invalid {what} {value:?} (lowercase letters, digits, '-' and '.')")]
    InvalidName { what: &'static str, value: String },
    #[error("Kubernetes API {method} {path}: {source}")]
    Http {
        method: Method,
        path: String,
        #[source]
        source: HttpError,
    },
}

impl SecretsApi {
    pub fn new(api_url: &str, token: Option<Secret>, namespace: String, http: HttpClient) -> Self {
        Self {
            base: api_url.trim_end_matches('/').to_owned(),
            token,
            namespace,
            http,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Secret's URL path. Names and namespaces are DNS-1123 subdomains, so nothing
    /// else can reach the path.
    pub fn path(&self, name: &str) -> Result<String, ApiCallError> {
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
                return Err(ApiCallError::InvalidName {
                    what,
                    value: v.to_owned(),
                });
            }
        }
        Ok(format!(
            "/api/v1/namespaces/{}/secrets/{name}",
            self.namespace
        ))
    }

    /// One call on the Secret `name`; any HTTP status is an answer.
    pub async fn call(
        &self,
        method: Method,
        name: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ApiAnswer, ApiCallError> {
        let path = self.path(name)?;
        let mut headers = vec![("accept", "application/json".to_owned())];
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {}", t.expose())));
        }
        let resp = self
            .http
            .send(
                method.clone(),
                &format!("{}{path}", self.base),
                &headers,
                body,
            )
            .await
            .map_err(|source| ApiCallError::Http {
                method,
                path: path.clone(),
                source,
            })?;
        Ok(ApiAnswer {
            path,
            status: resp.status.as_u16(),
            body: resp.body.to_vec(),
        })
    }
}

/// The `message` of a Kubernetes `Status` body, else the start of the body.
pub fn api_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

/// One Secret, read and updated through the API.
#[derive(Debug)]
pub struct K8sSecret {
    api: SecretsApi,
    name: String,
    /// The object as last read, for the next update.
    last: Mutex<Option<Value>>,
}

impl K8sSecret {
    pub fn new(config: K8sConfig, name: String) -> Result<Self, K8sError> {
        let http = HttpClient::new(Some(Path::new(&config.ca_file))).map_err(|e| {
            K8sError::ServiceAccount {
                what: "CA certificate",
                path: config.ca_file.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let api = SecretsApi::new(&config.api_url, Some(config.token), config.namespace, http);
        api.path(&name)?;
        Ok(Self {
            api,
            name,
            last: Mutex::new(None),
        })
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.api.namespace(), self.name)
    }

    async fn send(&self, method: Method, body: Option<&Value>) -> Result<(u16, Value), K8sError> {
        let answer = self
            .api
            .call(
                method.clone(),
                &self.name,
                body.map(|b| b.to_string().into_bytes()),
            )
            .await?;
        let value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        match answer.status {
            200..=299 | 409 => Ok((answer.status, value)),
            404 => Err(K8sError::NotFound {
                namespace: self.api.namespace().to_owned(),
                name: self.name.clone(),
            }),
            status => Err(K8sError::Refused {
                method,
                namespace: self.api.namespace().to_owned(),
                name: self.name.clone(),
                status,
                message: api_message(&answer.body),
            }),
        }
    }

    async fn get(&self) -> Result<Value, K8sError> {
        let (_, obj) = self.send(Method::GET, None).await?;
        if obj["kind"] != "Secret" {
            return Err(self.shape("the object read is not a Secret"));
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(obj.clone());
        Ok(obj)
    }

    fn shape(&self, reason: &str) -> K8sError {
        K8sError::Shape {
            name: self.name.clone(),
            reason: reason.to_owned(),
        }
    }

    /// The Secret's data, decoded; only setup's keys.
    pub async fn read(&self) -> Result<Contents, K8sError> {
        let obj = self.get().await?;
        decode_data(&obj).map_err(|r| self.shape(&r))
    }

    /// Merges `changes` into the Secret's data and updates it, retrying once over a
    /// fresh read when someone else updated it in between.
    pub async fn write(&self, changes: &Contents) -> Result<(), K8sError> {
        for attempt in 0..2 {
            let cached = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let obj = match cached {
                Some(o) if attempt == 0 => o,
                _ => self.get().await?,
            };
            let current = decode_data(&obj).map_err(|r| self.shape(&r))?;
            if changes.iter().all(|(k, v)| current.get(k) == Some(v)) {
                return Ok(());
            }
            let updated = with_data(obj, changes);
            let (status, answer) = self.send(Method::PUT, Some(&updated)).await?;
            if status == 409 {
                continue;
            }
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
            return Ok(());
        }
        Err(K8sError::Conflict {
            namespace: self.api.namespace().to_owned(),
            name: self.name.clone(),
        })
    }
}

/// The data of a Secret object as the API returns it, decoded; only setup's keys.
pub fn decode_data(obj: &Value) -> Result<Contents, String> {
    let mut out = Contents::new();
    let Some(data) = obj.get("data").filter(|d| !d.is_null()) else {
        return Ok(out);
    };
    let data = data.as_object().ok_or("data is not an object")?;
    for key in keys::ALL {
        if let Some(v) = data.get(key) {
            let s = v.as_str().ok_or(format!("data.{key} is not a string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| format!("data.{key} is not base64"))?;
            out.insert(key.to_owned(), bytes);
        }
    }
    Ok(out)
}

/// The object to PUT: as read (labels, annotations, `resourceVersion` kept), with the
/// changed keys in `data`. Field-manager bookkeeping is the server's to keep.
fn with_data(mut obj: Value, changes: &Contents) -> Value {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    if let Some(o) = obj.as_object_mut() {
        o.remove("stringData");
        if !o.get("data").is_some_and(Value::is_object) {
            o.insert("data".into(), json!({}));
        }
    }
    if let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut) {
        for (k, v) in changes {
            data.insert(
                k.clone(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
            );
        }
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_config_from_env_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "sa-token\n").unwrap();
        std::fs::write(dir.path().join("namespace"), "from-file").unwrap();
        let d = dir.path().display().to_string();
        let env = |ns: Option<&'static str>| {
            let d = d.clone();
            move |k: &str| match k {
                "KUBERNETES_SERVICE_HOST" => Some("fd00::1".to_owned()),
                "KUBERNETES_SERVICE_PORT" => Some("6443".to_owned()),
                SERVICE_ACCOUNT_DIR_ENV => Some(d.clone()),
                "POD_NAMESPACE" => ns.map(str::to_owned),
                _ => None,
            }
        };
        let c = K8sConfig::in_cluster(env(None)).unwrap();
        assert_eq!(c.api_url, "https://[fd00::1]:6443");
        assert_eq!(c.token.expose(), "sa-token");
        assert_eq!(c.namespace, "from-file");
        assert_eq!(
            K8sConfig::in_cluster(env(Some("team"))).unwrap().namespace,
            "team"
        );
        assert!(matches!(
            K8sConfig::in_cluster(|_| None),
            Err(K8sError::NotInCluster)
        ));
    }

    #[test]
    fn update_keeps_metadata_and_other_keys() {
        let obj = json!({"kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "s", "resourceVersion": "7", "labels": {"a": "b"}, "managedFields": []},
            "data": {"other": "eA==", "tunnel-id": "b2xk"}, "type": "Opaque"});
        let mut c = Contents::new();
        c.insert("tunnel-id".into(), b"tnl_new".to_vec());
        let up = with_data(obj, &c);
        assert_eq!(up["metadata"]["resourceVersion"], "7");
        assert_eq!(up["metadata"]["labels"]["a"], "b");
        assert!(up["metadata"].get("managedFields").is_none());
        assert_eq!(up["data"]["other"], "eA==");
        assert_eq!(decode_data(&up).unwrap()["tunnel-id"], b"tnl_new".to_vec());
        let empty = with_data(json!({"kind": "Secret", "metadata": {}}), &c);
        assert_eq!(decode_data(&empty).unwrap().len(), 1);
    }
}
