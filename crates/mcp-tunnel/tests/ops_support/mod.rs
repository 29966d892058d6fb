//! For the security-operations tests: a real control plane (`server init`, then `server`
//! or `api`) on ephemeral loopback ports, an API client for it, and a setup output
//! directory (SPEC §9) for a freshly created tunnel.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_tunnel_control::client::{ApiClient, Method};
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_pki::generate::{self, KeyKind};
use mcp_tunnel_testutil::free_port;
use mcp_tunnel_testutil::harness::bin;
use mcp_tunnel_testutil::logs::LoggedChild;
use serde_json::{Value, json};

pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub process: LoggedChild,
    pub url: String,
    pub admin_key: String,
    pub ca_file: PathBuf,
    /// The edge's connector port (`server` mode only).
    pub connector_port: u16,
}

impl ControlPlane {
    /// `server init`, then `server` (edge + API) when `with_edge`, else `api`.
    pub async fn start(with_edge: bool) -> Self {
        Self::start_with(with_edge, &[]).await
    }

    /// [`ControlPlane::start`] with extra flags for the `api`/`server` process.
    #[allow(dead_code)] // not every test binary that includes this module uses it
    pub async fn start_with(with_edge: bool, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("control");
        let key_file = dir.path().join("admin.key");
        let connector_port = if with_edge { free_port() } else { 7844 };
        let out = bin()
            .args(["server", "init", "--data-dir"])
            .arg(&data)
            .args([
                "--base-domain",
                "tunnels.test",
                "--edge-address",
                &format!("127.0.0.1:{connector_port}"),
                "--admin-key-file",
            ])
            .arg(&key_file)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "server init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = bin();
        if with_edge {
            cmd.args(["server", "--data-dir"]).arg(&data).args([
                "--listen",
                "127.0.0.1:0",
                "--connector-listen",
                &format!("127.0.0.1:{connector_port}"),
                "--client-listen",
                "127.0.0.1:0",
            ]);
        } else {
            cmd.args(["api", "--data-dir"])
                .arg(&data)
                .args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(extra);
        let process = LoggedChild::spawn(cmd);
        let line = process
            .wait_for(Duration::from_secs(30), |l| l.contains("\"api listening\""))
            .await;
        let v: Value = serde_json::from_str(&line).unwrap();
        let addr = v["addr"].as_str().unwrap();
        let port = addr.rsplit(':').next().unwrap();
        if with_edge {
            process
                .wait_for(Duration::from_secs(30), |l| {
                    l.contains("\"edge listening\"")
                })
                .await;
        }
        Self {
            url: format!("https://127.0.0.1:{port}"),
            admin_key: std::fs::read_to_string(&key_file)
                .unwrap()
                .trim()
                .to_owned(),
            ca_file: data.join("edge-ca.pem"),
            data,
            dir,
            process,
            connector_port,
        }
    }

    /// The edge's client listener (`server` mode only).
    pub fn client_addr(&self) -> String {
        let line = self
            .process
            .lines()
            .into_iter()
            .find(|l| l.contains("\"edge listening\""))
            .expect("edge listening");
        let v: Value = serde_json::from_str(&line).unwrap();
        v["client"].as_str().unwrap().to_owned()
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(
            &self.url,
            Secret::new(self.admin_key.clone()),
            Some(&self.ca_file),
            None,
        )
        .unwrap()
    }

    /// A tunnel with a registered CA, written out as a setup output directory.
    pub async fn provision(&self, out: &Path) -> Value {
        let api = self.client();
        let t = api
            .call(
                Method::POST,
                "/v1/tunnels",
                Some(json!({"display_name": "ops test"})),
            )
            .await
            .unwrap();
        let id = t["id"].as_str().unwrap();
        let domain = t["domain"].as_str().unwrap();
        let ca = generate::generate_ca("ops test CA", Duration::from_secs(86_400 * 365)).unwrap();
        let server = generate::issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &[format!("*.{domain}")],
            Duration::from_secs(86_400 * 90),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        api.call(
            Method::POST,
            &format!("/v1/tunnels/{id}/certificates"),
            Some(json!({"ca_certificate_pem": ca.cert_pem})),
        )
        .await
        .unwrap();
        let token = api
            .call(
                Method::POST,
                &format!("/v1/tunnels/{id}/reveal_token"),
                None,
            )
            .await
            .unwrap();
        std::fs::create_dir_all(out).unwrap();
        let w = |name: &str, body: &str, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            let p = out.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        w("tunnel-id", id, 0o644);
        w("tunnel-domain", domain, 0o644);
        w(
            "tunnel-token",
            token["tunnel_token"].as_str().unwrap(),
            0o600,
        );
        w("ca.crt", &ca.cert_pem, 0o644);
        w("ca.key", ca.key_pem.expose(), 0o600);
        w("tls.crt", &server.cert_pem, 0o644);
        w("tls.key", server.key_pem.expose(), 0o600);
        api.call(Method::GET, &format!("/v1/tunnels/{id}"), None)
            .await
            .unwrap()
    }
}
