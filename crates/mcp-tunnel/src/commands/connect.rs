//! `mcp-tunnel connect --tunnel-id tnl_… --edge ADDR …`: a local plain-HTTP endpoint
//! (loopback by default) that any MCP client can point at. Each request goes to the
//! tunnel's route over pooled inner-TLS sessions through the edge: outer TLS to the edge
//! with a client access key, inner TLS to the proxy with SNI = route host, verified
//! against the CAs registered for the tunnel (SPEC §8), which this command reads from
//! the Tunnels API at start and again every `--refresh-interval`.
//!
//! Credentials come from the environment or files, never argv: `MCP_TUNNEL_CLIENT_KEY`
//! (or `--client-key-file`) for the edge, `MCP_TUNNEL_API_KEY` (or `--api-key-file`; a
//! `workspace:read_tunnels` key is enough) for the API.

mod pool;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mcp_tunnel_client::edge::EdgeDialer;
use mcp_tunnel_client::{ClientBody, ClientError, InnerTls};
use mcp_tunnel_control::client::{ApiClient, Method};
use mcp_tunnel_pki::crypto::Secret;

use crate::logging;
use pool::{Pool, PooledBody};

/// Largest request body forwarded (bodies are buffered so a request can be retried on
/// a fresh session when a pooled one turns out to be closed).
const MAX_REQUEST_BODY: usize = 16 << 20;

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The tunnel to reach (tnl_…).
    #[arg(long, env = "MCP_TUNNEL_TUNNEL_ID")]
    tunnel_id: String,
    /// The route on the tunnel: requests go to <route>.<tunnel domain>.
    #[arg(long, default_value = "mcp")]
    route: String,
    /// Local address to serve plain HTTP on (loopback: it carries no authentication).
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: SocketAddr,
    /// The edge's client listener (host:port).
    #[arg(long)]
    edge: String,
    /// CA certificate(s) (PEM) the edge's certificate must chain to.
    #[arg(long)]
    edge_ca_file: PathBuf,
    /// Name to verify the edge's certificate for (default: the host of --edge).
    #[arg(long)]
    edge_name: Option<String>,
    /// File holding the client access key (default: $MCP_TUNNEL_CLIENT_KEY).
    #[arg(long)]
    client_key_file: Option<PathBuf>,
    /// The Tunnels API, for the tunnel's domain and registered CAs.
    #[arg(long, env = "MCP_TUNNEL_API_URL", default_value = mcp_tunnel_control::client::DEFAULT_API_URL)]
    api_url: String,
    /// Extra CA (PEM) to trust for the API.
    #[arg(long, env = "MCP_TUNNEL_CA_FILE")]
    api_ca_file: Option<PathBuf>,
    /// File holding an API key (default: $MCP_TUNNEL_API_KEY).
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// How often the registered CAs are read again (a revoked CA stops being trusted).
    #[arg(long, default_value = "60s", value_parser = duration)]
    refresh_interval: Duration,
    /// How long a request waits for the tunnel to become reachable.
    #[arg(long, default_value = "15s", value_parser = duration)]
    connect_timeout: Duration,
    /// Idle sessions kept open for reuse.
    #[arg(long, default_value_t = 8)]
    pool_size: usize,
    /// Requests carried at once by one h2 session (MCP SSE streams included): at most the
    /// proxy's `limits.max_concurrent_streams` (default 100), or requests beyond it wait.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    streams_per_session: u32,
}

