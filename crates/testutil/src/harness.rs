//! Harnesses that run the real `mcp-tunnel` binary: a proxy alone, or the whole data
//! path (MCP server ← proxy ← connector → edge ← client), each with run-time
//! certificates, ephemeral ports and captured logs. Used by the end-to-end tests and the
//! benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::logs::LoggedChild;
use crate::pki::TestPki;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use mcp_tunnel_client::mcp::McpClient;
use mcp_tunnel_client::{ClientBody, InnerTls, Session, Target};
use tokio::net::TcpStream;
use tokio::process::Command;

pub const DOMAIN: &str = "abcd1234.tunnel.test";

/// The `mcp-tunnel` binary of the same build as the running test or benchmark: the
/// first `mcp-tunnel` found walking up from this executable (tests live in
/// `target/<profile>/deps/`, benchmarks in `target/<profile>/`).
pub fn binary() -> PathBuf {
    let me = std::env::current_exe().expect("current executable");
    me.ancestors()
        .skip(1)
        .map(|d| d.join("mcp-tunnel"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no mcp-tunnel binary next to {}: build it first",
                me.display()
            )
        })
}

pub fn bin() -> Command {
    Command::new(binary())
}

/// A proxy process with its own certificates, config and captured logs.
#[derive(Debug)]
pub struct ProxyHarness {
    pub dir: tempfile::TempDir,
    pub pki: TestPki,
    pub proxy: LoggedChild,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
}

impl ProxyHarness {
    /// Starts a proxy with `body` (YAML) added to a config that sets the listener, admin
    /// listener and TLS files. `body` must contain `routes`.
    pub async fn start(body: &str) -> Self {
        Self::start_at_level(body, "debug").await
    }

    /// Like [`ProxyHarness::start`] with another `log_level` (benchmarks use `info`, what
    /// a deployment runs).
    pub async fn start_at_level(body: &str, log_level: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path(), DOMAIN);
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "listen_addr: \"127.0.0.1:0\"\nadmin_addr: \"127.0.0.1:0\"\ntunnel_domain: {DOMAIN}\nlog_level: {log_level}\ntls:\n  cert_file: {}\n  key_file: {}\n  reload_interval: 200ms\n{body}",
                pki.cert_file.display(),
                pki.key_file.display()
            ),
        )
        .unwrap();
        let mut cmd = bin();
        cmd.arg("proxy").arg("-config").arg(&config);
        let proxy = LoggedChild::spawn(cmd);
        let line = proxy
            .wait_for(Duration::from_secs(20), |l| {
                l.contains("\"proxy listening\"")
            })
            .await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = v["listen_addr"].as_str().unwrap().parse().unwrap();
        let admin = v["admin_addr"]
            .as_str()
            .unwrap()
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .parse()
            .unwrap();
        Self {
            dir,
            pki,
            proxy,
            addr,
            admin,
            config,
        }
    }

    pub fn tls(&self) -> InnerTls {
        InnerTls::trusting(&[self.pki.ca_der()]).unwrap()
    }

    /// A new inner-TLS session for `route` (a bare route name or a full host).
    pub async fn session(&self, route: &str) -> Session {
        self.try_session(route, &self.tls()).await.unwrap()
    }

    pub async fn try_session(
        &self,
        route: &str,
        tls: &InnerTls,
    ) -> Result<Session, mcp_tunnel_client::ClientError> {
        let host = route_host(route);
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        Session::open(tcp, &Target::new(self.addr.to_string(), host), tls).await
    }

    pub async fn mcp(&self, route: &str) -> McpClient {
        McpClient::new(self.session(route).await, "/mcp")
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }
}

pub fn route_host(route: &str) -> String {
    if route.contains('.') {
        route.to_owned()
    } else {
        format!("{route}.{DOMAIN}")
    }
}

pub fn empty() -> ClientBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// GET `path` over a session; returns status, headers and the whole body.
pub async fn get(session: &mut Session, path: &str) -> (u16, http::HeaderMap, Bytes) {
    let resp = session
        .send(Request::get(path).body(empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// A plain HTTP/1.1 GET on loopback (admin endpoints).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get(path)
                .header("host", addr.to_string())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
