//! The whole path (client → edge → connector → proxy → upstream) as release processes
//! whose roles can be stopped, killed and started again on the same ports, with the
//! proxy's certificate and the tunnel token replaceable mid-run, and optionally a
//! [`FaultProxy`] on each link. Unlike testutil's `Stack`, logs go to files (see
//! `procs`), so millions of requests do not fill the load generator's memory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use mcp_tunnel_client::edge::EdgeDialer;
use mcp_tunnel_client::{ClientError, InnerTls, Session};
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_pki::generate::{self, GeneratedCert, KeyKind};
use mcp_tunnel_proto::{CaPin, EdgeAddr, TunnelId, TunnelToken};
use mcp_tunnel_testutil::harness::binary;
use mcp_tunnel_testutil::pki::TestPki;

use crate::faultproxy::FaultProxy;
use crate::procs::{Proc, free_port, json_field};

pub const DOMAIN: &str = "bench000.tunnel.test";
pub const ROUTE_HOST: &str = "mcp.bench000.tunnel.test";
const CLIENT_KEY: &str = "ck_bench_0123456789abcdefghijklmnopqrstuv";
const EDGE_NAME: &str = "edge.test";
pub const REGISTERED: &str = "Registered tunnel connection";

pub type DialerFactory = std::sync::Arc<dyn Fn() -> anyhow::Result<EdgeDialer> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct RigOptions {
    pub upstream: SocketAddr,
    pub ha: usize,
    pub proxy_log_level: String,
    /// Put a fault proxy on the client→edge, connector→edge and proxy→upstream links.
    pub faults: bool,
    /// Run one role (`edge`, `connector` or `proxy`) under this command prefix, e.g.
    /// `valgrind --tool=callgrind …` for the profile.
    pub wrap: Option<(String, Vec<String>)>,
}

/// The fault proxies, one per link, when [`RigOptions::faults`] is set.
#[derive(Debug)]
pub struct Links {
    pub client: FaultProxy,
    pub tunnel: FaultProxy,
    pub upstream: FaultProxy,
}

#[derive(Debug)]
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub opts: RigOptions,
    pub pki: TestPki,
    edge_ca: GeneratedCert,
    pub token: TunnelToken,
    pub edge_conn_port: u16,
    pub edge_client_port: u16,
    pub proxy_port: u16,
    pub links: Option<Links>,
    pub edge: Option<Proc>,
    pub connector: Option<Proc>,
    pub proxy: Option<Proc>,
    pub dialer: EdgeDialer,
    pub inner: InnerTls,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Written beside and renamed, so a watcher never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The `mcp-tunnel` command for `role`, under the wrapper if this role has one.
