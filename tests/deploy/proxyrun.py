"""Running the real mcp-tunnel binary against the configurations the deployment
artifacts produce: certificates by the documented openssl recipe, a real MCP server
(testdata/mcp_server.py), the proxy, and `mcp-tunnel call` through it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

from k8s import ROOT

DOMAIN = "ab12cd34.tunnel.example.com"


def binary() -> Path:
    """The dev build of mcp-tunnel, built if missing (CI builds it before this suite)."""
    explicit = os.environ.get("MCP_TUNNEL_BIN")
    if explicit:
        return Path(explicit)
    path = ROOT / "target" / "debug" / "mcp-tunnel"
    if not path.exists():
        subprocess.run(["cargo", "build", "--locked", "-p", "mcp-tunnel"], cwd=ROOT, check=True, timeout=1800)
    return path


def openssl_certs(directory: Path, domain: str = DOMAIN) -> dict[str, Path]:
    """The documented recipe (SPEC §8): RSA-2048 CA with explicit extensions, and a
    wildcard server certificate signed by it via -extfile."""
    d = directory
    run = lambda *args: subprocess.run(args, cwd=d, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "30", "-sha256", "-subj", "/CN=test tunnel CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash")
    (d / "tls.ext").write_text(
        f"subjectAltName = DNS:{domain},DNS:*.{domain}\nauthorityKeyIdentifier = keyid,issuer\n"
        "extendedKeyUsage = serverAuth\n"
    )
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
        "-subj", f"/CN={domain}")
    run("openssl", "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "tls.crt", "-days", "7", "-sha256", "-extfile", "tls.ext")
    return {"ca": d / "ca.crt", "cert": d / "tls.crt", "key": d / "tls.key"}


def local_config(config: dict, certs: dict[str, Path]) -> dict:
    """An artifact's proxy config made runnable here: ephemeral loopback ports, the
    test certificates, any CA file pointed at the test CA. Nothing else changes, so the
    proxy's own validation judges every other field as written."""
    cfg = yaml.safe_load(yaml.safe_dump(config))
    cfg["listen_addr"] = f"127.0.0.1:{free_port()}"
    cfg["admin_addr"] = f"127.0.0.1:{free_port()}"
    cfg["tls"] = {**cfg.get("tls", {}), "cert_file": str(certs["cert"]), "key_file": str(certs["key"])}
    upstream_tls = cfg.get("upstream", {}).get("tls", {})
    if "ca_file" in upstream_tls:
        upstream_tls["ca_file"] = str(certs["ca"])
    if "client_auth" in cfg:
        cfg["client_auth"]["ca_file"] = str(certs["ca"])
    return cfg


def free_port() -> int:
    """An ephemeral port the kernel just handed out (the config needs a number: with
    log_level above info the proxy does not log the port it bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    def __init__(self, proc: subprocess.Popen[str], log: Path, listen: str, admin: str):
        self.proc, self.log, self.listen, self.admin = proc, log, listen, admin
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"proxy exited {self.proc.returncode}:\n{log.read_text()}")
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"proxy did not start:\n{log.read_text()}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM, as Docker and the kubelet send it; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@contextmanager
def proxy(argv: list[str], workdir: Path, config: dict) -> Iterator[Proxy]:
    """Starts argv (a proxy reading `config`, made by local_config) and waits for health."""
    log = workdir / "proxy.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=workdir)
    try:
        yield Proxy(proc, log, config["listen_addr"], config["admin_addr"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextmanager
def mcp_server(workdir: Path) -> Iterator[int]:
    """testdata/mcp_server.py (PyPI `mcp`) on an ephemeral loopback port."""
    log = workdir / "mcp-server.log"
    venv_python = ROOT / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    with log.open("w") as out:
        proc = subprocess.Popen([python, str(ROOT / "testdata" / "mcp_server.py")], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(r"^PORT (\d+)$", log.read_text(), re.M)
            if m:
                yield int(m.group(1))
                return
            if proc.poll() is not None:
                raise AssertionError(f"MCP server exited:\n{log.read_text()}")
            time.sleep(0.05)
        raise AssertionError("MCP server did not start")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def call_list(route_host: str, listen: str, ca: Path) -> str:
    """`mcp-tunnel call --list` through the proxy: WebSocket, inner TLS, MCP."""
    out = subprocess.run(
        [str(binary()), "call", f"https://{route_host}/mcp", "--proxy", listen, "--ca-file", str(ca), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout
