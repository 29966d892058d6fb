//! `mcp-tunnel quickstart [--dir D] [--check]`: the whole system on this machine, as
//! its real parts — `server` (API + edge, SQLite), `setup init`, the proxy, the
//! connector, each a child process of this binary with its log in `D/logs/` — in front of
//! a built-in sample MCP server, then one tool call from the client side through the
//! edge, the connector and the proxy. Stays up until Ctrl-C; `--check` exits after the
//! call. Each stage has a name, and a failure names it.
//!
//! Re-running with the same `--dir` starts the same tunnel again: the data directory,
//! setup's output and the keys are reused, nothing is provisioned twice.

mod procs;
mod sample;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use mcp_tunnel_client::InnerTls;
use mcp_tunnel_client::edge::EdgeDialer;
use mcp_tunnel_client::mcp::McpClient;
use mcp_tunnel_control::client::{ApiClient, Method};
use mcp_tunnel_pki::crypto::Secret;
use serde_json::{Value, json};

use crate::signals::Signals;
use procs::{Proc, command, run_to_end};

#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// Where everything goes (data, credentials, logs). Default: a new directory under
    /// the system's temporary directory. Re-use one to restart the same tunnel.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Exit 0 after a successful tool call (non-zero naming the failed stage) instead
    /// of staying up.
    #[arg(long)]
    check: bool,
    /// Tunnel this MCP server (http://127.0.0.1:PORT, loopback) instead of the
    /// built-in sample; the route `mcp` forwards to it.
    #[arg(long)]
    upstream: Option<String>,
}

/// The route the quickstart configures.
const ROUTE: &str = "mcp";
const BASE_DOMAIN: &str = "tunnels.localhost";

/// A failure and the stage it happened in.
struct StageError {
    stage: &'static str,
    error: anyhow::Error,
}

trait InStage<T> {
    fn stage(self, stage: &'static str) -> Result<T, StageError>;
}

impl<T, E: Into<anyhow::Error>> InStage<T> for Result<T, E> {
    fn stage(self, stage: &'static str) -> Result<T, StageError> {
        self.map_err(|e| StageError {
            stage,
            error: e.into(),
        })
    }
}

/// Paths inside the quickstart directory.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn server(&self) -> PathBuf {
        self.root.join("server")
    }
    fn stack(&self) -> PathBuf {
        self.root.join("stack")
    }
    fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    fn admin_key(&self) -> PathBuf {
        self.root.join("admin-api-key")
    }
    fn client_key(&self) -> PathBuf {
        self.root.join("client-key")
    }
    fn reader_key(&self) -> PathBuf {
        self.root.join("reader-api-key")
    }
    fn edge_ca(&self) -> PathBuf {
        self.server().join("edge-ca.pem")
    }
}

/// What is running, for the summary and `quickstart.json`.
struct Running {
    /// `connect`'s local endpoint for the user's own MCP client.
    local: SocketAddr,
    api_url: String,
    edge_clients: SocketAddr,
    edge_connectors: String,
    tunnel_id: String,
    domain: String,
    upstream: String,
    answer: String,
    procs: Vec<Proc>,
}

