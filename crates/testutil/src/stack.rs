//! The whole data path as real processes: MCP server (PyPI `mcp`) ← proxy ← connector →
//! edge ← client. Certificates, token and client key are made at run time; every port is
//! ephemeral.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::logs::LoggedChild;
use mcp_tunnel_client::Session;
use mcp_tunnel_client::edge::EdgeDialer;
use mcp_tunnel_client::mcp::McpClient;
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_pki::generate::{self, GeneratedCert, KeyKind};
use mcp_tunnel_proto::{CaPin, EdgeAddr, TunnelId, TunnelToken};

use crate::harness::{DOMAIN, ProxyHarness, bin, route_host};

pub const CLIENT_KEY: &str = "ck_test_0123456789abcdefghijklmnopqrstuv";
pub const EDGE_NAME: &str = "edge.test";

#[derive(Debug)]
pub struct Stack {
    pub proxy: ProxyHarness,
    pub edge: LoggedChild,
    pub connector: LoggedChild,
    pub edge_ca: GeneratedCert,
    pub edge_client_addr: SocketAddr,
    pub edge_admin_addr: SocketAddr,
    pub token_file: PathBuf,
    pub dir: tempfile::TempDir,
}

fn field_addr(line: &str, field: &str) -> SocketAddr {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v[field].as_str().unwrap().parse().unwrap()
}

impl Stack {
    /// Starts everything and waits until the connector has registered `ha` connections.
    /// `upstream` is the origin of the MCP server the `mcp` route forwards to.
    pub async fn start(upstream: &str, edge_args: &[&str], ha: usize) -> Self {
        Self::start_with(upstream, "", edge_args, ha).await
    }

    /// Like [`Stack::start`], with extra proxy configuration (YAML).
    pub async fn start_with(
        upstream: &str,
        proxy_extra: &str,
        edge_args: &[&str],
        ha: usize,
    ) -> Self {
        let proxy = ProxyHarness::start_at_level(&format!(
            "routes:\n  mcp: {upstream}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\n{proxy_extra}"
        ), "info")
        .await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        // The edge's own PKI; the token pins its CA.
        let edge_ca = generate::generate_ca("test edge CA", Duration::from_secs(86_400)).unwrap();
        let edge_cert = generate::issue_server_cert(
            &edge_ca.cert_pem,
            edge_ca.key_pem.expose(),
            &[EDGE_NAME.to_owned(), "127.0.0.1".to_owned()],
            Duration::from_secs(86_400),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        std::fs::write(
            d.join("edge.crt"),
            format!("{}{}", edge_cert.cert_pem, edge_ca.cert_pem),
        )
        .unwrap();
        std::fs::write(d.join("edge.key"), edge_cert.key_pem.expose()).unwrap();

        // The tunnel's token: its secret's hash goes into the edge's store now; the edge's
        // address goes into the token once the edge has bound its port.
        let tunnel_id = TunnelId::parse("tnl_01test0tunnel").unwrap();
        let pin = CaPin::from_der(&edge_ca.cert_der);
        let draft = TunnelToken::generate(
            tunnel_id,
            EdgeAddr::parse("127.0.0.1:1").unwrap(),
            Some(pin),
        );
        let store = serde_json::json!({
            "tunnels": [{
                "id": draft.tunnel_id.as_str(),
                "workspace_id": "wrkspc_test",
                "domain": DOMAIN,
                "token_secret_sha256": hex(&draft.secret_hash()),
                "has_active_ca": true,
            }],
            "client_keys": [{"key": CLIENT_KEY, "workspace_id": "wrkspc_test", "key_id": "ck_1"}],
        });
        let store_file = d.join("store.json");
        std::fs::write(&store_file, store.to_string()).unwrap();
        set_private(&store_file);

        let mut cmd = bin();
        cmd.arg("edge")
            .args([
                "--connector-listen",
                "127.0.0.1:0",
                "--client-listen",
                "127.0.0.1:0",
            ])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(d.join("edge.crt"))
            .arg("--tls-key")
            .arg(d.join("edge.key"))
            .arg("--store-file")
            .arg(&store_file)
            .args(edge_args);
        let edge = LoggedChild::spawn(cmd);
        let line = edge
            .wait_for(Duration::from_secs(20), |l| {
                l.contains("\"edge listening\"")
            })
            .await;
        let connector_addr = field_addr(&line, "connector");
        let edge_client_addr = field_addr(&line, "client");
        let edge_admin_addr = field_addr(&line, "admin");

        let token = TunnelToken {
            edge: EdgeAddr::parse(&connector_addr.to_string()).unwrap(),
            ..draft
        };
        let token_file = d.join("tunnel-token");
        std::fs::write(&token_file, token.encode()).unwrap();
        set_private(&token_file);

        let mut cmd = bin();
        cmd.args(["connector", "run", "--url"])
            .arg(format!("http://{}", proxy.addr))
            .args(["--ha-connections", &ha.to_string()])
            .arg("--token-file")
            .arg(&token_file)
            .args(["--grace-period", "2s"]);
        let connector = LoggedChild::spawn(cmd);
        for _ in 0..200 {
            if connector
                .logs_with_message("Registered tunnel connection")
                .len()
                >= ha
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            connector
                .logs_with_message("Registered tunnel connection")
                .len(),
            ha,
            "connector did not register:\n{}\nedge:\n{}",
            connector.lines().join("\n"),
            edge.lines().join("\n")
        );
        Self {
            proxy,
            edge,
            connector,
            edge_ca,
            edge_client_addr,
            edge_admin_addr,
            token_file,
            dir,
        }
    }

    pub fn dialer(&self, key: &str) -> EdgeDialer {
        EdgeDialer::new(
            self.edge_client_addr.to_string(),
            EDGE_NAME,
            &[self.edge_ca.cert_der.clone().into()],
            Secret::new(key),
        )
        .unwrap()
    }

    pub async fn session(&self, route: &str) -> Result<Session, mcp_tunnel_client::ClientError> {
        self.dialer(CLIENT_KEY)
            .open(&route_host(route), &self.proxy.tls())
            .await
    }

    pub async fn mcp(&self) -> McpClient {
        McpClient::new(self.session("mcp").await.unwrap(), "/mcp")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn set_private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
