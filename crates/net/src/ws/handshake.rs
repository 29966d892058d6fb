//! The client's WebSocket upgrade (RFC 6455 §4.1): request out, response head in.
//!
//! A `101` with the right `Sec-WebSocket-Accept` yields a [`WsByteStream`] that starts
//! with whatever bytes arrived after the head. Any other status is a refusal, returned with
//! the server's status and (bounded) body, which callers show to the user.

use std::io;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Role, WsByteStream, accept_key};

/// Longest response head we read before giving up.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Longest refusal body we keep.
pub const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Headers the handshake itself sets; a caller's header may not replace them.
const RESERVED: [&str; 5] = [
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];

/// Why the upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("invalid request header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    #[error("invalid request {what}: {value:?}")]
    InvalidTarget { what: &'static str, value: String },
    #[error("connection closed before the response head was complete")]
    Closed,
    #[error("response head longer than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("websocket refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("101 response without `{0}`")]
    MissingUpgradeHeader(&'static str),
    #[error("101 response has a wrong Sec-WebSocket-Accept")]
    BadAccept,
    #[error("101 response selects {0} we did not offer")]
    Unrequested(&'static str),
    #[error("system random source failed")]
    Random,
}

/// Upgrades `io` to a WebSocket as the client: `GET path` with `Host: host` and the
/// caller's `headers` (a `Host` among them replaces ours).
pub async fn client_handshake<S>(
    mut io: S,
    host: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<WsByteStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut nonce = [0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| HandshakeError::Random)?;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let request = request_head(host, path, headers, &key)?;
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;

    let (mut head_bytes, head_len) = read_head(&mut io).await?;
    let after_head = head_bytes.split_off(head_len);
    let head = Head::parse(&head_bytes)?;
    if head.status != 101 {
        let body = read_refusal_body(&mut io, &head, after_head).await;
        return Err(HandshakeError::Refused {
            status: head.status,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    if !head.has_token("upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgradeHeader("Upgrade: websocket"));
    }
    if !head.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingUpgradeHeader("Connection: Upgrade"));
    }
    // Compared as public values: the accept key is derived from a nonce we just sent.
    match head.get("sec-websocket-accept") {
        Some(v) if v == accept_key(key.as_bytes()).as_bytes() => {}
        Some(_) => return Err(HandshakeError::BadAccept),
        None => {
            return Err(HandshakeError::MissingUpgradeHeader("Sec-WebSocket-Accept"));
        }
    }
    if head.get("sec-websocket-extensions").is_some() {
        return Err(HandshakeError::Unrequested("an extension"));
    }
    if head.get("sec-websocket-protocol").is_some() {
        return Err(HandshakeError::Unrequested("a subprotocol"));
    }
    Ok(WsByteStream::with_buffered(io, Role::Client, &after_head))
}

fn request_head(
    host: &str,
    path: &str,
    headers: &[(String, String)],
    key: &str,
) -> Result<String, HandshakeError> {
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HandshakeError::InvalidTarget {
            what: "host",
            value: host.to_owned(),
        });
    }
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HandshakeError::InvalidTarget {
            what: "path",
            value: path.to_owned(),
        });
    }
    let mut host_line = host;
    let mut extra = String::new();
    for (name, value) in headers {
        let bad = |reason| HandshakeError::InvalidHeader {
            name: name.clone(),
            reason,
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(bad("not a header name"));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(bad("control characters in the value"));
        }
        let lower = name.to_ascii_lowercase();
        if lower == "host" {
            host_line = value;
        } else if RESERVED.contains(&lower.as_str()) {
            return Err(bad("set by the websocket handshake"));
        } else {
            extra.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    Ok(format!(
        "GET {path} HTTP/1.1\r\nHost: {host_line}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         {extra}\r\n"
    ))
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads until the blank line ending the head; returns everything read and the head's
/// length (bytes after it belong to the body or the WebSocket).
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<(Vec<u8>, usize), HandshakeError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let scan_from = buf.len().saturating_sub(3);
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let head_len = scan_from + at + 4;
            if head_len > MAX_RESPONSE_HEAD {
                break;
            }
            return Ok((buf, head_len));
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            break;
        }
    }
    Err(HandshakeError::HeadTooLarge {
        limit: MAX_RESPONSE_HEAD,
    })
}

/// A parsed response head: status and headers (names lowercased).
#[derive(Debug)]
struct Head<'a> {
    status: u16,
    headers: Vec<(String, &'a [u8])>,
}

