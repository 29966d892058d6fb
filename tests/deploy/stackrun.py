"""The customer stack's artifacts run for real against a real operator side: an
`mcp-tunnel server` (edge and Tunnels API) bootstrapped by `server init`, the setup
component provisioning through its API, then the proxy and the connector as the
artifacts start them, and an MCP call from outside through the edge.

Containers become local processes: a mounted path becomes a scratch directory, and a
loopback port the artifacts bind (inside the container or pod) becomes a free loopback
port here, the same one wherever the artifact names it (the connector's --url and the
proxy's listen_addr, say). Every other argument reaches the binary as written."""

from __future__ import annotations

import os
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import proxyrun
import serverrun
from serverrun import Ports

BASE_DOMAIN = "tunnels.test"


@dataclass
class ControlPlane:
    api: str          # https://127.0.0.1:PORT
    edge_ca: Path     # edge-ca.pem: trusted for the API, pinned by tokens
    admin_key: str
    client_edge: str  # 127.0.0.1:PORT, the edge's client listener
    log: Path

    def call(self, method: str, path: str, body: dict | None = None):
        status, out = serverrun.api_call(self.api, self.edge_ca, self.admin_key, method, path, body)
        assert 200 <= status < 300, (status, out)
        return out

    def client_key(self) -> str:
        return self.call("POST", "/v1/admin/client_keys", {"name": "deploy test"})["key"]


@contextmanager
def control_plane(root: Path) -> Iterator[ControlPlane]:
    """`server init` then `server`, on SQLite, every listener on loopback. The edge
    address written into tokens is the connector listener's, so connectors reach it."""
    root.mkdir(parents=True, exist_ok=True)
    db = serverrun.sqlite_url(root)
    ports = {name: proxyrun.free_port() for name in ("api", "connector", "client", "admin")}
    out = serverrun.init(
        root / "server-data", db, "--base-domain", BASE_DOMAIN, "--edge-address", f"127.0.0.1:{ports['connector']}",
        "--admin-key-file", str(root / "admin-api-key"),
    )
    assert out.returncode == 0, out.stderr
    argv = [
        "server", "--data-dir", str(root / "server-data"),
        "--listen", f"127.0.0.1:{ports['api']}",
        "--connector-listen", f"127.0.0.1:{ports['connector']}",
        "--client-listen", f"127.0.0.1:{ports['client']}",
        "--edge-admin-listen", f"127.0.0.1:{ports['admin']}",
    ]
    health = f"http://127.0.0.1:{ports['admin']}/ready"
    with serverrun.server(argv, {"MCP_TUNNEL_DATABASE_URL": db}, root, health, "control-plane") as running:
        yield ControlPlane(
            api=f"https://127.0.0.1:{ports['api']}",
            edge_ca=root / "server-data" / "edge-ca.pem",
            admin_key=(root / "admin-api-key").read_text().strip(),
            client_edge=f"127.0.0.1:{ports['client']}",
            log=running.log,
        )


LOOPBACK = re.compile(r"(?P<scheme>https?://)?(?:127\.0\.0\.1|0\.0\.0\.0|localhost)?:(?P<port>\d+)(?P<rest>/.*)?")


def local_token(token: str, mounts: dict[str, Path], ports: Ports) -> str:
    """One argument or config value made local: a mounted path (also as setup's
    `dir:PATH` output), or a bound address. A container path outside every mount fails
    here rather than reach this machine's own filesystem."""
    prefix = "dir:" if token.startswith("dir:/") else ""
    path = token[len(prefix):]
    for mount, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if path == mount or path.startswith(mount + "/"):
            return prefix + str(local) + path[len(mount):]
    assert not (prefix or path.startswith("/")) or path.startswith("/usr/local/bin/"), f"{token} is in no mount"
    m = LOOPBACK.fullmatch(token)
    if m:
        return f"{m['scheme'] or ''}{ports.address(':' + m['port'])}{m['rest'] or ''}"
    return token


def local_argv(argv: list[str], mounts: dict[str, Path], ports: Ports) -> list[str]:
    return [local_token(t, mounts, ports) for t in argv]


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text()

    def wait_for_log(self, needle: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"{self.name} never logged {needle!r}:\n{self.text()}"
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM, as Docker and the kubelet send it: (exit code, seconds taken)."""
        started = time.monotonic()
        self.proc.terminate()
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started


@contextmanager
def process(name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[Process]:
    """The binary with exactly `env` (plus PATH), killed at the end if still running."""
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(proxyrun.binary()), *argv], cwd=cwd, env={"PATH": os.environ.get("PATH", ""), **env},
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        yield Process(name, proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A one-shot container (setup, renew-cert) with exactly `env` (plus PATH)."""
    return subprocess.run(
        [str(proxyrun.binary()), *argv], cwd=cwd, env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True, text=True, timeout=120,
    )


def wait_healthy(url: str, what: Process, timeout: float = 30) -> None:
    """`mcp-tunnel healthcheck URL`, the artifacts' own health command, until it passes."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([str(proxyrun.binary()), "healthcheck", url], capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            return
        assert what.proc.poll() is None, f"{what.name} exited {what.proc.returncode}:\n{what.text()}"
        assert time.monotonic() < deadline, f"{what.name} not healthy at {url}:\n{what.text()}"
        time.sleep(0.2)


def call_through_edge(plane: ControlPlane, url: str, tunnel_ca: Path, client_key: str, *args: str) -> str:
    """`mcp-tunnel call` from outside: edge, connector, proxy, MCP server."""
    out = subprocess.run(
        [str(proxyrun.binary()), "call", url, "--edge", plane.client_edge, "--edge-ca-file", str(plane.edge_ca),
         "--ca-file", str(tunnel_ca), *args],
        env={**os.environ, "MCP_TUNNEL_CLIENT_KEY": client_key}, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout
