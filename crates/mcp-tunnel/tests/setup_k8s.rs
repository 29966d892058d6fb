//! `setup … --output k8s-secret:NAME` as the Helm chart runs it inside a pod. No
//! Kubernetes API server can run on this machine, so the test serves the part of the
//! Kubernetes REST API setup uses (GET and PUT of one Secret, with `resourceVersion`
//! conflicts) on loopback HTTPS, behaves as the chart's RBAC does (only get/update on
//! that name, 403 otherwise), and records and checks every exchange. The control plane
//! is the real `mcp-tunnel server`.

mod setup_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mcp_tunnel_pki::generate::{self, KeyKind};
use mcp_tunnel_proto::TunnelToken;
use serde_json::{Value, json};
use setup_support::{ControlPlane, run};

const NS: &str = "tenant-a";
const NAME: &str = "mcp-tunnel";
const SA_TOKEN: &str = "sa-token-for-the-setup-job";

#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    path: String,
    authorization: String,
}

#[derive(Debug, Default)]
struct State {
    secret: Option<Value>,
    version: u64,
    log: Vec<Exchange>,
    /// Answer the next PUT with 409, as if someone updated the Secret in between.
    conflict_once: bool,
}

/// A loopback HTTPS server speaking the Secret part of the Kubernetes REST API.
struct FakeKube {
    state: Arc<Mutex<State>>,
    port: u16,
    sa_dir: tempfile::TempDir,
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "message": message, "code": code}),
    )
}

fn handle(state: &Mutex<State>, method: &str, path: &str, auth: &str, body: &[u8]) -> (u16, Value) {
    let mut s = state.lock().unwrap();
    s.log.push(Exchange {
        method: method.into(),
        path: path.into(),
        authorization: auth.into(),
    });
    if auth != format!("Bearer {SA_TOKEN}") {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let ours = format!("/api/v1/namespaces/{NS}/secrets/{NAME}");
    if path != ours || !matches!(method, "GET" | "PUT") {
        // The chart's Role: get, update, patch on this one Secret name, nothing else.
        return status(
            403,
            "Forbidden",
            &format!(
                "secrets is forbidden: User \"system:serviceaccount:{NS}:mcp-tunnel-setup\" cannot {method} this resource"
            ),
        );
    }
    let Some(current) = s.secret.clone() else {
        return status(404, "NotFound", &format!("secrets \"{NAME}\" not found"));
    };
    if method == "GET" {
        return (200, current);
    }
    let new: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return status(400, "BadRequest", &e.to_string()),
    };
    if s.conflict_once {
        s.conflict_once = false;
        s.version += 1;
        let v = s.version.to_string();
        s.secret.as_mut().unwrap()["metadata"]["resourceVersion"] = json!(v);
        return status(409, "Conflict", "the object has been modified");
    }
    if new["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return status(409, "Conflict", "the object has been modified");
    }
    if new["metadata"]["name"] != NAME || new["kind"] != "Secret" {
        return status(400, "BadRequest", "name or kind changed");
    }
    s.version += 1;
    let mut stored = new;
    stored["metadata"]["resourceVersion"] = json!(s.version.to_string());
    s.secret = Some(stored.clone());
    (200, stored)
}

impl FakeKube {
    async fn start(secret_exists: bool) -> Self {
        let ca = generate::generate_ca("fake kube CA", Duration::from_secs(3600)).unwrap();
        let leaf = generate::issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &["127.0.0.1".into()],
            Duration::from_secs(3600),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        let sa_dir = tempfile::tempdir().unwrap();
        std::fs::write(sa_dir.path().join("token"), SA_TOKEN).unwrap();
        std::fs::write(sa_dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
        std::fs::write(sa_dir.path().join("namespace"), NS).unwrap();
        use rustls_pki_types::pem::PemObject as _;
        let cert =
            rustls_pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.expose().as_bytes())
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            version: 1,
            secret: secret_exists.then(|| {
                json!({"kind": "Secret", "apiVersion": "v1", "type": "Opaque",
                       "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "1",
                                    "labels": {"app.kubernetes.io/component": "credentials"},
                                    "annotations": {"helm.sh/resource-policy": "keep"},
                                    "managedFields": [{"manager": "helm"}]}})
            }),
            ..State::default()
        }));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_owned();
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let body = req.into_body().collect().await?.to_bytes();
                            let (code, v) = handle(&st, &method, &path, &auth, &body);
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(code)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(v.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            state,
            port,
            sa_dir,
        }
    }

    /// The pod's environment: service host and port, service-account directory.
    fn in_pod(&self, mut cmd: tokio::process::Command) -> tokio::process::Command {
        cmd.env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", self.port.to_string())
            .env("MCP_TUNNEL_K8S_SERVICE_ACCOUNT_DIR", self.sa_dir.path())
            .env("POD_NAMESPACE", NS);
        cmd
    }

    fn data(&self) -> BTreeMap<String, Vec<u8>> {
        let s = self.state.lock().unwrap();
        match &s.secret {
            Some(obj) => mcp_tunnel_setup::k8s::decode_data(obj).unwrap(),
            None => BTreeMap::new(),
        }
    }

    fn take_log(&self) -> Vec<Exchange> {
        std::mem::take(&mut self.state.lock().unwrap().log)
    }
}