fn duration(s: &str) -> Result<Duration, String> {
    mcp_tunnel_net::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn secret_from(file: Option<&PathBuf>, env: &str, what: &str) -> anyhow::Result<Secret> {
    let value = match file {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
        None => std::env::var(env)
            .with_context(|| format!("no {what}: set {env} or pass the --…-file flag"))?,
    };
    let value = value.trim();
    if value.is_empty() {
        bail!("the {what} is empty");
    }
    Ok(Secret::new(value))
}

/// The tunnel's domain and its active CA certificates (PEM), from the API.
async fn fetch_trust(api: &ApiClient, tunnel_id: &str) -> anyhow::Result<(String, Vec<String>)> {
    let t = api
        .call(Method::GET, &format!("/v1/tunnels/{tunnel_id}"), None)
        .await
        .context("GET tunnel")?;
    if t["status"] == "archived" || !t["archived_at"].is_null() {
        bail!("tunnel {tunnel_id} is archived");
    }
    let domain = t["domain"]
        .as_str()
        .context("the tunnel has no domain")?
        .to_owned();
    let certs = api
        .call(
            Method::GET,
            &format!("/v1/tunnels/{tunnel_id}/certificates?limit=1000"),
            None,
        )
        .await
        .context("GET certificates")?;
    let mut cas = Vec::new();
    for c in certs["data"].as_array().into_iter().flatten() {
        if !c["archived_at"].is_null() {
            continue;
        }
        let pem = c["ca_certificate_pem"]
            .as_str()
            .context("a certificate without ca_certificate_pem")?;
        cas.push(pem.to_owned());
    }
    cas.sort();
    if cas.is_empty() {
        bail!(
            "tunnel {tunnel_id} has no active CA certificate (it needs one before clients can connect)"
        );
    }
    Ok((domain, cas))
}

/// Trust in exactly these CAs, each checked against the CA rules of SPEC §8 first.
fn inner_tls(pems: &[String]) -> anyhow::Result<InnerTls> {
    let mut cas = Vec::new();
    for pem in pems {
        let v = mcp_tunnel_pki::verifier::TunnelServerVerifier::from_pem(pem)
            .context("a registered CA certificate is unusable")?;
        cas.extend(v.cas().iter().cloned());
    }
    Ok(InnerTls::trusting(&cas)?)
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let mut signals = crate::signals::Signals::install()?;
    logging::init("info", logging::Format::Json);
    let api = ApiClient::new(
        &args.api_url,
        secret_from(args.api_key_file.as_ref(), "MCP_TUNNEL_API_KEY", "API key")?,
        args.api_ca_file.as_deref(),
        None,
    )?;
    let client_key = secret_from(
        args.client_key_file.as_ref(),
        "MCP_TUNNEL_CLIENT_KEY",
        "client access key",
    )?;
    let (domain, cas) = fetch_trust(&api, &args.tunnel_id).await?;
    let edge_name = match &args.edge_name {
        Some(n) => n.clone(),
        None => args
            .edge
            .rsplit_once(':')
            .map_or(args.edge.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    };
    let dialer = EdgeDialer::new(
        args.edge.clone(),
        &edge_name,
        &mcp_tunnel_pki::tls::load_certs(&args.edge_ca_file)?,
        client_key,
    )?;
    let route_host = format!("{}.{domain}", args.route);
    let pool = Pool::new(
        dialer,
        route_host.clone(),
        inner_tls(&cas)?,
        args.pool_size,
        args.streams_per_session as usize,
        args.connect_timeout,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, route_host = %route_host, tunnel_id = %args.tunnel_id, cas = cas.len(), "connect listening");
    tokio::spawn(refresh(
        api,
        args.tunnel_id.clone(),
        pool.clone(),
        cas,
        args.refresh_interval,
    ));
    tokio::select! {
        _ = serve(listener, pool) => {}
        _ = signals.recv() => tracing::info!("shutting down"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the registered CAs again every `every`; a change replaces the trust.
async fn refresh(
    api: ApiClient,
    tunnel_id: String,
    pool: Arc<Pool>,
    mut current: Vec<String>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        match fetch_trust(&api, &tunnel_id).await {
            Ok((_, cas)) if cas != current => match inner_tls(&cas) {
                Ok(tls) => {
                    tracing::info!(cas = cas.len(), "the tunnel's CA certificates changed");
                    pool.set_trust(tls);
                    current = cas;
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "new CA certificates refused"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "refreshing the tunnel's CA certificates failed"
            ),
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, pool: Arc<Pool>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(forward(&pool, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

type LocalBody = UnsyncBoxBody<Bytes, hyper::Error>;

fn local_error(status: StatusCode, message: String) -> Response<LocalBody> {
    tracing::warn!(status = status.as_u16(), error = %message, "request not forwarded");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::from(format!("mcp-tunnel connect: {message}\n")))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap_or_default()
}

/// Headers that belong to one connection, not to the request: the proxy's hop-by-hop
/// list, plus `Host` and `Content-Length`, which the session sets for its own hop.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    mcp_tunnel_proxy::forward::strip_hop_by_hop(h);
    h.remove(header::HOST);
    h.remove(header::CONTENT_LENGTH);
}

async fn forward(pool: &Arc<Pool>, req: Request<Incoming>) -> Response<LocalBody> {
    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return local_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body not read: {e}"),
            );
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let build = || -> Result<Request<ClientBody>, http::Error> {
        let mut r = Request::builder().method(parts.method.clone()).uri(&path);
        if let Some(h) = r.headers_mut() {
            h.extend(parts.headers.clone());
        }
        r.body(
            Full::new(body.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    };
    // A pooled session may have been closed by the far end in the meantime: one retry
    // on a fresh session (safe: nothing reached the server if sending failed).
    for attempt in 0..2 {
        let lease = match if attempt == 0 {
            pool.checkout().await
        } else {
            pool.open().await
        } {
            Ok(l) => l,
            Err(e) => return local_error(status_for(&e), e.to_string()),
        };
        let reused = lease.reused;
        let mut lease = lease;
        let req = match build() {
            Ok(r) => r,
            Err(e) => return local_error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        match lease.session.send(req).await {
            Ok(resp) => {
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                let body = PooledBody::new(rbody, lease, pool.clone()).boxed_unsync();
                return Response::from_parts(rparts, body);
            }
            Err(e) if reused && attempt == 0 => {
                tracing::debug!(error = %e, "pooled session failed, retrying on a new one");
            }
            Err(e) => return local_error(status_for(&e), e.to_string()),
        }
    }
    local_error(StatusCode::BAD_GATEWAY, "no session to the tunnel".into())
}

/// The local status for a failure to reach the tunnel.
fn status_for(e: &ClientError) -> StatusCode {
    match e {
        ClientError::Refused { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        ClientError::Connect(_) => StatusCode::SERVICE_UNAVAILABLE,
        ClientError::WebSocket(_)
        | ClientError::Tls(_)
        | ClientError::Http(_)
        | ClientError::ServerName(_)
        | ClientError::Config(_) => StatusCode::BAD_GATEWAY,
    }
}