pub async fn run(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::install()?;
    let mut procs = Vec::new();
    let result = tokio::select! {
        r = start(&args, &mut procs) => Some(r),
        _ = signals.recv() => None,
    };
    let running = match result {
        Some(Ok(r)) => r,
        None => {
            for p in procs.iter_mut().rev() {
                p.stop().await;
            }
            eprintln!("quickstart interrupted; stopped what had started");
            return Ok(ExitCode::from(130));
        }
        Some(Err(StageError { stage, error })) => {
            for p in procs.iter_mut().rev() {
                p.stop().await;
            }
            eprintln!("quickstart failed at stage \"{stage}\": {error:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut running = running;
    if args.check {
        println!("\nquickstart --check: the tool call went through; stopping.");
    } else {
        println!("\nRunning. Press Ctrl-C to stop.");
        wait_until_stopped(&mut signals, &mut running.procs).await;
    }
    for p in running.procs.iter_mut().rev() {
        p.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C (or SIGTERM), or a child dying, whichever first.
async fn wait_until_stopped(signals: &mut Signals, procs: &mut [Proc]) {
    loop {
        tokio::select! {
            _ = signals.recv() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Some(p) = procs.iter_mut().find_map(|p| (!p.running()).then_some(p)) {
                    eprintln!("the {} stopped; see {} — shutting down", p.name, p.log.display());
                    return;
                }
            }
        }
    }
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path)
}

fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    mcp_tunnel_setup::dir::write_atomic(path, format!("{value}\n").as_bytes(), true)?;
    Ok(())
}

fn read_trimmed(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn layout(dir: Option<&Path>) -> anyhow::Result<Layout> {
    let root = match dir {
        Some(d) => d.to_owned(),
        None => {
            let suffix = hex(&mcp_tunnel_pki::crypto::random_bytes(4));
            std::env::temp_dir().join(format!("mcp-tunnel-quickstart-{suffix}"))
        }
    };
    if root.exists() && !root.is_dir() {
        bail!("{} exists and is not a directory", root.display());
    }
    let l = Layout { root };
    private_dir(&l.root).with_context(|| format!("cannot create {}", l.root.display()))?;
    private_dir(&l.logs())?;
    // Absolute, so the commands printed at the end work from anywhere.
    let root = l.root.canonicalize()?;
    Ok(Layout { root })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn start(args: &QuickstartArgs, procs: &mut Vec<Proc>) -> Result<Running, StageError> {
    let l = layout(args.dir.as_deref()).stage("prepare")?;
    println!("mcp-tunnel quickstart in {}", l.root.display());

    // Operator: the control plane and edge.
    let edge_connectors = server_init(&l).await.stage("server init")?;
    let (api_url, edge_clients) = start_server(&l, &edge_connectors, procs)
        .await
        .stage("server")?;
    let admin = ApiClient::new(
        &api_url,
        Secret::new(read_trimmed(&l.admin_key()).stage("server")?),
        Some(&l.edge_ca()),
        None,
    )
    .stage("server")?;
    println!("  operator: Tunnels API {api_url}, edge for clients {edge_clients}");

    // Customer: a tunnel, provisioned by the setup component.
    let tunnel_id = create_tunnel(&l, &admin).await.stage("tunnel")?;
    setup_init(&l, &api_url, &tunnel_id)
        .await
        .stage("setup init")?;
    let domain = read_trimmed(&l.stack().join("tunnel-domain")).stage("setup init")?;
    println!(
        "  customer: tunnel {tunnel_id} ({domain}) provisioned in {}",
        l.stack().display()
    );

    let upstream = match &args.upstream {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let addr = sample::start().await.stage("sample MCP server")?;
            format!("http://{addr}")
        }
    };
    let proxy_addr = start_proxy(&l, &domain, &upstream, procs)
        .await
        .stage("proxy")?;
    start_connector(&l, &proxy_addr, procs)
        .await
        .stage("connector")?;
    println!("  customer: proxy {proxy_addr} -> {upstream}, connector registered at the edge");

    // MCP client: a client access key, then a tool call through the whole path.
    let client_key = client_keys(&l, &admin).await.stage("client key")?;
    let answer = call_through_tunnel(
        &l,
        edge_clients,
        &domain,
        &client_key,
        args.upstream.is_none(),
    )
    .await
    .stage("call")?;
    let local = start_connect(&l, &api_url, edge_clients, &tunnel_id, procs)
        .await
        .stage("connect")?;
    let running = Running {
        local,
        api_url,
        edge_clients,
        edge_connectors,
        tunnel_id,
        domain,
        upstream,
        answer,
        procs: std::mem::take(procs),
    };
    write_state(&l, &running).stage("summary")?;
    print_summary(&l, &running);
    Ok(running)
}

/// `server init` once; returns the connector address tokens name.
async fn server_init(l: &Layout) -> anyhow::Result<String> {
    let config = l.server().join("config.json");
    if !config.exists() {
        let edge = format!("127.0.0.1:{}", free_port()?);
        let data = l.server().display().to_string();
        let key = l.admin_key().display().to_string();
        let cmd = command(&[
            "server",
            "init",
            "--data-dir",
            &data,
            "--base-domain",
            BASE_DOMAIN,
            "--edge-address",
            &edge,
            "--admin-key-file",
            &key,
        ])?;
        run_to_end("server init", cmd, &l.log("server-init")).await?;
    }
    let v: Value = serde_json::from_str(&read_trimmed(&config)?)?;
    v["edge_address"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} has no edge_address", config.display()))
}

async fn start_server(
    l: &Layout,
    edge_connectors: &str,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<(String, SocketAddr)> {
    let data = l.server().display().to_string();
    let cmd = command(&[
        "server",
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--connector-listen",
        edge_connectors,
        "--client-listen",
        "127.0.0.1:0",
    ])?;
    let mut p = Proc::spawn("server", cmd, l.log("server"))?;
    let timeout = Duration::from_secs(30);
    // On failure `p` is dropped here, which kills it.
    let api = p.wait_for("api listening", timeout).await?;
    let edge = p.wait_for("edge listening", timeout).await?;
    let api_addr = api_field(&api, "addr")?;
    let clients = api_field(&edge, "client")?.parse()?;
    procs.push(p);
    let port = api_addr.rsplit(':').next().unwrap_or_default();
    Ok((format!("https://127.0.0.1:{port}"), clients))
}

fn api_field(v: &Value, name: &str) -> anyhow::Result<String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("log line without {name}: {v}"))
}

/// The tunnel setup attaches to: the stored one, else a new one through the API.
async fn create_tunnel(l: &Layout, admin: &ApiClient) -> anyhow::Result<String> {
    if let Ok(id) = read_trimmed(&l.stack().join("tunnel-id")) {
        return Ok(id);
    }
    let t = admin
        .call(
            Method::POST,
            "/v1/tunnels",
            Some(json!({"display_name": "quickstart"})),
        )
        .await
        .context("POST /v1/tunnels")?;
    api_field(&t, "id")
}

async fn setup_init(l: &Layout, api_url: &str, tunnel_id: &str) -> anyhow::Result<()> {
    let output = format!("dir:{}", l.stack().display());
    let mut cmd = command(&["setup", "init", "--output", &output, "--token-version", "1"])?;
    cmd.env("API_URL", api_url)
        .env("API_CA_FILE", l.edge_ca())
        .env("API_TOKEN", read_trimmed(&l.admin_key())?)
        .env("TUNNEL_ID", tunnel_id)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("ANTHROPIC_FEDERATION_RULE_ID")
        .env_remove("ANTHROPIC_ORGANIZATION_ID")
        .env_remove("ANTHROPIC_IDENTITY_TOKEN")
        .env_remove("ANTHROPIC_IDENTITY_TOKEN_FILE");
    run_to_end("setup init", cmd, &l.log("setup")).await
}

/// The CIDR that admits exactly the upstream's loopback address.
fn allowed_ip(upstream: &str) -> anyhow::Result<String> {
    let rest = upstream
        .strip_prefix("http://")
        .or_else(|| upstream.strip_prefix("https://"))
        .ok_or_else(|| anyhow!("--upstream {upstream:?}: expected http://127.0.0.1:PORT"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip: std::net::IpAddr = if host == "localhost" {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse()
            .map_err(|_| anyhow!("--upstream {upstream:?}: give an IP address, not a name"))?
    };
    Ok(match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}/32"),
        std::net::IpAddr::V6(v6) => format!("{v6}/128"),
    })
}

async fn start_proxy(
    l: &Layout,
    domain: &str,
    upstream: &str,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<String> {
    let stack = l.stack();
    let config = format!(
        "# Written by mcp-tunnel quickstart.\nlisten_addr: \"127.0.0.1:0\"\nadmin_addr: \"127.0.0.1:0\"\ntunnel_domain: {domain}\ntls:\n  cert_file: {}\n  key_file: {}\nroutes:\n  {ROUTE}: {upstream}\nupstream:\n  allowed_ips: [\"{}\"]\n",
        stack.join("tls.crt").display(),
        stack.join("tls.key").display(),
        allowed_ip(upstream)?,
    );
    let path = l.root.join("proxy.yaml");
    std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
    let cmd = command(&["proxy", "--config", &path.display().to_string()])?;
    let mut p = Proc::spawn("proxy", cmd, l.log("proxy"))?;
    let line = p
        .wait_for("proxy listening", Duration::from_secs(30))
        .await?;
    procs.push(p);
    api_field(&line, "listen_addr")
}

async fn start_connector(l: &Layout, proxy: &str, procs: &mut Vec<Proc>) -> anyhow::Result<()> {
    let token = l.stack().join("tunnel-token").display().to_string();
    let url = format!("http://{proxy}");
    let cmd = command(&[
        "connector",
        "run",
        "--url",
        &url,
        "--token-file",
        &token,
        "--ha-connections",
        "2",
        "--grace-period",
        "1s",
    ])?;
    let mut p = Proc::spawn("connector", cmd, l.log("connector"))?;
    p.wait_for("Registered tunnel connection", Duration::from_secs(30))
        .await?;
    procs.push(p);
    Ok(())
}

/// A client access key (for the edge) and a read-only API key (for `connect`, which
/// reads the tunnel's domain and CAs), made once.
async fn client_keys(l: &Layout, admin: &ApiClient) -> anyhow::Result<String> {
    if !l.client_key().exists() {
        let v = admin
            .call(
                Method::POST,
                "/v1/admin/client_keys",
                Some(json!({"name": "quickstart client"})),
            )
            .await
            .context("POST /v1/admin/client_keys")?;
        write_secret(&l.client_key(), &api_field(&v, "key")?)?;
    }
    if !l.reader_key().exists() {
        let v = admin
            .call(
                Method::POST,
                "/v1/admin/api_keys",
                Some(json!({"name": "quickstart connect", "scopes": ["workspace:read_tunnels"]})),
            )
            .await
            .context("POST /v1/admin/api_keys")?;
        write_secret(&l.reader_key(), &api_field(&v, "key")?)?;
    }
    read_trimmed(&l.client_key())
}

/// initialize, tools/list, then a tool call, through edge → connector → proxy.
async fn call_through_tunnel(
    l: &Layout,
    edge: SocketAddr,
    domain: &str,
    client_key: &str,
    sample: bool,
) -> anyhow::Result<String> {
    let edge_ca = mcp_tunnel_pki::tls::load_certs(&l.edge_ca())?;
    let tunnel_ca = mcp_tunnel_pki::tls::load_certs(&l.stack().join("ca.crt"))?;
    let dialer = EdgeDialer::new(
        edge.to_string(),
        &edge.ip().to_string(),
        &edge_ca,
        Secret::new(client_key),
    )?;
    let tls = InnerTls::trusting(&tunnel_ca)?;
    let host = format!("{ROUTE}.{domain}");
    // The edge learns of the connector's links as they register: allow a moment.
    let mut last = None;
    for _ in 0..20 {
        match dialer.open(&host, &tls).await {
            Ok(session) => {
                let mut mcp = McpClient::new(session, "/mcp");
                mcp.initialize().await.context("MCP initialize")?;
                let tools = mcp.list_tools().await.context("tools/list")?;
                if !sample {
                    let names: Vec<&str> =
                        tools.iter().filter_map(|t| t["name"].as_str()).collect();
                    return Ok(format!("tools/list: {}", names.join(", ")));
                }
                let r = mcp
                    .call_tool("add", json!({"a": 2, "b": 3}))
                    .await
                    .context("tools/call add")?;
                let text = r["content"][0]["text"].as_str().unwrap_or_default();
                if text != "5" {
                    bail!("add(2, 3) answered {r}");
                }
                return Ok(format!("add(2, 3) = {text}"));
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(anyhow!(
        "no session through the edge: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// `connect` on a loopback port, checked with an `initialize` through it.
async fn start_connect(
    l: &Layout,
    api_url: &str,
    edge: SocketAddr,
    tunnel_id: &str,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<SocketAddr> {
    let edge = edge.to_string();
    let ca = l.edge_ca().display().to_string();
    let mut cmd = command(&[
        "connect",
        "--tunnel-id",
        tunnel_id,
        "--route",
        ROUTE,
        "--edge",
        &edge,
        "--edge-ca-file",
        &ca,
        "--api-url",
        api_url,
        "--api-ca-file",
        &ca,
        "--listen",
        "127.0.0.1:0",
    ])?;
    cmd.env("MCP_TUNNEL_CLIENT_KEY", read_trimmed(&l.client_key())?)
        .env("MCP_TUNNEL_API_KEY", read_trimmed(&l.reader_key())?);
    let mut p = Proc::spawn("connect", cmd, l.log("connect"))?;
    let line = p
        .wait_for("connect listening", Duration::from_secs(30))
        .await?;
    let addr: SocketAddr = api_field(&line, "addr")?.parse()?;
    let http = mcp_tunnel_control::http_client::HttpClient::new(None)?;
    // `initialize`: the one request every MCP server answers without a session.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "mcp-tunnel quickstart", "version": env!("CARGO_PKG_VERSION")}}});
    let resp = http
        .send(
            Method::POST,
            &format!("http://{addr}/mcp"),
            &[
                ("accept", "application/json, text/event-stream".to_owned()),
                ("mcp-protocol-version", "2025-06-18".to_owned()),
            ],
            Some(body.to_string().into_bytes()),
        )
        .await?;
    if !resp.status.is_success() {
        bail!(
            "initialize through connect answered HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
    }
    procs.push(p);
    Ok(addr)
}

fn write_state(l: &Layout, r: &Running) -> anyhow::Result<()> {
    let v = json!({
        "dir": l.root,
        "api_url": r.api_url,
        "api_ca_file": l.edge_ca(),
        "admin_key_file": l.admin_key(),
        "reader_key_file": l.reader_key(),
        "client_key_file": l.client_key(),
        "edge_clients": r.edge_clients.to_string(),
        "edge_connectors": r.edge_connectors,
        "edge_ca_file": l.edge_ca(),
        "tunnel_id": r.tunnel_id,
        "tunnel_domain": r.domain,
        "tunnel_ca_file": l.stack().join("ca.crt"),
        "route_url": format!("https://{ROUTE}.{}/mcp", r.domain),
        "upstream": r.upstream,
        "local_endpoint": format!("http://{}/mcp", r.local),
        "logs": l.logs(),
    });
    std::fs::write(
        l.root.join("quickstart.json"),
        serde_json::to_string_pretty(&v)? + "\n",
    )?;
    Ok(())
}

fn print_summary(l: &Layout, r: &Running) {
    let me = procs::me()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "mcp-tunnel".into());
    let d = l.root.display();
    let route_url = format!("https://{ROUTE}.{}/mcp", r.domain);
    println!(
        "
Through client -> edge -> connector -> proxy -> MCP server: {answer}

  tunnel        {id}, domain {domain}
  route URL     {route_url}  (route \"{ROUTE}\" -> {upstream})
  Tunnels API   {api}  (admin key: {d}/admin-api-key, CA: {d}/server/edge-ca.pem)
  edge          MCP clients at {edge}, connectors at {conn}

Point your own MCP client (streamable HTTP) at the local endpoint of `connect`:
  http://{local}/mcp

Call a tool yourself (a client access key, the edge's CA, the tunnel's CA):
  MCP_TUNNEL_CLIENT_KEY=$(cat {d}/client-key) {me} call {route_url} \\
    --edge {edge} --edge-ca-file {d}/server/edge-ca.pem --ca-file {d}/stack/ca.crt \\
    --tool echo --args '{{\"text\": \"hello\"}}'

Credentials: {d}/stack (tunnel token, CA and server certificate, from `setup init`),
             {d}/client-key, {d}/reader-api-key, {d}/admin-api-key (all mode 0600)
Logs:        {d}/logs (server, setup, proxy, connector, connect)
Everything above as JSON: {d}/quickstart.json
Stop with Ctrl-C; `{me} quickstart --dir {d}` starts this same tunnel again.",
        answer = r.answer,
        local = r.local,
        id = r.tunnel_id,
        domain = r.domain,
        upstream = r.upstream,
        api = r.api_url,
        edge = r.edge_clients,
        conn = r.edge_connectors,
    );
}
