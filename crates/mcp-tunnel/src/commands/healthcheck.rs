//! `mcp-tunnel healthcheck URL`: GET a local health endpoint and exit 0 on 2xx. The
//! container image has no shell or curl, so Compose healthchecks call this.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// e.g. http://127.0.0.1:9091/readyz (loopback only)
    url: String,
    /// Give up after this long.
    #[arg(long, default_value = "2s")]
    timeout: String,
}

/// `http://host:port/path` with a loopback host, split into (authority, path).
fn parse(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs are checked"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => bail!("{url:?}: a port is required"),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("{url:?}: healthcheck only talks to loopback addresses");
    }
    let path = if path.is_empty() { "/" } else { path };
    Ok((authority.to_owned(), path.to_owned()))
}

pub async fn run(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let (authority, path) = parse(&args.url)?;
    let timeout = mcp_tunnel_net::duration::parse_duration(&args.timeout)
        .with_context(|| format!("--timeout {:?}", args.timeout))?;
    let status = tokio::time::timeout(timeout, get(&authority, &path))
        .await
        .map_err(|_| anyhow::anyhow!("{}: no answer within {timeout:?}", args.url))??;
    if (200..300).contains(&status) {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}: HTTP {status}", args.url);
        Ok(ExitCode::FAILURE)
    }
}

async fn get(authority: &str, path: &str) -> anyhow::Result<u16> {
    let addr = authority.replace("localhost", "127.0.0.1");
    let tcp = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connect {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn only_loopback_urls_with_ports() {
        assert_eq!(
            parse("http://127.0.0.1:9091/readyz").unwrap(),
            ("127.0.0.1:9091".into(), "/readyz".into())
        );
        assert_eq!(parse("http://localhost:1").unwrap().1, "/");
        assert!(parse("http://[::1]:9091/healthz").is_ok());
        assert!(parse("http://10.0.0.1:9091/").is_err());
        assert!(parse("http://example.com:80/").is_err());
        assert!(parse("https://127.0.0.1:1/").is_err());
        assert!(parse("http://127.0.0.1/").is_err());
    }
}
