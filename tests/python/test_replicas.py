"""Two `mcp-tunnel server` replicas on one PostgreSQL (MCP_TUNNEL_TEST_DATABASE_URL): a
session arriving at the replica without the tunnel's connector is forwarded to the one
holding it, and an archive or rotation made through one replica reaches the other's edge
within a second."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from controlplane import (ControlPlane, EchoOrigin, binary, connections, free_port, recipe_ca,
                          session, wait_for)

PG = os.environ.get("MCP_TUNNEL_TEST_DATABASE_URL")
pytestmark = [
    pytest.mark.skipif(binary() is None, reason="mcp-tunnel binary not built"),
    pytest.mark.skipif(not PG, reason="MCP_TUNNEL_TEST_DATABASE_URL is not set (PostgreSQL needed)"),
]


class SecondReplica(ControlPlane):
    """Another `server` on the first one's data directory and database."""

    def __init__(self, first: ControlPlane, workdir):
        self.bin, self.data, self.env = first.bin, first.data, first.env
        self.admin_key, self.org_id, self.ca_file = first.admin_key, first.org_id, first.ca_file
        self.ssl = first.ssl
        self.log = open(workdir / "replica-b.log", "w+")
        self.proc = subprocess.Popen(
            [str(self.bin), "server", "--data-dir", str(self.data),
             "--listen", "127.0.0.1:0", "--connector-listen", f"127.0.0.1:{free_port()}",
             "--client-listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--edge-id", "replica-b"],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
        )
        self.base_url = "https://127.0.0.1:%s" % self.log_field("api listening", "addr").rsplit(":", 1)[1]
        self.client_port = int(self.log_field("edge listening", "client").rsplit(":", 1)[1])


def logged(plane: ControlPlane, message: str, tunnel_id: str) -> bool:
    plane.log.seek(0)
    return any(message in line and tunnel_id in line for line in plane.log.read().splitlines())


def test_two_replicas(tmp_path):
    a = ControlPlane(tmp_path, server=True, database_url=PG)
    b = SecondReplica(a, tmp_path)
    origin = EchoOrigin()
    conn = None
    try:
        t = b.admin("POST", "/v1/tunnels", {"display_name": "replicated"})
        b.admin("POST", f"/v1/tunnels/{t['id']}/certificates", {"ca_certificate_pem": recipe_ca(tmp_path, "r")})
        token = b.admin("POST", f"/v1/tunnels/{t['id']}/reveal_token")["tunnel_token"]
        key = b.admin("POST", "/v1/admin/client_keys", {"name": "agent"})["key"]
        # The token names replica A's connector listener: the connector reaches A only.
        conn = subprocess.Popen(
            [str(a.bin), "connector", "run", "--url", f"http://127.0.0.1:{origin.port}", "--ha-connections", "2"],
            env={**os.environ, "TUNNEL_TOKEN": token},
            stdout=open(tmp_path / "connector.log", "w"), stderr=subprocess.STDOUT,
        )
        assert wait_for(lambda: connections(b, t["id"]) == 2), (tmp_path / "connector.log").read_text()

        # A session arriving at B is forwarded to A; one at A is served there.
        assert session(b, t["domain"], key) == (101, b"ping through the tunnel")
        assert session(a, t["domain"], key) == (101, b"ping through the tunnel")
        assert session(b, t["domain"], "mtck_wrong")[0] == 401

        # Rotation and archive through B reach A's edge within a second.
        b.admin("POST", f"/v1/tunnels/{t['id']}/rotate_token", {"reason": "replica test"})
        assert wait_for(lambda: logged(a, "tunnel token rotated", t["id"]), timeout=1.0)
        started = time.monotonic()
        b.admin("POST", f"/v1/tunnels/{t['id']}/archive")
        assert wait_for(lambda: logged(a, "tunnel archived: connections severed", t["id"]), timeout=1.0)
        assert wait_for(lambda: connections(a, t["id"]) == 0, timeout=1.0)
        assert time.monotonic() - started < 1.5
        assert session(b, t["domain"], key)[0] == 410
    finally:
        if conn is not None and conn.poll() is None:
            conn.kill()
            conn.wait()
        b.close()
        a.close()
