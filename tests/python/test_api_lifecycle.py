"""`mcp-tunnel api` (and `server`) as a process: readiness, SIGTERM letting a request in flight finish
(answered, its audit event written) before the process exits 0, on SQLite and PostgreSQL,
and a PostgreSQL password that stays out of argv and every log line."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from controlplane import BACKENDS, ControlPlane, Issuer, binary, database_url

pytestmark = pytest.mark.skipif(binary() is None, reason="mcp-tunnel binary not built")

SUBJECT = "repo:example/infra:ref:refs/heads/main"
AUDIENCE = "https://api.tunnels.test"
JWKS_DELAY = 1.5


class SlowJwks:
    """Serves a JWKS after JWKS_DELAY seconds; `asked` is set when a request arrives."""

    def __init__(self, jwks: dict):
        asked = self.asked = threading.Event()
        body = json.dumps(jwks).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                asked.set()
                time.sleep(JWKS_DELAY)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def get(cp: ControlPlane, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(cp.base_url + path, context=cp.ssl, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def exchange(cp: ControlPlane, rule_id: str, assertion: str) -> tuple[int, dict]:
    req = urllib.request.Request(
        cp.base_url + "/v1/oauth/token", method="POST",
        data=json.dumps({
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion,
            "federation_rule_id": rule_id, "organization_id": cp.org_id,
        }).encode(),
        headers={"content-type": "application/json", "anthropic-beta": "oidc-federation-2026-04-01"},
    )
    try:
        with urllib.request.urlopen(req, context=cp.ssl, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("role", ["api", "server"])
def test_sigterm_lets_the_request_in_flight_finish(tmp_path, role, backend):
    # `server` stops its edge first, then drains the API the same way `api` does; on
    # PostgreSQL the pool closes only after the exchange's transaction committed.
    cp = ControlPlane(tmp_path, server=role == "server", database_url=database_url(backend))
    try:
        assert get(cp, "/readyz") == (200, "ready\n")
        issuer = Issuer()
        jwks = SlowJwks(issuer.jwks)
        sa = cp.admin("POST", "/v1/admin/service_accounts", {"name": "ci"})
        fdis = cp.admin("POST", "/v1/admin/federation/issuers", {"issuer_url": issuer.url, "jwks_url": jwks.url})
        rule = cp.admin("POST", "/v1/admin/federation/rules", {
            "issuer_id": fdis["id"], "subject": SUBJECT, "audience": AUDIENCE, "service_account_id": sa["id"],
        })
        events_before = cp.admin("GET", "/v1/audit_events?limit=1000")["data"]

        answer = {}

        def call():
            try:
                answer["got"] = exchange(cp, rule["id"], issuer.token(SUBJECT, AUDIENCE))
            except OSError as e:  # what a request cut off by the shutdown sees
                answer["got"] = (None, repr(e))

        worker = threading.Thread(target=call)
        worker.start()
        assert jwks.asked.wait(10), "the API never fetched the JWKS"
        # The exchange now waits for the identity provider: stop the process under it.
        cp.proc.send_signal(signal.SIGTERM)
        worker.join(30)
        status, body = answer["got"]
        assert status == 200, body
        assert body["access_token"].startswith("mtat_") and body["token_type"] == "Bearer"
        assert cp.proc.wait(timeout=30) == 0
        # Nothing listens any more.
        with pytest.raises(OSError):
            get(cp, "/healthz")
    finally:
        cp.close()

    # The exchange's audit event was committed before the database closed.
    cp.start("restarted.log")
    try:
        events = cp.admin("GET", "/v1/audit_events?limit=1000")["data"]
        assert len(events) == len(events_before) + 1
        assert events[0]["action"] == "oauth.token_exchange"
        assert cp.admin("GET", "/v1/audit_events/verify")["valid"] is True
    finally:
        cp.close()


PG = os.environ.get("MCP_TUNNEL_TEST_DATABASE_URL")


@pytest.mark.skipif(not PG, reason="MCP_TUNNEL_TEST_DATABASE_URL is not set (PostgreSQL needed)")
def test_database_password_stays_out_of_argv_and_logs(tmp_path):
    password = urllib.parse.urlsplit(PG).password
    assert password, "the test database URL has no password to look for"
    cp = ControlPlane(tmp_path, database_url=PG)
    try:
        assert get(cp, "/readyz") == (200, "ready\n")
        cmdline = pathlib.Path(f"/proc/{cp.proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        assert password not in cp.init_output
    finally:
        cp.close()
    assert password not in (tmp_path / "server.log").read_text()
    # A wrong password: `api` says why it cannot start, without the password.
    wrong = PG.replace(f":{password}@", ":wrong-pw-zz9@")
    (tmp_path / "database-url").write_text(wrong + "\n")
    failed = subprocess.run([str(cp.bin), "api", "--data-dir", str(cp.data), "--listen", "127.0.0.1:0"],
                            env=cp.env, capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0
    assert "password authentication failed" in failed.stderr, failed.stderr
    assert "wrong-pw-zz9" not in failed.stderr + failed.stdout
    # The URL given twice is refused before anything is opened.
    twice = subprocess.run([str(cp.bin), "api", "--data-dir", str(cp.data), "--listen", "127.0.0.1:0"],
                           env={**cp.env, "MCP_TUNNEL_DATABASE_URL": PG}, capture_output=True, text=True, timeout=60)
    assert twice.returncode != 0 and "given twice" in twice.stderr, twice.stderr
    assert password not in twice.stderr
