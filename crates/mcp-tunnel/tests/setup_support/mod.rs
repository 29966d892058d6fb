//! A real control plane for the setup, quickstart and connect tests: `server init`, then
//! `server` (API + edge) on ephemeral loopback ports over SQLite, as child processes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_tunnel_control::client::{ApiClient, Method};
use mcp_tunnel_pki::crypto::Secret;
pub use mcp_tunnel_testutil::free_port;
use mcp_tunnel_testutil::harness::bin;
use mcp_tunnel_testutil::logs::LoggedChild;
use serde_json::Value;

#[derive(Debug)]
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub admin_key: String,
    pub api_url: String,
    /// The edge CA: the API's and the edge's certificates chain to it.
    pub ca_file: PathBuf,
    pub client_addr: SocketAddr,
    pub connector_addr: String,
    pub server: LoggedChild,
}

fn field(line: &str, name: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    v[name].as_str().unwrap().to_owned()
}

impl ControlPlane {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let connector_addr = format!("127.0.0.1:{}", free_port());
        let key_file = dir.path().join("admin.key");
        let init = bin()
            .args(["server", "init", "--data-dir"])
            .arg(&data)
            .args(["--base-domain", "tunnels.test", "--edge-address"])
            .arg(&connector_addr)
            .arg("--admin-key-file")
            .arg(&key_file)
            .output()
            .await
            .unwrap();
        assert!(
            init.status.success(),
            "server init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let admin_key = std::fs::read_to_string(&key_file)
            .unwrap()
            .trim()
            .to_owned();
        let mut cmd = bin();
        cmd.args(["server", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--connector-listen"])
            .arg(&connector_addr)
            .args(["--client-listen", "127.0.0.1:0"]);
        let server = LoggedChild::spawn(cmd);
        let api = server
            .wait_for(Duration::from_secs(30), |l| l.contains("\"api listening\""))
            .await;
        let edge = server
            .wait_for(Duration::from_secs(30), |l| {
                l.contains("\"edge listening\"")
            })
            .await;
        let api_port = field(&api, "addr").rsplit(':').next().unwrap().to_owned();
        Self {
            ca_file: data.join("edge-ca.pem"),
            data,
            admin_key,
            api_url: format!("https://127.0.0.1:{api_port}"),
            client_addr: field(&edge, "client").parse().unwrap(),
            connector_addr,
            server,
            dir,
        }
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(
            &self.api_url,
            Secret::new(self.admin_key.clone()),
            Some(&self.ca_file),
            None,
        )
        .unwrap()
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.client()
            .call(method.clone(), path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `mcp-tunnel setup …` with the API's URL, CA and admin key in the environment.
    pub fn setup(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = bin();
        cmd.arg("setup")
            .args(args)
            .env("API_URL", &self.api_url)
            .env("API_CA_FILE", &self.ca_file)
            .env("API_TOKEN", &self.admin_key)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("TUNNEL_ID");
        cmd
    }
}

/// Runs a command to its end; returns (success, stdout, stderr).
pub async fn run(mut cmd: tokio::process::Command) -> (bool, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("command timed out")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn read(dir: &Path, key: &str) -> String {
    std::fs::read_to_string(dir.join(key)).unwrap()
}
