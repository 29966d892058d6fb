//! `setup init` against the real control plane (in this process, SQLite in a temp dir,
//! plain HTTP on an ephemeral loopback port): idempotency, token-version rotation, the
//! two-slot rule, a changed tunnel id, revoked CAs, and workload identity federation.

use std::path::Path;
use std::time::Duration;

use mcp_tunnel_control::api::{self, ApiState};
use mcp_tunnel_control::http_client::HttpClient;
use mcp_tunnel_control::{ControlStore, Db, MasterKey, StoreSettings};
use mcp_tunnel_pki::generate::{self, KeyKind};
use mcp_tunnel_proto::{EdgeAddr, TunnelToken};
use mcp_tunnel_setup::dir::DirOutput;
use mcp_tunnel_setup::init::{CaAction, CertAction, TokenAction, TunnelAction};
use mcp_tunnel_setup::{Credentials, InitOptions, Output, SetupError, keys};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Api {
    base: String,
    admin: String,
    org: String,
    http: HttpClient,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Api {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite_dir(&dir.path().join("data")).await.unwrap();
        let settings = StoreSettings {
            base_domain: "tunnels.test".into(),
            edge_addr: EdgeAddr::parse("127.0.0.1:7844").unwrap(),
            edge_ca_pin: None,
            max_tunnels_per_org: 10,
        };
        let store = ControlStore::new(db, MasterKey::generate(), settings);
        let boot = store.bootstrap("setup test").await.unwrap();
        let http = HttpClient::new(None).unwrap();
        let state = ApiState::new(store, http.clone(), 10_000);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(api::serve(listener, None, api::router(state), stop.clone()));
        Self {
            base,
            admin: boot.admin_key.expose().to_owned(),
            org: boot.organization_id,
            http,
            stop,
            _dir: dir,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let headers = [
            ("anthropic-version", "2023-06-01".to_owned()),
            ("anthropic-beta", api::auth::TUNNELS_BETA.to_owned()),
            ("authorization", format!("Bearer {}", self.admin)),
        ];
        let resp = self
            .http
            .send(
                method.parse().unwrap(),
                &format!("{}{path}", self.base),
                &headers,
                body.map(|b| b.to_string().into_bytes()),
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&resp.body).unwrap();
        assert!(resp.status.is_success(), "{method} {path}: {v}");
        v
    }

    fn key(&self) -> Credentials {
        Credentials::from_env(|k| (k == "API_TOKEN").then(|| self.admin.clone())).unwrap()
    }

    fn options(&self, token_version: Option<&str>) -> InitOptions {
        InitOptions {
            api_url: self.base.clone(),
            api_ca_file: None,
            tunnel_id: None,
            display_name: Some("setup test".into()),
            cert_duration: Duration::from_secs(2160 * 3600),
            token_version: token_version.map(str::to_owned),
            key_kind: KeyKind::EcdsaP256,
        }
    }

    async fn tunnels(&self) -> Vec<Value> {
        self.call("GET", "/v1/tunnels", None).await["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn certs(&self, tunnel: &str) -> Vec<Value> {
        self.call(
            "GET",
            &format!("/v1/tunnels/{tunnel}/certificates?include_archived=true"),
            None,
        )
        .await["data"]
            .as_array()
            .unwrap()
            .clone()
    }
}

fn dir_output(p: &Path) -> Output {
    Output::Dir(DirOutput::new(p.to_owned()))
}

fn read(p: &Path, key: &str) -> String {
    std::fs::read_to_string(p.join(key)).unwrap()
}

#[tokio::test]
async fn init_twice_changes_nothing_and_a_new_token_version_rotates() {
    let api = Api::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = dir_output(tmp.path());

    let first = mcp_tunnel_setup::init(&out, &api.key(), &api.options(Some("1")))
        .await
        .unwrap();
    assert_eq!(first.tunnel, TunnelAction::Created);
    assert!(matches!(first.ca, CaAction::Generated { .. }));
    assert!(matches!(first.server_cert, CertAction::Issued { .. }));
    assert_eq!(first.token, TokenAction::Fetched);
    for key in keys::ALL {
        assert!(tmp.path().join(key).is_file(), "{key} not written");
    }
    let tunnel_id = read(tmp.path(), keys::TUNNEL_ID);
    assert!(tunnel_id.starts_with("tnl_"));
    let token = TunnelToken::parse(&read(tmp.path(), keys::TUNNEL_TOKEN)).unwrap();
    assert_eq!(token.tunnel_id.as_str(), tunnel_id);
    let tunnels = api.tunnels().await;
    assert_eq!(tunnels.len(), 1);
    assert_eq!(tunnels[0]["status"], "active");
    assert_eq!(
        tunnels[0]["domain"].as_str().unwrap(),
        read(tmp.path(), keys::TUNNEL_DOMAIN)
    );
    // The registered CA is the stored one, and it is ECDSA P-256 for five years.
    let ca_pem = read(tmp.path(), keys::CA_CERT);
    let info = mcp_tunnel_pki::validate::validate_ca_pem(&ca_pem, now()).unwrap();
    assert_eq!(info.key, "ECDSA P-256");
    let certs = api.certs(&tunnel_id).await;
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0]["fingerprint"].as_str().unwrap(), info.fingerprint);

    // Again, with the same token version: nothing changes, here or at the API.
    let before = snapshot(tmp.path());
    let again = mcp_tunnel_setup::init(&out, &api.key(), &api.options(Some("1")))
        .await
        .unwrap();
    assert_eq!(again.tunnel, TunnelAction::Reused);
    assert!(matches!(again.ca, CaAction::Kept { .. }));
    assert!(matches!(again.server_cert, CertAction::Kept { .. }));
    assert_eq!(again.token, TokenAction::Kept);
    assert!(again.changed.is_empty(), "{:?}", again.changed);
    assert_eq!(snapshot(tmp.path()), before);
    assert_eq!(api.tunnels().await.len(), 1);
    assert_eq!(api.certs(&tunnel_id).await.len(), 1);

    // A new token version rotates: the stored token is the API's new one.
    let rotated = mcp_tunnel_setup::init(&out, &api.key(), &api.options(Some("2")))
        .await
        .unwrap();
    assert_eq!(
        rotated.token,
        TokenAction::Rotated {
            from: "1".into(),
            to: "2".into()
        }
    );
    assert_eq!(rotated.changed, [keys::TOKEN_VERSION, keys::TUNNEL_TOKEN]);
    let new_token = read(tmp.path(), keys::TUNNEL_TOKEN);
    assert_ne!(new_token.trim(), token.encode());
    let revealed = api
        .call(
            "POST",
            &format!("/v1/tunnels/{tunnel_id}/reveal_token"),
            None,
        )
        .await;
    assert_eq!(revealed["tunnel_token"].as_str().unwrap(), new_token.trim());
    assert_eq!(read(tmp.path(), keys::TOKEN_VERSION).trim(), "2");
    // And version 2 again does not rotate again.
    let same = mcp_tunnel_setup::init(&out, &api.key(), &api.options(Some("2")))
        .await
        .unwrap();
    assert_eq!(same.token, TokenAction::Kept);
    assert_eq!(read(tmp.path(), keys::TUNNEL_TOKEN), new_token);
}

