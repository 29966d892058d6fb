"""The MCP conformance suite passes through the tunnel exactly as it passes direct.

The reference server (npm @modelcontextprotocol/server-everything) runs on loopback;
the suite (npm @modelcontextprotocol/conformance) runs twice: once straight at it and
once at `mcp-tunnel connect`'s local endpoint of a whole stack started by
`mcp-tunnel quickstart --upstream` (client -> edge -> connector -> proxy -> server, inner
TLS end to end). Both runs must match the committed baseline of known failures, and
every individual check of every scenario must have the same status both ways.

Node packages come from package-lock.json (`npm ci`, done by .ci/setup); the suite needs
Node 22, which the lock file also pins (npm package `node`).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN_DIR = HERE / "node_modules" / ".bin"
BASELINE = HERE / "conformance-baseline.yml"


def mcp_tunnel() -> pathlib.Path:
    env = os.environ.get("MCP_TUNNEL_BIN")
    path = pathlib.Path(env) if env else REPO / "target" / "debug" / "mcp-tunnel"
    assert path.is_file(), f"{path} not built: run `cargo build -p mcp-tunnel` or set MCP_TUNNEL_BIN"
    return path


def node_env() -> dict[str, str]:
    assert (BIN_DIR / "conformance").exists(), (
        f"npm packages missing in {HERE}: run `npm ci` there (.ci/setup does)"
    )
    env = dict(os.environ)
    # The locked Node 22 first: the suite's code needs it, the system's may be older.
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {port} within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_suite(url: str, out: pathlib.Path) -> tuple[int, str, dict[str, list[tuple[str, str]]]]:
    """Runs every active server scenario against `url` with the baseline; returns the
    exit code, the printed summary and each scenario's (check id, status) list."""
    done = subprocess.run(
        ["conformance", "server", "--url", url, "--expected-failures", str(BASELINE), "-o", str(out)],
        env=node_env(), capture_output=True, text=True, timeout=600,
    )
    results: dict[str, list[tuple[str, str]]] = {}
    for d in sorted(out.iterdir()):
        # server-<scenario>-<timestamp>
        scenario = d.name.removeprefix("server-").rsplit("-", 6)[0]
        checks = json.loads((d / "checks.json").read_text())
        results[scenario] = sorted((c["id"], c["status"]) for c in checks)
    return done.returncode, done.stdout + done.stderr, results


@pytest.fixture
def reference_server(tmp_path):
    port = free_port()
    log = open(tmp_path / "server-everything.log", "w")
    proc = subprocess.Popen(
        ["mcp-server-everything", "streamableHttp"],
        env={**node_env(), "PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, proc, "server-everything")
        yield port
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def tunnel(reference_server, tmp_path):
    """A whole stack in front of the reference server; yields connect's local URL."""
    work = tmp_path / "quickstart"
    log = open(tmp_path / "quickstart.log", "w+")
    proc = subprocess.Popen(
        [str(mcp_tunnel()), "quickstart", "--dir", str(work),
         "--upstream", f"http://127.0.0.1:{reference_server}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        state = work / "quickstart.json"
        deadline = time.time() + 120
        while not state.exists():
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                raise AssertionError(f"quickstart did not come up:\n{log.read()}")
            time.sleep(0.2)
        yield reference_server, json.loads(state.read_text())["local_endpoint"]
    finally:
        stop(proc)
        log.close()


def test_conformance_through_the_tunnel_matches_direct(tunnel, tmp_path):
    port, through = tunnel
    direct_code, direct_out, direct = run_suite(f"http://127.0.0.1:{port}/mcp", tmp_path / "direct")
    assert direct_code == 0, f"direct run no longer matches the baseline:\n{direct_out}"
    # The suite must actually have exercised the server.
    passed = sum(1 for checks in direct.values() for _, status in checks if status == "SUCCESS")
    assert len(direct) >= 25 and passed >= 10, direct_out

    tunnel_code, tunnel_out, tunneled = run_suite(through, tmp_path / "tunnel")
    assert tunnel_code == 0, f"through the tunnel differs from the baseline:\n{tunnel_out}"
    assert tunneled.keys() == direct.keys()
    differ = {s: (direct[s], tunneled[s]) for s in direct if direct[s] != tunneled[s]}
    assert not differ, f"checks differ (direct, tunnel): {json.dumps(differ, indent=1)}"
