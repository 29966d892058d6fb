"""A control plane for the tests: `mcp-tunnel server init` then `mcp-tunnel api` on an
ephemeral loopback port over HTTPS, plus helpers for its admin endpoints, test CAs made
with the documented openssl recipe, and workload-identity JWTs."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

REPO = pathlib.Path(__file__).resolve().parents[2]
TUNNELS_BETA = "mcp-tunnels-2026-06-22"
PG_URL = os.environ.get("MCP_TUNNEL_TEST_DATABASE_URL")
# Suites parametrized over these run once per database (`.ci/setup` starts PostgreSQL).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    not PG_URL, reason="MCP_TUNNEL_TEST_DATABASE_URL is not set (PostgreSQL needed)"))]


def database_url(backend: str) -> str | None:
    return PG_URL if backend == "postgres" else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> pathlib.Path | None:
    env = os.environ.get("MCP_TUNNEL_BIN")
    path = pathlib.Path(env) if env else REPO / "target" / "debug" / "mcp-tunnel"
    return path if path.is_file() else None


class ControlPlane:
    def __init__(self, workdir: pathlib.Path, server: bool = False, database_url: str | None = None):
        """`server init`, then `api` (or, with `server=True`, the edge and API together:
        `server`, with the connector listener on a free port that tokens name)."""
        self.bin = binary()
        self.data = workdir / "data"
        self.connector_port = free_port() if server else 7844
        key_file = workdir / "admin.key"
        # A PostgreSQL URL (with its password) goes through a file, never argv: `init`
        # names the file with --database-url-file, `api`/`server` through the
        # environment, so both forms run.
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("MCP_TUNNEL_DATABASE_URL", "MCP_TUNNEL_DATABASE_URL_FILE")}
        init_env, init_flags = dict(self.env), []
        if database_url:
            url_file = workdir / "database-url"
            url_file.touch(mode=0o600)
            url_file.write_text(database_url + "\n")
            self.env["MCP_TUNNEL_DATABASE_URL_FILE"] = str(url_file)
            init_flags = ["--database-url-file", str(url_file)]
        init = subprocess.run(
            [str(self.bin), "server", "init", "--data-dir", str(self.data),
             "--base-domain", "tunnels.test", "--edge-address", f"127.0.0.1:{self.connector_port}",
             "--admin-key-file", str(key_file), *init_flags],
            capture_output=True, text=True, timeout=60, check=True, env=init_env,
        )
        self.init_output = init.stdout
        self.admin_key = key_file.read_text().strip()
        self.config = json.loads((self.data / "config.json").read_text())
        self.org_id = self.config["organization_id"]
        self.ca_file = str(self.data / "edge-ca.pem")
        self.workdir, self.server, self.database_url = workdir, server, database_url
        self.start("server.log")
        self.ssl = ssl.create_default_context(cafile=self.ca_file)

    def start(self, log_name: str) -> None:
        """Starts the process (again, after `close`) on the data directory."""
        self.log = open(self.workdir / log_name, "w+")
        cmd = [str(self.bin), "api", "--data-dir", str(self.data), "--listen", "127.0.0.1:0"]
        if self.server:
            cmd[1] = "server"
            cmd += ["--connector-listen", f"127.0.0.1:{self.connector_port}", "--client-listen", "127.0.0.1:0"]
            if self.database_url:
                cmd += ["--peer-listen", "127.0.0.1:0", "--edge-id", "replica-a"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        self.base_url = "https://127.0.0.1:%s" % self.log_field("api listening", "addr").rsplit(":", 1)[1]
        if self.server:
            self.client_port = int(self.log_field("edge listening", "client").rsplit(":", 1)[1])

    def log_field(self, message: str, field: str) -> str:
        """A field of the first JSON log line with this message."""
        deadline = time.time() + 30
        while time.time() < deadline:
            self.log.seek(0)
            for line in self.log.read().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("message") == message:
                    return ev[field]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.log.seek(0)
        raise RuntimeError(f"no {message!r} log line:\n" + self.log.read())

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def request(self, method: str, path: str, body: dict | None = None, key: str | None = None):
        """(status, JSON) with the SDK's headers and the admin key by default."""
        req = urllib.request.Request(
            self.base_url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "anthropic-version": "2023-06-01",
                "anthropic-beta": TUNNELS_BETA,
                "authorization": "Bearer " + (key or self.admin_key),
                "content-type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        status, got = self.request(method, path, body)
        assert status == 200, (method, path, got)
        return got


class Issuer:
    """An OIDC-like issuer: an ES256 key, its JWKS, and signed tokens."""

    def __init__(self, url: str = "https://ci.issuer.test", kid: str = "ci-1"):
        self.url = url
        self.kid = kid
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
        self.jwks = {"keys": [jwk]}

    def token(self, sub: str, aud: str, lifetime: int = 300, **extra) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "sub": sub, "aud": aud, "iat": now, "exp": now + lifetime, **extra}
        return pyjwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})


def recipe_ca(workdir: pathlib.Path, name: str, bits: int = 2048) -> str:
    """A CA made with the documented openssl recipe (RSA, explicit extensions)."""
    key, cert = workdir / f"{name}.key", workdir / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", f"rsa:{bits}", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "365", "-subj", f"/CN={name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash"],
        check=True, capture_output=True, timeout=60,
    )
    return cert.read_text()


class EchoOrigin:
    """Answers a WebSocket upgrade with 101, then echoes bytes (what the proxy would be)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buf += chunk
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        rest = buf.split(b"\r\n\r\n", 1)[1]
        if rest:
            conn.sendall(rest)
        while data := conn.recv(4096):
            conn.sendall(data)


def session(s, domain: str, key: str, port: int | None = None) -> tuple[int, bytes]:
    """A client session request to the edge: (status, body or echoed bytes)."""
    ctx = ssl.create_default_context(cafile=s.ca_file)
    with socket.create_connection(("127.0.0.1", port or s.client_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=domain) as tls:
            tls.sendall((f"GET / HTTP/1.1\r\nHost: {domain}\r\nAuthorization: Bearer {key}\r\n"
                         "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            status = int(head.split(b" ")[1])
            if status == 101:
                tls.sendall(b"ping through the tunnel")
                got = b""
                while len(got) < 23:
                    got += tls.recv(4096)
                return status, got
            return status, body


def connections(s, tunnel_id: str) -> int:
    return s.admin("GET", f"/v1/tunnels/{tunnel_id}")["connections"]


def wait_for(pred, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False
