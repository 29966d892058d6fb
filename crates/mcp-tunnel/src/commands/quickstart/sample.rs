//! The quickstart's built-in MCP server: streamable HTTP with JSON answers, two tools
//! (`echo`, `add`), so the quickstart needs nothing but this binary. Deliberately
//! small: no SSE stream, no resources or prompts; real servers go behind the proxy the
//! same way.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const NAME: &str = "mcp-tunnel-quickstart-sample";
const MAX_BODY: usize = 1 << 20;
/// Protocol revisions we answer with; an unknown request gets the newest.
const VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(handle);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Binds loopback on an ephemeral port and serves in the background.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener));
    Ok(addr)
}

fn reply(status: StatusCode, body: Option<Value>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    b.body(Full::new(Bytes::from(
        body.map(|v| v.to_string()).unwrap_or_default(),
    )))
    .unwrap_or_default()
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if req.uri().path() != "/mcp" {
        return Ok(reply(StatusCode::NOT_FOUND, None));
    }
    if req.method() != http::Method::POST {
        // No server-initiated stream: streamable HTTP allows answering GET with 405.
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, None);
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return Ok(r);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE, None)),
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            Some(error(Value::Null, -32700, "Parse error")),
        ));
    };
    let Some(id) = msg.get("id").cloned() else {
        // A notification or a response: accepted, nothing to answer.
        return Ok(reply(StatusCode::ACCEPTED, None));
    };
    let method = msg["method"].as_str().unwrap_or_default();
    let answer = match answer(method, &msg["params"]) {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => error(id, code, &message),
    };
    let mut r = reply(StatusCode::OK, Some(answer));
    if method == "initialize" {
        let sid = mcp_tunnel_pki::crypto::sha256_hex(&mcp_tunnel_pki::crypto::random_bytes(16));
        if let Ok(v) = http::HeaderValue::from_str(&sid) {
            r.headers_mut().insert("mcp-session-id", v);
        }
    }
    Ok(r)
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn answer(method: &str, params: &Value) -> Result<Value, (i64, String)> {
    match method {
        "initialize" => {
            let asked = params["protocolVersion"].as_str().unwrap_or_default();
            let version = VERSIONS
                .iter()
                .find(|v| **v == asked)
                .unwrap_or(&VERSIONS[0]);
            Ok(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": NAME, "version": env!("CARGO_PKG_VERSION")},
                "instructions": "The mcp-tunnel quickstart's sample server: echo and add.",
            }))
        }
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": [
            {"name": "echo", "description": "Returns its input.",
             "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                             "required": ["text"]}},
            {"name": "add", "description": "Adds two numbers.",
             "inputSchema": {"type": "object",
                             "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                             "required": ["a", "b"]}},
        ]})),
        "tools/call" => call(params),
        _ => Err((-32601, format!("Method not found: {method}"))),
    }
}

fn text_result(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

fn call(params: &Value) -> Result<Value, (i64, String)> {
    let args = &params["arguments"];
    match params["name"].as_str().unwrap_or_default() {
        "echo" => Ok(match args["text"].as_str() {
            Some(t) => text_result(t.to_owned(), false),
            None => text_result("echo needs a string argument \"text\"".into(), true),
        }),
        "add" => Ok(match (&args["a"], &args["b"]) {
            (Value::Number(a), Value::Number(b)) => {
                let sum = match (a.as_i64(), b.as_i64()) {
                    (Some(a), Some(b)) => a.checked_add(b).map(|s| s.to_string()),
                    _ => None,
                };
                let sum = sum.unwrap_or_else(|| {
                    (a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)).to_string()
                });
                text_result(sum, false)
            }
            _ => text_result("add needs two numbers \"a\" and \"b\"".into(), true),
        }),
        other => Err((-32602, format!("Unknown tool: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools() {
        let r = answer(
            "tools/call",
            &json!({"name": "add", "arguments": {"a": 2, "b": 3}}),
        );
        assert_eq!(r.unwrap()["content"][0]["text"], "5");
        let r = answer(
            "tools/call",
            &json!({"name": "add", "arguments": {"a": 0.5, "b": 1}}),
        );
        assert_eq!(r.unwrap()["content"][0]["text"], "1.5");
        let r = answer(
            "tools/call",
            &json!({"name": "add", "arguments": {"a": "x"}}),
        );
        assert_eq!(r.unwrap()["isError"], true);
        let r = answer(
            "tools/call",
            &json!({"name": "echo", "arguments": {"text": "hi"}}),
        );
        assert_eq!(r.unwrap()["content"][0]["text"], "hi");
        assert_eq!(
            answer("tools/call", &json!({"name": "rm"})).unwrap_err().0,
            -32602
        );
        assert_eq!(answer("nope", &Value::Null).unwrap_err().0, -32601);
        let init = answer("initialize", &json!({"protocolVersion": "2025-03-26"})).unwrap();
        assert_eq!(init["protocolVersion"], "2025-03-26");
        let init = answer("initialize", &json!({"protocolVersion": "1999-01-01"})).unwrap();
        assert_eq!(init["protocolVersion"], VERSIONS[0]);
    }
}
