"""A real MCP server (PyPI `mcp` 2.x, streamable HTTP) for mcp-tunnel's tests.

Binds 127.0.0.1 on an ephemeral port it chooses itself and prints `PORT <n>` on stdout,
so tests never use fixed ports. Besides MCP tools it serves a few plain routes that make
proxy behaviour observable: `/headers` echoes what arrived, `/ticks` is an SSE stream with
a pause between events, `/bytes` sends a large body.

With `--require-auth TOKEN` the MCP endpoint requires OAuth as the MCP authorization spec
describes, through the SDK's own auth settings: a request without a valid bearer token
gets 401 with `WWW-Authenticate: Bearer … resource_metadata="…"`, and the protected
resource metadata (RFC 9728) is served under `/.well-known/oauth-protected-resource/mcp`.
"""

import argparse
import asyncio
import hmac
import json
import socket
import sys
import time

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("mcp-tunnel-test-server")


@server.tool()
def echo(text: str) -> str:
    """Returns its input."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
async def countdown(steps: int, delay_ms: int, ctx: Context) -> str:
    """Reports progress `steps` times, `delay_ms` apart, then finishes."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        await asyncio.sleep(delay_ms / 1000)
    return f"done after {steps} steps"


@server.custom_route("/headers", methods=["GET", "POST"])
async def headers(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": {k: v for k, v in request.headers.items()},
            "body_len": len(body),
        }
    )


@server.custom_route("/ticks", methods=["GET"])
async def ticks(request: Request) -> Response:
    n = int(request.query_params.get("n", "3"))
    interval = float(request.query_params.get("interval_ms", "300")) / 1000

    async def events():
        for i in range(n):
            if i:
                await asyncio.sleep(interval)
            yield f"id: {i}\ndata: {json.dumps({'i': i, 't': time.time()})}\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream")


@server.custom_route("/bytes", methods=["GET"])
async def big(request: Request) -> Response:
    size = int(request.query_params.get("size", "1048576"))
    chunk = b"x" * 65536

    async def body():
        left = size
        while left > 0:
            n = min(left, len(chunk))
            yield chunk[:n]
            left -= n

    return StreamingResponse(body(), media_type="application/octet-stream",
                             headers={"content-length": str(size)})


class StaticTokenVerifier:
    """Accepts exactly one bearer token: enough to tell "OAuth required" from "open"."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self.token.encode()):
            return AccessToken(token=token, client_id="mcp-tunnel-tests", scopes=[])
        return None


def with_auth(token: str, resource_url: str, issuer_url: str) -> MCPServer:
    """The same tools and routes on a server that requires a bearer token."""
    authed = MCPServer(
        "mcp-tunnel-test-server",
        token_verifier=StaticTokenVerifier(token),
        auth=AuthSettings(issuer_url=issuer_url, resource_server_url=resource_url,
                          validate_token_resource=False),
    )
    for tool in (echo, add, countdown):
        authed.add_tool(tool)
    authed.custom_route("/headers", methods=["GET", "POST"])(headers)
    authed.custom_route("/ticks", methods=["GET"])(ticks)
    authed.custom_route("/bytes", methods=["GET"])(big)
    return authed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
    parser.add_argument("--require-auth", metavar="TOKEN",
                        help="require OAuth on /mcp (SDK auth settings); TOKEN is the one valid bearer token")
    parser.add_argument("--issuer-url", default="https://auth.example.test",
                        help="authorization server named in the protected-resource metadata")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    print(f"PORT {sock.getsockname()[1]}", flush=True)

    app_server = server
    if args.require_auth:
        scheme = "https" if args.tls_cert else "http"
        resource = f"{scheme}://{args.host}:{sock.getsockname()[1]}/mcp"
        app_server = with_auth(args.require_auth, resource, args.issuer_url)
    app = app_server.streamable_http_app(host=args.host)
    tls = {}
    if args.tls_cert:
        tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=75, **tls)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    sys.exit(main())
