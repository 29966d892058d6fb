//! A small MCP client over streamable HTTP (JSON-RPC in POST bodies, answers as JSON or as
//! an SSE stream), carried by a tunnel [`Session`]. Enough for `mcp-tunnel call`, the
//! quickstart and tests; full clients (the MCP SDKs) go through `connect`.

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::{ClientError, Session};

/// The protocol revision we ask for; servers answer with the one they speak.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error(transparent)]
    Transport(#[from] ClientError),
    #[error("reading the response body failed: {0}")]
    Body(#[from] hyper::Error),
    #[error("HTTP {status} from the MCP server: {body}")]
    Status { status: u16, body: String },
    #[error("invalid JSON-RPC from the MCP server: {0}")]
    Protocol(String),
    #[error("MCP error {code}: {message}")]
    Rpc { code: i64, message: String },
}

/// One MCP session over one tunnel session.
#[derive(Debug)]
pub struct McpClient {
    session: Session,
    path: String,
    session_id: Option<String>,
    next_id: u64,
    /// Notifications received while waiting for answers (e.g. `notifications/progress`).
    pub notifications: Vec<Value>,
    /// Extra headers on every request (e.g. `Authorization` for the MCP server's OAuth).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl McpClient {
    /// `path` is the MCP endpoint on the route, usually `/mcp`.
    pub fn new(session: Session, path: impl Into<String>) -> Self {
        Self {
            session,
            path: path.into(),
            session_id: None,
            next_id: 1,
            notifications: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// `initialize` followed by `notifications/initialized`; returns the server's result.
    pub async fn initialize(&mut self) -> Result<Value, McpError> {
        let result = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "mcp-tunnel", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
            .await?;
        self.notify("notifications/initialized", json!({})).await?;
        Ok(result)
    }

    pub async fn list_tools(&mut self) -> Result<Vec<Value>, McpError> {
        let result = self.request("tools/list", json!({})).await?;
        Ok(result
            .get("tools")
            .and_then(|t| t.as_array())
            .cloned()
            .unwrap_or_default())
    }

    /// `tools/call`; a progress token is attached so progress notifications flow.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Result<Value, McpError> {
        let token = self.next_id;
        self.request(
            "tools/call",
            json!({"name": name, "arguments": arguments, "_meta": {"progressToken": token}}),
        )
        .await
    }

    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Sends a JSON-RPC request and waits for its answer.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let resp = self.post(&msg).await?;
        let answer = self.read_answer(resp, id).await?;
        if let Some(err) = answer.get("error") {
            return Err(McpError::Rpc {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| McpError::Protocol("answer has neither result nor error".into()))
    }

    /// Sends a JSON-RPC notification (no answer expected beyond 202).
    pub async fn notify(&mut self, method: &str, params: Value) -> Result<(), McpError> {
        let msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        let resp = self.post(&msg).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        if !(200..300).contains(&status) {
            return Err(McpError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(())
    }

    async fn post(&mut self, msg: &Value) -> Result<http::Response<Incoming>, McpError> {
        let mut req = Request::post(self.path.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION);
        if let Some(sid) = &self.session_id {
            req = req.header("mcp-session-id", sid.as_str());
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let body = Full::new(Bytes::from(msg.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync();
        let req = req
            .body(body)
            .map_err(|e| McpError::Protocol(e.to_string()))?;
        let resp = self.session.send(req).await?;
        if let Some(sid) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.session_id = Some(sid.to_owned());
        }
        Ok(resp)
    }

    async fn read_answer(
        &mut self,
        resp: http::Response<Incoming>,
        id: u64,
    ) -> Result<Value, McpError> {
        let status = resp.status().as_u16();
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut body = resp.into_body();
        if !(200..300).contains(&status) {
            let bytes = body.collect().await?.to_bytes();
            return Err(McpError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        if !is_sse {
            let bytes = body.collect().await?.to_bytes();
            return serde_json::from_slice(&bytes).map_err(|e| McpError::Protocol(e.to_string()));
        }
        // Read the stream to its end even after the answer: the server closes it once the
        // answer is sent, and an HTTP/1.1 connection is reusable only after a whole body.
        let mut sse = SseParser::default();
        let mut answer = None;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            for event in sse.push(&data) {
                let msg: Value =
                    serde_json::from_str(&event).map_err(|e| McpError::Protocol(e.to_string()))?;
                if msg.get("id").and_then(Value::as_u64) == Some(id) && msg.get("method").is_none()
                {
                    answer = Some(msg);
                } else {
                    self.notifications.push(msg);
                }
            }
        }
        answer.ok_or_else(|| {
            McpError::Protocol("event stream ended before the answer arrived".into())
        })
    }
}

/// Splits an SSE byte stream into the `data` of each event.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: String,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        loop {
            let normalized = self.buf.replace("\r\n", "\n");
            let Some(end) = normalized.find("\n\n") else {
                self.buf = normalized;
                break;
            };
            let block = &normalized[..end];
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
            self.buf = normalized[end + 2..].to_owned();
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::SseParser;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: message\ndata: {\"a\"").is_empty());
        assert_eq!(
            p.push(b":1}\n\ndata: x\r\n\r\n: comment\n\n"),
            ["{\"a\":1}", "x"]
        );
        assert!(p.push(b"data: partial").is_empty());
    }
}
