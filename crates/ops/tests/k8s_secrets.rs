//! The Kubernetes Secret calls against a loopback server that speaks the real REST shape
//! (`/api/v1/namespaces/{ns}/secrets/{name}`, `Status` objects for errors) and records
//! every request: teardown deletes the three Secrets (ignoring missing ones, again on a
//! re-run), and doctor reads the setup output from a Secret.

#[allow(unused)]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use mcp_tunnel_ops::k8s::{KubeClient, KubeOptions};
use mcp_tunnel_ops::runbook::StepOutcome;
use mcp_tunnel_ops::teardown::{self, DEFAULT_SECRETS, TeardownPlan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    method: String,
    path: String,
    authorization: Option<String>,
}

#[derive(Clone, Default)]
struct FakeApi {
    secrets: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

fn status(code: u16, reason: &str, message: &str) -> (u16, String) {
    let status = if code < 300 { "Success" } else { "Failure" };
    (code, serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status, "message": message, "reason": reason, "code": code}).to_string())
}

impl FakeApi {
    fn handle(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let Some(rest) = path.strip_prefix("/api/v1/namespaces/") else {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let [ns, "secrets", name] = parts[..] else {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        let key = format!("{ns}/{name}");
        let mut secrets = self.secrets.lock().unwrap();
        match (method, secrets.get(&key).cloned()) {
            ("GET", Some(s)) => (200, s.to_string()),
            ("DELETE", Some(_)) => {
                secrets.remove(&key);
                status(200, "", "")
            }
            ("PUT", Some(current)) => {
                let Ok(new) = serde_json::from_slice::<serde_json::Value>(body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                if new["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                let mut stored = new.clone();
                let v: u64 = current["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("1")
                    .parse()
                    .unwrap_or(1);
                stored["metadata"]["resourceVersion"] = (v + 1).to_string().into();
                secrets.insert(key, stored.clone());
                (200, stored.to_string())
            }
            (_, None) => status(404, "NotFound", &format!("secrets \"{name}\" not found")),
            _ => status(405, "MethodNotAllowed", "method not allowed"),
        }
    }

    fn put(&self, ns: &str, name: &str, data: &[(&str, &[u8])]) {
        let data: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    base64::engine::general_purpose::STANDARD.encode(v).into(),
                )
            })
            .collect();
        let obj = serde_json::json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"}, "type": "Opaque", "data": data});
        self.secrets
            .lock()
            .unwrap()
            .insert(format!("{ns}/{name}"), obj);
    }

    async fn serve(self) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let api = self.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let mut lines = head.lines();
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let method = first.next().unwrap_or("").to_owned();
                    let path = first.next().unwrap_or("").to_owned();
                    let authorization = lines
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                        .map(|(_, v)| v.trim().to_owned());
                    api.log.lock().unwrap().push(Recorded {
                        method: method.clone(),
                        path: path.clone(),
                        authorization,
                    });
                    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let want: usize = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_len + want {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let req_body = buf[head_len..].to_vec();
                    let (code, body) = api.handle(&method, &path, &req_body);
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }
}

fn client(url: &str, token_dir: &std::path::Path) -> KubeClient {
    let token = token_dir.join("token");
    std::fs::write(&token, "kube-test-token\n").unwrap();
    KubeClient::new(&KubeOptions {
        api_url: Some(url.into()),
        token_file: Some(token),
        ca_file: None,
        namespace: Some("mcp-tunnel".into()),
    })
    .unwrap()
}

#[tokio::test]
async fn teardown_deletes_the_three_secrets_ignoring_missing_ones_and_is_idempotent() {
    let api = FakeApi::default();
    api.put(
        "mcp-tunnel",
        "mcp-tunnel",
        &[("tunnel-id", b"tnl_k8s"), ("tunnel-token", b"eyJ...")],
    );
    api.put(
        "mcp-tunnel",
        "mcp-tunnel-cert",
        &[("tls.crt", b"x"), ("tls.key", b"y")],
    );
    api.put("other-ns", "mcp-tunnel", &[("tunnel-id", b"tnl_other")]);
    let url = api.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let plan = TeardownPlan {
        kube: Some(client(&url, dir.path())),
        secrets: DEFAULT_SECRETS.iter().map(|s| s.to_string()).collect(),
        skip_archive: true,
        ..TeardownPlan::default()
    };
    let results = teardown::run(&plan).await;
    let outcome = |name: &str| {
        results
            .iter()
            .find(|r| r.step == format!("delete Secret {name}"))
            .map(|r| r.outcome)
    };
    assert_eq!(
        outcome("mcp-tunnel"),
        Some(StepOutcome::Done),
        "{results:#?}"
    );
    assert_eq!(outcome("mcp-tunnel-token"), Some(StepOutcome::AlreadyDone));
    assert_eq!(outcome("mcp-tunnel-cert"), Some(StepOutcome::Done));
    // Only the namespace given; the other namespace's Secret is untouched.
    let left: Vec<String> = api.secrets.lock().unwrap().keys().cloned().collect();
    assert_eq!(left, ["other-ns/mcp-tunnel"]);
    let deletes: Vec<Recorded> = api
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "DELETE")
        .cloned()
        .collect();
    assert_eq!(
        deletes.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        [
            "/api/v1/namespaces/mcp-tunnel/secrets/mcp-tunnel",
            "/api/v1/namespaces/mcp-tunnel/secrets/mcp-tunnel-token",
            "/api/v1/namespaces/mcp-tunnel/secrets/mcp-tunnel-cert"
        ]
    );
    assert!(
        deletes
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer kube-test-token")),
        "{deletes:?}"
    );

    let again = teardown::run(&plan).await;
    assert!(
        again
            .iter()
            .all(|r| matches!(r.outcome, StepOutcome::AlreadyDone | StepOutcome::Skipped)),
        "{again:#?}"
    );
}

#[tokio::test]
async fn teardown_reads_the_tunnel_id_from_the_secret_before_deleting_it() {
    let api = FakeApi::default();
    api.put(
        "mcp-tunnel",
        "mcp-tunnel",
        &[("tunnel-id", b"tnl_fromsecret")],
    );
    let url = api.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let plan = TeardownPlan {
        kube: Some(client(&url, dir.path())),
        secrets: DEFAULT_SECRETS.iter().map(|s| s.to_string()).collect(),
        ..TeardownPlan::default()
    };
    // No API to archive with: the Secrets stay, so the tunnel id is not lost.
    let results = teardown::run(&plan).await;
    let archive = results
        .iter()
        .find(|r| r.step == "archive the tunnel")
        .unwrap();
    assert_eq!(archive.outcome, StepOutcome::Failed);
    assert!(archive.detail.contains("tnl_fromsecret"), "{archive:?}");
    assert!(
        api.secrets
            .lock()
            .unwrap()
            .contains_key("mcp-tunnel/mcp-tunnel")
    );
    assert!(!api.log.lock().unwrap().iter().any(|r| r.method == "DELETE"));
}

#[tokio::test]
async fn doctor_reads_the_setup_output_from_a_secret() {
    let pki = common::good_pki();
    let api = FakeApi::default();
    api.put(
        "mcp-tunnel",
        "mcp-tunnel",
        &[
            ("tunnel-id", b"tnl_s"),
            ("tunnel-domain", common::DOMAIN.as_bytes()),
            ("ca.crt", pki.ca.cert_pem.as_bytes()),
            ("tls.crt", pki.server.cert_pem.as_bytes()),
            ("tls.key", pki.server.key_pem.expose().as_bytes()),
            ("tunnel-token", b"eyJ"),
        ],
    );
    let url = api.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = common::opts();
    o.secret = Some("mcp-tunnel".into());
    o.kube = Some(client(&url, dir.path()));
    let r = common::run(&o).await;
    use mcp_tunnel_ops::finding::{Severity, Status};
    common::assert_finding(&r, "cert.chain", Status::Pass, Severity::High);
    common::assert_finding(&r, "cert.key_match", Status::Pass, Severity::High);
    // Access to a Secret is RBAC's business: reported, never "pass".
    common::assert_finding(
        &r,
        "files.permissions.tls.key",
        Status::Unknown,
        Severity::Medium,
    );
    o.secret = Some("absent".into());
    let r = common::run(&o).await;
    common::assert_finding(&r, "setup.output", Status::Fail, Severity::High);
}

#[tokio::test]
async fn rotate_cert_replaces_the_keys_of_the_secret() {
    use mcp_tunnel_ops::rotate::{self, Store};
    let pki = common::good_pki();
    let api = FakeApi::default();
    api.put(
        "mcp-tunnel",
        "mcp-tunnel",
        &[
            ("tunnel-id", b"tnl_s"),
            ("tunnel-domain", common::DOMAIN.as_bytes()),
            ("ca.crt", pki.ca.cert_pem.as_bytes()),
            ("ca.key", pki.ca.key_pem.expose().as_bytes()),
            ("tls.crt", pki.server.cert_pem.as_bytes()),
            ("tls.key", pki.server.key_pem.expose().as_bytes()),
        ],
    );
    let url = api.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Secret {
        kube: client(&url, dir.path()),
        name: "mcp-tunnel".into(),
    };
    let results = rotate::cert(
        &store,
        std::time::Duration::from_secs(86_400 * 90),
        None,
        std::time::Duration::ZERO,
    )
    .await;
    assert!(!results.iter().any(|r| r.failed()), "{results:#?}");
    let after = store.read().await.unwrap();
    let new_cert = after.entries.get("tls.crt").unwrap().bytes.clone();
    assert_ne!(new_cert, pki.server.cert_pem.as_bytes());
    // The new pair is valid under the same CA, and the other keys are untouched.
    let mut o = common::opts();
    o.secret = Some("mcp-tunnel".into());
    o.kube = Some(client(&url, dir.path()));
    let r = common::run(&o).await;
    use mcp_tunnel_ops::finding::{Severity, Status};
    common::assert_finding(&r, "cert.chain", Status::Pass, Severity::High);
    common::assert_finding(&r, "cert.key_match", Status::Pass, Severity::High);
    assert_eq!(after.text("tunnel-id").as_deref(), Some("tnl_s"));
    assert!(
        api.log
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.method == "PUT"
                && r.path == "/api/v1/namespaces/mcp-tunnel/secrets/mcp-tunnel")
    );
}