#[tokio::test]
async fn both_slots_full_asks_to_revoke_and_a_changed_tunnel_id_gets_a_new_ca() {
    let api = Api::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = dir_output(tmp.path());
    mcp_tunnel_setup::init(&out, &api.key(), &api.options(None))
        .await
        .unwrap();
    let old_ca = read(tmp.path(), keys::CA_CERT);
    let old_id = read(tmp.path(), keys::TUNNEL_ID);

    // Another tunnel whose two slots are taken.
    let other = api
        .call("POST", "/v1/tunnels", Some(json!({"display_name": "full"})))
        .await;
    let other_id = other["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let ca = generate::generate_ca(name, Duration::from_secs(86_400)).unwrap();
        let c = api
            .call(
                "POST",
                &format!("/v1/tunnels/{other_id}/certificates"),
                Some(json!({"ca_certificate_pem": ca.cert_pem})),
            )
            .await;
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    let mut o = api.options(None);
    o.tunnel_id = Some(other_id.clone());
    let err = mcp_tunnel_setup::init(&out, &api.key(), &o)
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::SlotsFull { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("revoke one first") && msg.contains(&ids[0]),
        "{msg}"
    );
    // The new tunnel id and its new CA are stored already, so a re-run after revoking
    // registers that same CA instead of making yet another.
    assert_eq!(read(tmp.path(), keys::TUNNEL_ID), other_id);
    let new_ca = read(tmp.path(), keys::CA_CERT);
    assert_ne!(new_ca, old_ca);
    api.call(
        "POST",
        &format!("/v1/tunnels/{other_id}/certificates/{}/archive", ids[0]),
        None,
    )
    .await;
    let report = mcp_tunnel_setup::init(&out, &api.key(), &o).await.unwrap();
    assert_eq!(report.tunnel, TunnelAction::Reused);
    assert!(matches!(report.ca, CaAction::Registered { .. }));
    assert_eq!(read(tmp.path(), keys::CA_CERT), new_ca);
    let token = TunnelToken::parse(&read(tmp.path(), keys::TUNNEL_TOKEN)).unwrap();
    assert_eq!(token.tunnel_id.as_str(), other_id);
    // The first tunnel was not touched, and no third tunnel exists.
    assert_eq!(api.certs(&old_id).await.len(), 1);
    assert_eq!(api.tunnels().await.len(), 2);
}

#[tokio::test]
async fn a_revoked_ca_is_not_registered_again() {
    let api = Api::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = dir_output(tmp.path());
    mcp_tunnel_setup::init(&out, &api.key(), &api.options(None))
        .await
        .unwrap();
    let id = read(tmp.path(), keys::TUNNEL_ID);
    let cert = api.certs(&id).await[0]["id"].as_str().unwrap().to_owned();
    api.call(
        "POST",
        &format!("/v1/tunnels/{id}/certificates/{cert}/archive"),
        None,
    )
    .await;
    let err = mcp_tunnel_setup::init(&out, &api.key(), &api.options(None))
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::CaRevoked { .. }), "{err}");
    assert!(err.to_string().contains(&cert));
    // An archived tunnel is refused too, never replaced by a new one.
    api.call("POST", &format!("/v1/tunnels/{id}/archive"), None)
        .await;
    let err = mcp_tunnel_setup::init(&out, &api.key(), &api.options(None))
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::TunnelArchived { .. }), "{err}");
    assert_eq!(api.tunnels().await.len(), 0);
}

