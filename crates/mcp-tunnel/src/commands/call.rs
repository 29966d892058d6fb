//! `mcp-tunnel call URL (--list | --tool NAME [--args JSON]) --ca-file FILE
//! (--edge ADDR --edge-ca-file FILE | --proxy ADDR)`: a one-shot MCP client over a tunnel
//! session, to check a tunnel from a terminal.
//!
//! With `--edge` the session goes the way an MCP client's does: outer TLS to the edge,
//! authenticated with a client access key (`MCP_TUNNEL_CLIENT_KEY` or `--client-key-file`;
//! never on the command line), then inner TLS to the proxy. With `--proxy` it goes
//! straight to a proxy's listener (the customer checking their own stack). Either way the
//! proxy's certificate must satisfy SPEC §8 against `--ca-file`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use mcp_tunnel_client::edge::EdgeDialer;
use mcp_tunnel_client::mcp::McpClient;
use mcp_tunnel_client::{InnerTls, Session, Target};
use mcp_tunnel_pki::crypto::Secret;
use tokio::net::TcpStream;

#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The MCP endpoint, e.g. https://mcp.abcd1234.tunnel.example/mcp
    url: String,
    /// List the server's tools.
    #[arg(long, conflicts_with = "tool")]
    list: bool,
    /// Call this tool.
    #[arg(long, required_unless_present = "list")]
    tool: Option<String>,
    /// Tool arguments as a JSON object.
    #[arg(long, default_value = "{}", requires = "tool")]
    args: String,
    /// The edge's client listener (host:port): the path real clients take.
    #[arg(
        long,
        required_unless_present = "proxy",
        conflicts_with = "proxy",
        requires = "edge_ca_file"
    )]
    edge: Option<String>,
    /// CA certificate(s) (PEM) the edge's certificate must chain to.
    #[arg(long)]
    edge_ca_file: Option<PathBuf>,
    /// Name to verify the edge's certificate for (default: the host of --edge).
    #[arg(long)]
    edge_name: Option<String>,
    /// File holding the client access key (default: $MCP_TUNNEL_CLIENT_KEY).
    #[arg(long)]
    client_key_file: Option<PathBuf>,
    /// Address of a proxy's listener, to test a proxy without the edge.
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// CA certificate(s) (PEM) the proxy's certificate must be issued by.
    #[arg(long)]
    ca_file: PathBuf,
    /// Print raw JSON results.
    #[arg(long)]
    json: bool,
}

/// `https://host[:port]/path` split into host and path.
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url.strip_prefix("https://").with_context(|| {
        format!("{url:?}: the URL must start with https:// (inner TLS is always on)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/mcp"),
    };
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if host.is_empty() || host.contains('@') {
        bail!("{url:?}: no valid host");
    }
    Ok((host.to_ascii_lowercase(), path.to_owned()))
}

async fn open_session(args: &CallArgs, host: &str, tls: &InnerTls) -> anyhow::Result<Session> {
    if let Some(proxy) = args.proxy {
        let tcp = TcpStream::connect(proxy)
            .await
            .with_context(|| format!("connect to the proxy at {proxy}"))?;
        return Ok(Session::open(tcp, &Target::new(proxy.to_string(), host), tls).await?);
    }
    let edge = args
        .edge
        .as_deref()
        .context("--edge or --proxy is required")?;
    let edge_ca = args
        .edge_ca_file
        .as_ref()
        .context("--edge-ca-file is required with --edge")?;
    let key = match &args.client_key_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("read {}", path.display()))?
            .trim()
            .to_owned(),
        None => std::env::var("MCP_TUNNEL_CLIENT_KEY")
            .context("no client access key: set MCP_TUNNEL_CLIENT_KEY or pass --client-key-file")?,
    };
    let name = match &args.edge_name {
        Some(n) => n.clone(),
        None => edge
            .rsplit_once(':')
            .map_or(edge, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    };
    let dialer = EdgeDialer::new(
        edge,
        &name,
        &mcp_tunnel_pki::tls::load_certs(edge_ca)?,
        Secret::new(key),
    )?;
    Ok(dialer.open(host, tls).await?)
}

pub async fn run(args: CallArgs) -> anyhow::Result<ExitCode> {
    let (host, path) = split_url(&args.url)?;
    let args_json: serde_json::Value = if args.list {
        serde_json::Value::Null
    } else {
        let v: serde_json::Value = serde_json::from_str(&args.args)
            .with_context(|| format!("--args is not valid JSON: {}", args.args))?;
        if !v.is_object() {
            bail!("--args must be a JSON object, got {v}");
        }
        v
    };
    let cas = mcp_tunnel_pki::tls::load_certs(&args.ca_file)?;
    let tls = InnerTls::trusting(&cas)?;
    let session = open_session(&args, &host, &tls)
        .await
        .with_context(|| format!("open a tunnel session to {host}"))?;
    let mut mcp = McpClient::new(session, path);
    let init = mcp.initialize().await.context("MCP initialize")?;
    if args.list {
        let tools = mcp.list_tools().await.context("tools/list")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&tools)?);
        } else {
            let server = init["serverInfo"]["name"].as_str().unwrap_or("?");
            println!("{} tools on {server}:", tools.len());
            for t in &tools {
                println!(
                    "  {:<20} {}",
                    t["name"].as_str().unwrap_or("?"),
                    t["description"]
                        .as_str()
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("")
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tool = args.tool.as_deref().unwrap_or_default();
    let result = mcp
        .call_tool(tool, args_json)
        .await
        .with_context(|| format!("tools/call {tool}"))?;
    let is_error = result["isError"].as_bool().unwrap_or(false);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        for item in result["content"].as_array().into_iter().flatten() {
            match item["text"].as_str() {
                Some(text) => println!("{text}"),
                None => println!("{item}"),
            }
        }
    }
    Ok(if is_error {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("https://MCP.ab.example/mcp?x=1").unwrap(),
            ("mcp.ab.example".into(), "/mcp?x=1".into())
        );
        assert_eq!(
            split_url("https://a.b:443").unwrap(),
            ("a.b".into(), "/mcp".into())
        );
        assert!(split_url("http://a.b/mcp").is_err());
        assert!(split_url("https://u@a.b/").is_err());
        assert!(split_url("https:///x").is_err());
    }
}