fn methods(log: &[Exchange]) -> Vec<&str> {
    log.iter().map(|e| e.method.as_str()).collect()
}

fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> String {
    String::from_utf8(data[key].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_and_renew_fill_the_charts_secret_through_the_kubernetes_api() {
    let cp = ControlPlane::start().await;
    let kube = FakeKube::start(true).await;
    // As the chart's Job runs it.
    let init = |version: &str| {
        kube.in_pod(cp.setup(&[
            "init",
            "--output",
            &format!("k8s-secret:{NAME}"),
            "--cert-duration",
            "240h",
            "--token-version",
            version,
        ]))
    };
    let (ok, stdout, stderr) = run(init("1")).await;
    assert!(ok, "{stdout}{stderr}");
    let log = kube.take_log();
    let ours = format!("/api/v1/namespaces/{NS}/secrets/{NAME}");
    assert!(log.iter().all(|e| e.path == ours), "{log:?}");
    assert!(
        log.iter()
            .all(|e| e.authorization == format!("Bearer {SA_TOKEN}")),
        "{log:?}"
    );
    assert_eq!(methods(&log)[0], "GET");
    assert!(methods(&log).contains(&"PUT"), "{log:?}");
    let data = kube.data();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "ca.crt",
            "ca.key",
            "tls.crt",
            "tls.key",
            "token-version",
            "tunnel-domain",
            "tunnel-id",
            "tunnel-token"
        ]
    );
    let token = TunnelToken::parse(&text(&data, "tunnel-token")).unwrap();
    assert_eq!(token.tunnel_id.as_str(), text(&data, "tunnel-id").trim());
    {
        // The chart's labels and annotations survive the updates.
        let s = kube.state.lock().unwrap();
        let meta = &s.secret.as_ref().unwrap()["metadata"];
        assert_eq!(meta["labels"]["app.kubernetes.io/component"], "credentials");
        assert_eq!(meta["annotations"]["helm.sh/resource-policy"], "keep");
    }

    // Re-running reads and writes nothing.
    let (ok, stdout, stderr) = run(init("1")).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("unchanged"), "{stdout}");
    assert_eq!(methods(&kube.take_log()), ["GET"]);
    assert_eq!(kube.data(), data);

    // A rotation whose update meets a concurrent change: read again, update again.
    kube.state.lock().unwrap().conflict_once = true;
    let (ok, stdout, stderr) = run(init("2")).await;
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(methods(&kube.take_log()), ["GET", "PUT", "GET", "PUT"]);
    let rotated = kube.data();
    assert_ne!(rotated["tunnel-token"], data["tunnel-token"]);
    assert_eq!(text(&rotated, "token-version").trim(), "2");

    // The CronJob: renew-cert with no --output (the in-pod default) and no API access.
    let renew = |before: &str| {
        let mut cmd = mcp_tunnel_testutil::harness::bin();
        cmd.args(["setup", "renew-cert", "--renew-before", before])
            .env_remove("API_URL")
            .env_remove("API_TOKEN");
        kube.in_pod(cmd)
    };
    let (ok, stdout, stderr) = run(renew("120h")).await;
    assert!(ok && stdout.contains("nothing to do"), "{stdout}{stderr}");
    assert_eq!(methods(&kube.take_log()), ["GET"]);
    let (ok, stdout, stderr) = run(renew("720h")).await;
    assert!(ok && stdout.contains("renewed"), "{stdout}{stderr}");
    assert_eq!(methods(&kube.take_log()), ["GET", "PUT"]);
    let renewed = kube.data();
    assert_ne!(renewed["tls.crt"], rotated["tls.crt"]);
    assert_eq!(renewed["ca.crt"], rotated["ca.crt"]);
    assert_eq!(renewed["tunnel-token"], rotated["tunnel-token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_or_a_refused_token_is_a_clear_error() {
    let cp = ControlPlane::start().await;
    let kube = FakeKube::start(false).await;
    let (ok, _, stderr) = run(kube.in_pod(cp.setup(&["init"]))).await;
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "Secret {NS}/{NAME} does not exist: create it empty first"
        )),
        "{stderr}"
    );
    // Nothing was created at the API either: the Secret is read before any tunnel.
    let list = cp
        .call(mcp_tunnel_control::client::Method::GET, "/v1/tunnels", None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    let kube = FakeKube::start(true).await;
    std::fs::write(kube.sa_dir.path().join("token"), "stale").unwrap();
    let (ok, _, stderr) = run(kube.in_pod(cp.setup(&["init"]))).await;
    assert!(!ok);
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(
        !stderr.contains("stale"),
        "the token leaked into an error: {stderr}"
    );
}
