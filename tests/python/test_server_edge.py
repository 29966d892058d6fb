"""`mcp-tunnel server` (edge + API over one SQLite store) with a real connector: the edge
reads the control plane's store, so a tunnel without a CA refuses sessions, adding one
opens it, rotation keeps established connections, and archive severs them at once."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from controlplane import ControlPlane, EchoOrigin, binary, connections, recipe_ca, session, wait_for

pytestmark = pytest.mark.skipif(binary() is None, reason="mcp-tunnel binary not built")


@pytest.fixture
def server(tmp_path):
    s = ControlPlane(tmp_path, server=True)
    yield s
    s.close()


def test_edge_follows_the_store(server, tmp_path):
    s = server
    origin = EchoOrigin()
    t = s.admin("POST", "/v1/tunnels", {"display_name": "e2e"})
    token = s.admin("POST", f"/v1/tunnels/{t['id']}/reveal_token")["tunnel_token"]
    client_key = s.admin("POST", "/v1/admin/client_keys", {"name": "agent"})["key"]
    def connector(name: str, tok: str) -> subprocess.Popen:
        return subprocess.Popen(
            [str(s.bin), "connector", "run", "--url", f"http://127.0.0.1:{origin.port}", "--ha-connections", "2"],
            env={**os.environ, "TUNNEL_TOKEN": tok},
            stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT,
        )

    old = connector("old", token)
    new = None
    try:
        assert wait_for(lambda: connections(s, t["id"]) == 2), (tmp_path / "old.log").read_text()
        # No CA yet: the edge refuses sessions with its distinct error.
        status, body = session(s, t["domain"], client_key)
        assert status == 409 and json.loads(body)["error"]["code"] == "needs_certificate"
        assert session(s, t["domain"], "mtck_wrong")[0] == 401

        s.admin("POST", f"/v1/tunnels/{t['id']}/certificates", {"ca_certificate_pem": recipe_ca(tmp_path, "e2e")})
        status, echoed = session(s, t["domain"], client_key)
        assert status == 101 and echoed == b"ping through the tunnel"

        # Rotation: established connections stay and carry sessions; the new token attaches.
        rotated = s.admin("POST", f"/v1/tunnels/{t['id']}/rotate_token", {"reason": "e2e"})["tunnel_token"]
        time.sleep(0.3)
        assert connections(s, t["id"]) == 2
        assert session(s, t["domain"], client_key)[0] == 101
        new = connector("new", rotated)
        assert wait_for(lambda: connections(s, t["id"]) == 4), (tmp_path / "new.log").read_text()

        # Archive: every connection severed at once; the connector holding the current
        # token is told and stops; sessions are refused.
        s.admin("POST", f"/v1/tunnels/{t['id']}/archive")
        assert wait_for(lambda: connections(s, t["id"]) == 0, timeout=2.0)
        assert new.wait(timeout=15) != 0
        assert "archived" in (tmp_path / "new.log").read_text()
        assert session(s, t["domain"], client_key)[0] == 410
        # The old token was already dead: it only ever hears "rejected".
        assert wait_for(lambda: "token rejected" in (tmp_path / "old.log").read_text().lower(), timeout=15)
    finally:
        for p in (old, new):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
