//! Test harness: a control plane on an ephemeral port over SQLite (a temp dir) or the
//! PostgreSQL of `MCP_TUNNEL_TEST_DATABASE_URL`, each test in its own organization.

#![allow(dead_code)]

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_tunnel_control::api::{self, ApiState};
use mcp_tunnel_control::http_client::HttpClient;
use mcp_tunnel_control::store::Bootstrap;
use mcp_tunnel_control::{ControlStore, Db, MasterKey, StoreSettings};
use mcp_tunnel_proto::EdgeAddr;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const PG_ENV: &str = "MCP_TUNNEL_TEST_DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL URL, or `None` (the caller then skips, saying so).
pub fn pg_url() -> Option<String> {
    std::env::var(PG_ENV).ok().filter(|s| !s.is_empty())
}

#[derive(Debug)]
pub struct Harness {
    pub store: ControlStore,
    pub base: String,
    pub boot: Bootstrap,
    pub admin: String,
    pub http: HttpClient,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub struct Options {
    pub max_tunnels: u32,
    pub failed_auth_per_minute: u32,
    /// Serve the console too, with these session limits.
    pub console: Option<mcp_tunnel_control::store::SessionLimits>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_tunnels: 10,
            failed_auth_per_minute: 10_000,
            console: None,
        }
    }
}

pub async fn open_db(backend: Backend, dir: &std::path::Path) -> Db {
    match backend {
        Backend::Sqlite => Db::open_sqlite_dir(&dir.join("data")).await.unwrap(),
        Backend::Postgres => Db::connect(&pg_url().expect("postgres url")).await.unwrap(),
    }
}

pub fn settings(max_tunnels: u32) -> StoreSettings {
    StoreSettings {
        base_domain: "tunnels.test".into(),
        edge_addr: EdgeAddr::parse("edge.tunnels.test:7844").unwrap(),
        edge_ca_pin: None,
        max_tunnels_per_org: max_tunnels,
    }
}

impl Harness {
    /// What the process does on SIGTERM: stop accepting and let connections finish.
    pub fn stop_serving(&self) {
        self.stop.cancel();
    }

    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, o: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(backend, dir.path()).await;
        let store = ControlStore::new(db, MasterKey::generate(), settings(o.max_tunnels));
        let boot = store.bootstrap("test org").await.unwrap();
        let http = HttpClient::new(None).unwrap();
        let state = ApiState::new(store.clone(), http.clone(), o.failed_auth_per_minute);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let router = match o.console {
            None => api::router(state),
            Some(limits) => api::router_with_console(
                state,
                api::console::ConsoleConfig {
                    org_id: boot.organization_id.clone(),
                    public_url: None,
                    https: false,
                    limits,
                },
            ),
        };
        tokio::spawn(api::serve(listener, None, router, stop.clone()));
        let admin = boot.admin_key.expose().to_owned();
        Self {
            store,
            base,
            boot,
            admin,
            http,
            stop,
            _dir: dir,
        }
    }

    /// A request with the SDK's headers and the given key; returns status and JSON.
    pub async fn call(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut headers = vec![
            ("anthropic-version", "2023-06-01".to_owned()),
            ("anthropic-beta", api::TUNNELS_BETA.to_owned()),
        ];
        if let Some(k) = key {
            headers.push(("authorization", format!("Bearer {k}")));
        }
        self.raw(method, path, &headers, body).await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let resp = self
            .http
            .send(
                method.parse().unwrap(),
                &format!("{}{path}", self.base),
                headers,
                body.map(|b| b.to_string().into_bytes()),
            )
            .await
            .unwrap();
        let v = if resp.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&resp.body).into()))
        };
        (resp.status.as_u16(), v)
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (st, v) = self.call(Some(&self.admin), method, path, body).await;
        assert_eq!(st, 200, "{method} {path}: {v}");
        v
    }

    /// A new API key with the given body (`role`, `scopes`, `workspace_id`).
    pub async fn key(&self, body: Value) -> (String, String) {
        let v = self.admin("POST", "/v1/admin/api_keys", Some(body)).await;
        (
            v["id"].as_str().unwrap().into(),
            v["key"].as_str().unwrap().into(),
        )
    }

    pub async fn create_tunnel(&self, name: &str) -> Value {
        self.admin("POST", "/v1/tunnels", Some(json!({"display_name": name})))
            .await
    }

    pub async fn actions(&self) -> Vec<String> {
        let v = self.admin("GET", "/v1/audit_events?limit=1000", None).await;
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Asserts an error envelope of the given status and type; returns its message.
#[track_caller]
pub fn error_of(got: &(u16, Value), status: u16, kind: &str) -> String {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["type"], "error", "{}", got.1);
    assert_eq!(got.1["error"]["type"], kind, "{}", got.1);
    got.1["error"]["message"].as_str().unwrap().to_owned()
}

/// An ES256 signing key for test JWTs, with its JWK.
pub struct TestIssuer {
    pub pkcs8: Vec<u8>,
    pub kid: String,
    pub jwk: Value,
}

impl TestIssuer {
    pub fn new(kid: &str) -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Self {
            pkcs8: doc.as_ref().to_vec(),
            kid: kid.into(),
            jwk,
        }
    }

    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &h,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        )
        .unwrap()
    }
}

pub fn now() -> i64 {
    mcp_tunnel_control::time::now_ms() / 1000
}

/// A fresh CA PEM that passes every rule.
pub fn good_ca(cn: &str) -> String {
    mcp_tunnel_pki::generate::generate_ca(cn, std::time::Duration::from_secs(86_400 * 30))
        .unwrap()
        .cert_pem
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