fn command(opts: &RigOptions, role: &str) -> tokio::process::Command {
    match &opts.wrap {
        Some((r, prefix)) if r == role && !prefix.is_empty() => {
            let mut cmd = tokio::process::Command::new(&prefix[0]);
            cmd.args(&prefix[1..]).arg(binary());
            cmd
        }
        _ => tokio::process::Command::new(binary()),
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Rig {
    /// Starts every role and waits until the connector has registered all its links.
    pub async fn start(opts: RigOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let pki = TestPki::new(d, DOMAIN);
        let edge_ca = generate::generate_ca("bench edge CA", Duration::from_secs(86_400))?;
        let edge_cert = generate::issue_server_cert(
            &edge_ca.cert_pem,
            edge_ca.key_pem.expose(),
            &[EDGE_NAME.to_owned(), "127.0.0.1".to_owned()],
            Duration::from_secs(86_400),
            KeyKind::EcdsaP256,
        )?;
        std::fs::write(
            d.join("edge.crt"),
            format!("{}{}", edge_cert.cert_pem, edge_ca.cert_pem),
        )?;
        write_private(&d.join("edge.key"), edge_cert.key_pem.expose())?;

        let (edge_conn_port, edge_client_port, proxy_port) =
            (free_port()?, free_port()?, free_port()?);
        let links = if opts.faults {
            Some(Links {
                client: FaultProxy::start(loopback(0), loopback(edge_client_port)).await?,
                tunnel: FaultProxy::start(loopback(0), loopback(edge_conn_port)).await?,
                upstream: FaultProxy::start(loopback(0), opts.upstream).await?,
            })
        } else {
            None
        };
        let tunnel_addr = links
            .as_ref()
            .map_or(loopback(edge_conn_port), |l| l.tunnel.addr);
        let client_addr = links
            .as_ref()
            .map_or(loopback(edge_client_port), |l| l.client.addr);
        let token = TunnelToken::generate(
            TunnelId::parse("tnl_01bench0tunnel")?,
            EdgeAddr::parse(&tunnel_addr.to_string())?,
            Some(CaPin::from_der(&edge_ca.cert_der)),
        );
        let dialer = EdgeDialer::new(
            client_addr.to_string(),
            EDGE_NAME,
            &[edge_ca.cert_der.clone().into()],
            Secret::new(CLIENT_KEY),
        )?;
        let inner = InnerTls::trusting(&[pki.ca_der()])?;
        let mut rig = Self {
            dir,
            opts,
            pki,
            edge_ca,
            token,
            edge_conn_port,
            edge_client_port,
            proxy_port,
            links,
            edge: None,
            connector: None,
            proxy: None,
            dialer,
            inner,
        };
        rig.write_store()?;
        write_private(&rig.token_file(), &rig.token.encode())?;
        rig.start_proxy().await?;
        rig.start_edge().await?;
        rig.start_connector().await?;
        Ok(rig)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn token_file(&self) -> PathBuf {
        self.path("tunnel-token")
    }

    fn write_store(&self) -> anyhow::Result<()> {
        let store = serde_json::json!({
            "tunnels": [{
                "id": self.token.tunnel_id.as_str(),
                "workspace_id": "wrkspc_bench",
                "domain": DOMAIN,
                "token_secret_sha256": hex(&self.token.secret_hash()),
                "has_active_ca": true,
            }],
            "client_keys": [{"key": CLIENT_KEY, "workspace_id": "wrkspc_bench", "key_id": "ck_1"}],
        });
        write_private(&self.path("store.json"), &store.to_string())
    }

    /// Where the proxy sends the `mcp` route (the upstream, or its fault proxy).
    fn upstream_addr(&self) -> SocketAddr {
        self.links
            .as_ref()
            .map_or(self.opts.upstream, |l| l.upstream.addr)
    }

    pub async fn start_proxy(&mut self) -> anyhow::Result<()> {
        let config = self.path("proxy.yaml");
        std::fs::write(
            &config,
            format!(
                "listen_addr: \"127.0.0.1:{}\"\nadmin_addr: off\nlog_level: {}\ntunnel_domain: {DOMAIN}\ntls:\n  cert_file: {}\n  key_file: {}\n  reload_interval: 200ms\nroutes:\n  mcp: http://{}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\nlimits:\n  max_concurrent_streams: 1000\n",
                self.proxy_port,
                self.opts.proxy_log_level,
                self.pki.cert_file.display(),
                self.pki.key_file.display(),
                self.upstream_addr(),
            ),
        )?;
        let mut cmd = command(&self.opts, "proxy");
        cmd.arg("proxy").arg("-config").arg(&config);
        let proxy = Proc::spawn("proxy", cmd, &self.path("proxy.log"))?;
        wait_port(self.proxy_port, Duration::from_secs(60))
            .await
            .with_context(|| format!("proxy did not listen:\n{}", proxy.output()))?;
        self.proxy = Some(proxy);
        Ok(())
    }

    pub async fn start_edge(&mut self) -> anyhow::Result<()> {
        let mut cmd = command(&self.opts, "edge");
        cmd.arg("edge")
            .arg("--connector-listen")
            .arg(format!("127.0.0.1:{}", self.edge_conn_port))
            .arg("--client-listen")
            .arg(format!("127.0.0.1:{}", self.edge_client_port))
            .arg("--tls-cert")
            .arg(self.path("edge.crt"))
            .arg("--tls-key")
            .arg(self.path("edge.key"))
            .arg("--store-file")
            .arg(self.path("store.json"));
        // Restarts append to the same log: only what this run writes counts.
        let log = self.path("edge.log");
        let mark = std::fs::metadata(&log).map_or(0, |m| m.len());
        let mut edge = Proc::spawn("edge", cmd, &log)?;
        let line = edge
            .wait_lines(mark, "\"edge listening\"", 1, Duration::from_secs(60))
            .await?;
        let _ = json_field(&line, "client")?;
        self.edge = Some(edge);
        Ok(())
    }

    pub async fn start_connector(&mut self) -> anyhow::Result<()> {
        let log = self.path("connector.log");
        let mark = std::fs::metadata(&log).map_or(0, |m| m.len());
        let mut connector = self.spawn_connector(&log)?;
        let ha = self.opts.ha;
        connector
            .wait_lines(mark, REGISTERED, ha, Duration::from_secs(60))
            .await?;
        self.connector = Some(connector);
        Ok(())
    }

    /// A connector process for this tunnel, not yet waited for, appending to `log`.
    pub fn spawn_connector(&self, log: &std::path::Path) -> anyhow::Result<Proc> {
        let mut cmd = command(&self.opts, "connector");
        cmd.args(["connector", "run", "--url"])
            .arg(format!("http://127.0.0.1:{}", self.proxy_port))
            .args(["--ha-connections", &self.opts.ha.to_string()])
            .arg("--token-file")
            .arg(self.token_file())
            .args(["--grace-period", "2s"]);
        Proc::spawn("connector", cmd, log)
    }

    /// Waits until the running connector logs `n` more registrations after `mark`.
    pub async fn wait_registered(
        &mut self,
        mark: u64,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let c = self.connector.as_mut().context("no connector running")?;
        c.wait_lines(mark, REGISTERED, n, timeout).await?;
        Ok(t.elapsed())
    }

    pub fn connector_mark(&self) -> u64 {
        self.connector.as_ref().map_or(0, Proc::mark)
    }

    /// A new tunnel token (same tunnel, new secret): the connector's token file and the
    /// edge's store get it. The standalone edge reads its store file at start only, so
    /// the caller restarts the edge for the store to take effect.
    pub fn rotate_token(&mut self) -> anyhow::Result<()> {
        self.token = TunnelToken::generate(
            self.token.tunnel_id.clone(),
            self.token.edge.clone(),
            Some(CaPin::from_der(&self.edge_ca.cert_der)),
        );
        write_private(&self.token_file(), &self.token.encode())?;
        self.write_store()
    }

    /// A new proxy certificate from the tunnel CA (key `kind`); the proxy polls its files
    /// every 200 ms and serves the pair to new handshakes.
    pub fn rotate_cert(&self, kind: KeyKind) -> anyhow::Result<String> {
        let cert = generate::issue_server_cert(
            &self.pki.ca.cert_pem,
            self.pki.ca.key_pem.expose(),
            &[format!("*.{DOMAIN}")],
            Duration::from_secs(86_400 * 7),
            kind,
        )?;
        // Key first: the proxy loads when the certificate changes, and must find the
        // matching key by then.
        write_private(&self.pki.key_file, cert.key_pem.expose())?;
        std::fs::write(self.pki.cert_file.with_extension("tmp"), &cert.cert_pem)?;
        std::fs::rename(
            self.pki.cert_file.with_extension("tmp"),
            &self.pki.cert_file,
        )?;
        Ok(cert.fingerprint)
    }

    /// A new session through the edge (outer TLS resumes across sessions of one dialer).
    pub async fn session(&self) -> Result<Session, ClientError> {
        self.dialer.open(ROUTE_HOST, &self.inner).await
    }

    pub async fn session_with(
        &self,
        dialer: &EdgeDialer,
        inner: &InnerTls,
    ) -> Result<Session, ClientError> {
        dialer.open(ROUTE_HOST, inner).await
    }

    /// A dialer of its own: no outer-TLS session to resume.
    pub fn fresh_dialer(&self) -> anyhow::Result<EdgeDialer> {
        (self.dialer_factory())()
    }

    /// Makes dialers of their own (each with an empty TLS session cache).
    pub fn dialer_factory(&self) -> DialerFactory {
        let client_addr = self
            .links
            .as_ref()
            .map_or(loopback(self.edge_client_port), |l| l.client.addr);
        let ca = self.edge_ca.cert_der.clone();
        std::sync::Arc::new(move || {
            Ok(EdgeDialer::new(
                client_addr.to_string(),
                EDGE_NAME,
                &[ca.clone().into()],
                Secret::new(CLIENT_KEY),
            )?)
        })
    }

    /// Inner TLS trusting the tunnel CA, optionally with resumption switched off.
    pub fn inner_tls(&self, resumption: bool) -> anyhow::Result<InnerTls> {
        let verifier =
            mcp_tunnel_pki::verifier::TunnelServerVerifier::new(vec![self.pki.ca_der()])?;
        let mut config = mcp_tunnel_pki::verifier::client_config(
            std::sync::Arc::new(verifier),
            None,
            Vec::new(),
        )?;
        if !resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(InnerTls::from_config(config))
    }

    /// Process ids of the three roles now (0 for one that is not running).
    pub fn pids(&self) -> [(&'static str, u32); 3] {
        let pid = |p: &Option<Proc>| p.as_ref().map_or(0, Proc::pid);
        [
            ("edge", pid(&self.edge)),
            ("connector", pid(&self.connector)),
            ("proxy", pid(&self.proxy)),
        ]
    }
}

/// Waits until something accepts TCP connections on the loopback `port`.
pub async fn wait_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(loopback(port)).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
