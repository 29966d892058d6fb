//! A small HTTP/1.1 client over TCP or rustls, for the CLI and for fetching JWKS: one
//! request per connection, bounded response size, no redirects.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest response body read.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Why a request failed before a response was read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {0:?} (expected http://host[:port]/… or https://…)")]
    Url(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// A parsed `http(s)://host:port` base.
#[derive(Debug, Clone)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, HttpError> {
    let bad = || HttpError::Url(url.to_owned());
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => default_port,
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Target {
        tls,
        host,
        port,
        path: path.to_owned(),
    })
}

/// A response: status, headers and the whole body.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A client with its trust roots.
#[derive(Debug, Clone)]
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl HttpClient {
    /// Trusts the system roots, plus the PEM certificates in `ca_file` if given.
    pub fn new(ca_file: Option<&std::path::Path>) -> Result<Self, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs {
            let _ = roots.add(c);
        }
        if let Some(path) = ca_file {
            let certs = mcp_tunnel_pki::tls::load_certs(path).map_err(|e| HttpError::CaFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            for c in certs {
                roots.add(c).map_err(|e| HttpError::CaFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Tls {
                host: String::new(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(tls),
            timeout: Duration::from_secs(30),
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one request to `url` (path and query included). A body is sent as JSON
    /// unless `headers` give another content type.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        tokio::time::timeout(self.timeout, self.send_inner(method, url, headers, body))
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
    }

    async fn send_inner(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let t = parse_url(url)?;
        let addr = format!("{}:{}", t.host, t.port);
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| HttpError::Connect {
                addr: addr.clone(),
                reason: mcp_tunnel_pki::tls::io_reason(&e),
            })?;
        let host_header = if t.host.contains(':') {
            format!("[{}]:{}", t.host, t.port)
        } else {
            format!("{}:{}", t.host, t.port)
        };
        let mut req = Request::builder()
            .method(method)
            .uri(&t.path)
            .header(http::header::HOST, host_header);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let has_body = body.is_some();
        let typed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if has_body && !typed {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::Http(e.to_string()))?;
        if t.tls {
            let name =
                ServerName::try_from(t.host.clone()).map_err(|_| HttpError::Url(url.into()))?;
            let stream = TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| HttpError::Tls {
                    host: t.host.clone(),
                    reason: e.to_string(),
                })?;
            exchange(stream, req).await
        } else {
            exchange(tcp, req).await
        }
    }
}

async fn exchange<S>(stream: S, req: Request<Full<Bytes>>) -> Result<Response, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| HttpError::Http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| HttpError::Http(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| HttpError::Http(e.to_string()))?
        .to_bytes();
    driver.abort();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("https://api.example:8443/v1/tunnels?x=1").unwrap();
        assert!(t.tls && t.host == "api.example" && t.port == 8443 && t.path == "/v1/tunnels?x=1");
        let t = parse_url("http://[::1]:99").unwrap();
        assert!(!t.tls && t.host == "::1" && t.port == 99 && t.path == "/");
        assert_eq!(parse_url("https://h").unwrap().port, 443);
        assert!(parse_url("ftp://h").is_err());
        assert!(parse_url("http://:80/").is_err());
    }
}