impl<'a> Head<'a> {
    fn parse(raw: &'a [u8]) -> Result<Self, HandshakeError> {
        let raw = raw.strip_suffix(b"\r\n\r\n").unwrap_or(raw);
        let mut lines = raw
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = lines.next().unwrap_or_default();
        let rest = status_line
            .strip_prefix(b"HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))
            .ok_or(HandshakeError::Malformed("status line is not HTTP/1.x"))?;
        let code = rest.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit));
        let status = code
            .filter(|_| rest.len() == 3 || rest[3] == b' ')
            .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
            .ok_or(HandshakeError::Malformed("status code is not three digits"))?;
        let mut headers = Vec::new();
        for line in lines {
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                return Err(HandshakeError::Malformed("folded header line"));
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or(HandshakeError::Malformed("header line without a colon"))?;
            let name = &line[..colon];
            if name.is_empty() || !name.iter().copied().all(is_tchar) {
                return Err(HandshakeError::Malformed("invalid header name"));
            }
            let value = line[colon + 1..].trim_ascii();
            headers.push((String::from_utf8_lossy(name).to_ascii_lowercase(), value));
        }
        Ok(Self { status, headers })
    }

    fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    /// Whether a comma-separated header (any occurrence) lists `token`, ignoring case.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// The refusal's body, at most [`MAX_REFUSAL_BODY`] bytes; best effort, since the status
/// is what matters (an I/O error just ends it).
async fn read_refusal_body<S: AsyncRead + Unpin>(
    io: &mut S,
    head: &Head<'_>,
    mut body: Vec<u8>,
) -> Vec<u8> {
    if matches!(head.status, 100..=199 | 204 | 304) {
        return Vec::new();
    }
    let chunked = head.has_token("transfer-encoding", "chunked");
    let length = head
        .get("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
    let want = match (chunked, length) {
        (false, Some(len)) => len.min(MAX_REFUSAL_BODY),
        _ => MAX_REFUSAL_BODY,
    };
    let mut chunk = [0u8; 2048];
    loop {
        if chunked && let Some(decoded) = dechunk(&body) {
            return decoded;
        }
        if body.len() >= want {
            break;
        }
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    if chunked {
        // Incomplete or malformed: show what the chunks hold so far.
        return dechunk_partial(&body);
    }
    body.truncate(want);
    body
}

/// A complete chunked body decoded, or `None` while the last chunk has not arrived.
fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let (body, complete) = dechunk_inner(raw);
    complete.then_some(body)
}

fn dechunk_partial(raw: &[u8]) -> Vec<u8> {
    dechunk_inner(raw).0
}

fn dechunk_inner(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_field = raw[..eol].split(|&b| b == b';').next().unwrap_or_default();
        let Some(size) = std::str::from_utf8(size_field)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            return (out, false);
        };
        raw = &raw[eol + 2..];
        if size == 0 {
            return (out, true);
        }
        let take = size.min(raw.len());
        out.extend_from_slice(&raw[..take]);
        if take < size || raw.len() < size + 2 {
            return (out, false);
        }
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_parsing_reads_status_and_headers() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n\
                    Connection: keep-alive, Upgrade\r\nX-A:  b \r\n\r\n";
        let head = Head::parse(raw).unwrap();
        assert_eq!(head.status, 101);
        assert!(head.has_token("upgrade", "websocket"));
        assert!(head.has_token("connection", "upgrade"));
        assert_eq!(head.get("x-a"), Some(&b"b"[..]));
        for (bad, why) in [
            (&b"HTTP/2 101 x\r\n\r\n"[..], "not HTTP/1.x"),
            (b"HTTP/1.1 1x1 x\r\n\r\n", "three digits"),
            (b"HTTP/1.1 1011 x\r\n\r\n", "three digits"),
            (b"HTTP/1.1 101 x\r\nNoColon\r\n\r\n", "without a colon"),
            (b"HTTP/1.1 101 x\r\nA: b\r\n  folded\r\n\r\n", "folded"),
            (b"HTTP/1.1 101 x\r\nBad Name: b\r\n\r\n", "header name"),
        ] {
            let err = Head::parse(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{err} for {bad:?}");
        }
    }

    #[test]
    fn request_head_has_the_upgrade_headers_and_refuses_injection() {
        let headers = vec![("Authorization".to_owned(), "Bearer k".to_owned())];
        let req = request_head("t.example:443", "/mcp?a=1", &headers, "KEY").unwrap();
        assert!(
            req.starts_with("GET /mcp?a=1 HTTP/1.1\r\nHost: t.example:443\r\n"),
            "{req}"
        );
        for line in [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: KEY",
            "Sec-WebSocket-Version: 13",
            "Authorization: Bearer k",
        ] {
            assert!(
                req.contains(&format!("\r\n{line}\r\n")),
                "{line} missing: {req}"
            );
        }
        assert!(req.ends_with("\r\n\r\n"));
        let inject = vec![("X".to_owned(), "a\r\nEvil: 1".to_owned())];
        assert!(matches!(
            request_head("h", "/", &inject, "K"),
            Err(HandshakeError::InvalidHeader { .. })
        ));
        let reserved = vec![("Sec-WebSocket-Key".to_owned(), "x".to_owned())];
        assert!(request_head("h", "/", &reserved, "K").is_err());
        assert!(request_head("h", "no-slash", &[], "K").is_err());
        assert!(request_head("h h", "/", &[], "K").is_err());
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n").unwrap(),
            b"hello!"
        );
        assert_eq!(dechunk(b"5\r\nhel"), None);
        assert_eq!(dechunk_partial(b"5\r\nhel"), b"hel");
        assert_eq!(dechunk_partial(b"zz\r\n"), b"");
    }
}