#[tokio::test]
async fn workload_identity_federation_exchanges_then_provisions() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
    let api = Api::start().await;
    let key = generate::generate_ca("issuer key", Duration::from_secs(3600)).unwrap();
    use rustls_pki_types::pem::PemObject as _;
    let der =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key.key_pem.expose().as_bytes()).unwrap();
    let enc = EncodingKey::from_ec_der(der.secret_der());
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = json!("k1");
    let issuer = api
        .call(
            "POST",
            "/v1/admin/federation/issuers",
            Some(json!({"issuer_url": "https://ci.example", "jwks": {"keys": [jwk]}})),
        )
        .await;
    let sa = api
        .call(
            "POST",
            "/v1/admin/service_accounts",
            Some(json!({"name": "setup"})),
        )
        .await;
    let rule = api
        .call(
            "POST",
            "/v1/admin/federation/rules",
            Some(
                json!({"issuer_id": issuer["id"], "subject": "system:serviceaccount:ns:setup",
                "audience": "mcp-tunnel", "service_account_id": sa["id"]}),
            ),
        )
        .await;
    let now = now();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let jwt = jsonwebtoken::encode(
        &header,
        &json!({"iss": "https://ci.example", "sub": "system:serviceaccount:ns:setup",
            "aud": "mcp-tunnel", "iat": now, "exp": now + 300}),
        &enc,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("wif-token");
    std::fs::write(&token_file, &jwt).unwrap();
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let env = |k: &str| match k {
        "ANTHROPIC_FEDERATION_RULE_ID" => Some(rule_id.clone()),
        "ANTHROPIC_ORGANIZATION_ID" => Some(api.org.clone()),
        "ANTHROPIC_IDENTITY_TOKEN_FILE" => Some(token_file.display().to_string()),
        _ => None,
    };
    let creds = Credentials::from_env(env).unwrap();
    let out = dir_output(&tmp.path().join("out"));
    let report = mcp_tunnel_setup::init(&out, &creds, &api.options(Some("1")))
        .await
        .unwrap();
    assert_eq!(report.tunnel, TunnelAction::Created);
    let audit = api.call("GET", "/v1/audit_events?limit=50", None).await;
    let actors: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tunnel.create")
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert_eq!(
        actors,
        [format!("service_account:{}", sa["id"].as_str().unwrap())]
    );

    // A refused assertion names the failed check.
    std::fs::write(&token_file, jwt.replace('.', "x.")).unwrap();
    let err = mcp_tunnel_setup::init(
        &out,
        &Credentials::from_env(env).unwrap(),
        &api.options(None),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SetupError::Exchange(_)), "{err}");
    assert!(err.to_string().contains("HTTP 401"), "{err}");
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Every file's bytes and inode: unchanged means not even rewritten.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect();
    v.sort();
    v
}
