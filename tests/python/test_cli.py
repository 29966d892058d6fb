"""`mcp-tunnel tunnels|certs|admin` against a running API: credentials from the
environment or a credentials file, tables and --json, exit codes. Once on SQLite and once
on PostgreSQL. Also `server renew-certs` against a running server, and the refusals of
--trusted-proxy and --database-url-file."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time

import pytest

from controlplane import BACKENDS, ControlPlane, binary, database_url, recipe_ca

pytestmark = pytest.mark.skipif(binary() is None, reason="mcp-tunnel binary not built")


@pytest.fixture(scope="module", params=BACKENDS)
def cp(request, tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("cli"), database_url=database_url(request.param))
    plane.backend = request.param
    yield plane
    plane.close()


def run(cp, *args, key=None, extra_env=None, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_TUNNEL_")}
    env.update({"MCP_TUNNEL_API_URL": cp.base_url, "MCP_TUNNEL_CA_FILE": cp.ca_file})
    if key is not False:
        env["MCP_TUNNEL_API_KEY"] = key or cp.admin_key
    for k, v in (extra_env or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    out = subprocess.run([str(cp.bin), *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_tunnels_and_certs(cp, tmp_path):
    created = json.loads(run(cp, "tunnels", "create", "--display-name", "from cli", "--json").stdout)
    tid = created["id"]
    assert created["status"] == "needs_certificate"
    table = run(cp, "tunnels", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "DOMAIN", "STATUS"]
    assert any(tid in line and "needs_certificate" in line for line in table[1:])
    assert json.loads(run(cp, "tunnels", "get", tid, "--json").stdout)["domain"] == created["domain"]

    token = run(cp, "tunnels", "reveal-token", tid)
    assert token.stdout.startswith("eyJ") and len(token.stdout.splitlines()) == 1
    assert "ttkn_" in token.stderr
    rotated = run(cp, "tunnels", "rotate-token", tid, "--reason", "cli rotation")
    assert rotated.stdout != token.stdout

    pem = tmp_path / "ca.pem"
    pem.write_text(recipe_ca(tmp_path, "cli-ca"))
    cert = json.loads(run(cp, "certs", "add", tid, str(pem), "--json").stdout)
    assert cert["tunnel_id"] == tid
    listed = run(cp, "certs", "list", tid).stdout
    assert cert["id"] in listed and cert["fingerprint"] in listed
    assert json.loads(run(cp, "certs", "get", tid, cert["id"], "--json").stdout)["id"] == cert["id"]
    bad = run(cp, "certs", "add", tid, str(pem), check=False)
    assert bad.returncode != 0 and "already registered" in bad.stderr
    assert json.loads(run(cp, "certs", "archive", tid, cert["id"], "--json").stdout)["archived_at"]
    assert json.loads(run(cp, "tunnels", "archive", tid, "--json").stdout)["status"] == "archived"
    assert tid not in run(cp, "tunnels", "list").stdout
    assert tid in run(cp, "tunnels", "list", "--include-archived").stdout


def test_credentials_sources_and_errors(cp, tmp_path):
    missing = run(cp, "tunnels", "list", key=False, check=False)
    assert missing.returncode != 0 and "MCP_TUNNEL_API_KEY" in missing.stderr
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"api_url": cp.base_url, "api_key": cp.admin_key, "ca_file": cp.ca_file}))
    out = run(cp, "tunnels", "list", "--json", key=False, extra_env={"MCP_TUNNEL_CREDENTIALS_FILE": str(creds)})
    assert "data" in json.loads(out.stdout)
    wrong = run(cp, "tunnels", "list", key="mtk_wrong", check=False)
    assert wrong.returncode != 0 and "authentication_error (HTTP 401)" in wrong.stderr
    untrusted = run(cp, "tunnels", "list", extra_env={"MCP_TUNNEL_CA_FILE": None}, check=False)
    assert untrusted.returncode != 0 and "TLS" in untrusted.stderr, untrusted.stderr


def test_admin_keys_and_audit(cp, tmp_path):
    created = run(cp, "admin", "api-keys", "create", "--name", "reader", "--role", "developer").stdout
    key = next(line.split(": ", 1)[1] for line in created.splitlines() if line.startswith("key (shown once)"))
    assert run(cp, "tunnels", "list", key=key).returncode == 0
    denied = run(cp, "tunnels", "create", key=key, check=False)
    assert denied.returncode != 0 and "permission_error (HTTP 403)" in denied.stderr
    ck = json.loads(run(cp, "admin", "client-keys", "create", "--name", "agent", "--json").stdout)
    assert ck["key"].startswith("mtck_") and ck["scopes"] == ["workspace:use_tunnels"]

    assert "audit chain valid" in run(cp, "admin", "audit", "verify").stdout
    export = tmp_path / "audit.jsonl"
    run(cp, "admin", "audit", "export", "-o", str(export))
    assert run(cp, "admin", "audit", "verify", "--file", str(export), key=False).returncode == 0
    lines = export.read_text().splitlines()
    event = json.loads(lines[-1])
    event["actor"] = "someone else"
    export.write_text("\n".join(lines[:-1] + [json.dumps(event)]) + "\n")
    broken = run(cp, "admin", "audit", "verify", "--file", str(export), key=False, check=False)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout


def test_init_files_and_refusal(cp):
    modes = {p.name: p.stat().st_mode & 0o777 for p in cp.data.iterdir()}
    assert cp.data.stat().st_mode & 0o777 == 0o700
    assert ("control.db" in modes) == (cp.backend == "sqlite")
    assert not [n for n in modes if n.startswith(".init")], modes  # no staging or lock left
    for secret in ("master.key", "edge-ca.key", "edge.key", "api.key", *(["control.db"] if cp.backend == "sqlite" else [])):
        assert modes[secret] == 0o600, (secret, oct(modes[secret]))
    # Written to --admin-key-file, so not printed: init's output lands in logs.
    assert cp.admin_key.startswith("mtk_") and cp.admin_key not in cp.init_output
    assert "written to" in cp.init_output and "not printed" in cp.init_output
    # The master key and the admin key appear nowhere else on disk.
    master = (cp.data / "master.key").read_text().strip()
    for p in cp.data.iterdir():
        if p.name != "master.key" and p.is_file():
            data = p.read_bytes()
            assert master.encode() not in data and cp.admin_key.encode() not in data, p.name
    again = subprocess.run([str(cp.bin), "server", "init", "--data-dir", str(cp.data), "--base-domain",
                            "tunnels.test", "--edge-address", "127.0.0.1:7844"], capture_output=True, text=True)
    assert again.returncode != 0 and "already initialised" in again.stderr


def test_init_refuses_a_taken_secret_path_before_initialising(tmp_path):
    """A taken --admin-key-file/--admin-password-file fails init while nothing has happened:
    otherwise the admin key would be made, not written, and not made again."""
    bin_ = binary()
    data = tmp_path / "data"
    taken = tmp_path / "taken"
    taken.write_text("somebody else's file\n")
    base = [str(bin_), "server", "init", "--data-dir", str(data), "--base-domain", "tunnels.test",
            "--edge-address", "127.0.0.1:7844"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_TUNNEL_")}
    for flags in (["--admin-key-file", str(taken)],
                  ["--admin-key-file", str(tmp_path / "key"), "--admin-password-file", str(taken)]):
        out = subprocess.run(base + flags, capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode != 0 and str(taken) in out.stderr, out.stderr
        assert not (data / "config.json").exists()
        assert not (tmp_path / "key").exists(), "a claimed file is given back"
        assert taken.read_text() == "somebody else's file\n"
    # The same command with free paths then initialises, and writes both secrets.
    ok = subprocess.run(base + ["--admin-key-file", str(tmp_path / "key"),
                                "--admin-password-file", str(tmp_path / "password")],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "key").read_text().startswith("mtk_")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "password").read_text().strip()
    assert "not printed" in ok.stdout
    # A re-run with the same (now existing) files names the real reason.
    again = subprocess.run(base + ["--admin-key-file", str(tmp_path / "key")],
                           capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode != 0 and "already initialised" in again.stderr, again.stderr


@pytest.mark.parametrize("flags,env,words", [
    (["--trusted-proxy", "0.0.0.0/0"], {}, ["0.0.0.0/0", "any client could choose"]),
    (["--trusted-proxy", "10.0.0.0/8,::/0"], {}, ["::/0", "any client could choose"]),
    (["--trusted-proxy", "ingress-nginx"], {}, ["ingress-nginx", "not an IP address or network"]),
    ([], {"MCP_TUNNEL_TRUSTED_PROXIES": "10.0.0.0/33"}, ["10.0.0.0/33", "not an IP address or network"]),
])
def test_api_refuses_a_trusted_proxy_that_would_trust_everyone_or_is_not_a_network(tmp_path, flags, env, words):
    """A bad --trusted-proxy stops `api` before it opens anything or listens, naming the
    entry."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCP_TUNNEL_")}
    clean.update(env)
    data = tmp_path / "data"
    out = subprocess.run([str(binary()), "api", "--data-dir", str(data), "--listen", "127.0.0.1:0", *flags],
                         capture_output=True, text=True, env=clean, timeout=60)
    assert out.returncode != 0, out.stderr
    assert "--trusted-proxy" in out.stderr and "api listening" not in out.stderr + out.stdout, out.stderr
    for w in words:
        assert w in out.stderr, out.stderr
    assert not data.exists()


def test_database_url_file_flag_refusals_change_nothing(tmp_path):
    """--database-url-file: a missing or empty file, or a URL given twice, fails `server
    init` before anything exists (and `api` before it listens), naming the flag."""
    bin_ = binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_TUNNEL_")}
    data = tmp_path / "data"
    key = tmp_path / "key"
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    url = tmp_path / "url"
    url.write_text("postgres://u:pw-never-shown@127.0.0.1:1/db\n")
    base = [str(bin_), "server", "init", "--data-dir", str(data), "--base-domain", "tunnels.test",
            "--edge-address", "127.0.0.1:7844", "--admin-key-file", str(key)]
    cases = [
        (["--database-url-file", str(tmp_path / "missing")], {}, [str(tmp_path / "missing"), "--database-url-file"]),
        (["--database-url-file", str(empty)], {}, ["the file is empty"]),
        (["--database-url-file", str(url)], {"MCP_TUNNEL_DATABASE_URL": "postgres://x@127.0.0.1:1/db"}, ["given twice"]),
        ([], {"MCP_TUNNEL_DATABASE_URL_FILE": str(tmp_path / "missing")}, ["MCP_TUNNEL_DATABASE_URL_FILE"]),
    ]
    for flags, extra, words in cases:
        out = subprocess.run(base + flags, capture_output=True, text=True, env={**env, **extra}, timeout=60)
        assert out.returncode != 0, (flags, out.stderr)
        for w in words:
            assert w in out.stderr, (flags, out.stderr)
        assert "pw-never-shown" not in out.stderr + out.stdout
        assert not data.exists() and not key.exists(), (flags, "something was created")
        api = subprocess.run([str(bin_), "api", "--data-dir", str(data), "--listen", "127.0.0.1:0", *flags],
                             capture_output=True, text=True, env={**env, **extra}, timeout=60)
        assert api.returncode != 0 and "api listening" not in api.stdout + api.stderr, api.stderr
        for w in words:
            assert w in api.stderr, (flags, api.stderr)


def _served_cert(port: int, ca_file: str, name: str) -> bytes:
    ctx = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert(binary_form=True)


def test_renew_certs_reaches_a_running_server_without_a_restart(tmp_path):
    """`server renew-certs --force` against the data directory of a running `server`:
    within its reload interval the API and the edge's client listener present the new
    certificates (still trusted through edge-ca.pem), and the process never restarts."""
    plane = ControlPlane(tmp_path, server=True)
    try:
        api_port = int(plane.base_url.rsplit(":", 1)[1])
        old_api = _served_cert(api_port, plane.ca_file, "localhost")
        old_edge = _served_cert(plane.client_port, plane.ca_file, "abc.tunnels.test")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_TUNNEL_")}
        due = subprocess.run([str(plane.bin), "server", "renew-certs", "--data-dir", str(plane.data)],
                             capture_output=True, text=True, env=env, timeout=60)
        assert due.returncode == 0 and due.stdout.count("not due") == 2, due.stdout + due.stderr
        out = subprocess.run([str(plane.bin), "server", "renew-certs", "--data-dir", str(plane.data), "--force"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("renewed, valid until") == 2, out.stdout
        deadline = time.time() + 30
        while time.time() < deadline:
            new_api = _served_cert(api_port, plane.ca_file, "localhost")
            new_edge = _served_cert(plane.client_port, plane.ca_file, "abc.tunnels.test")
            if new_api != old_api and new_edge != old_edge:
                break
            time.sleep(0.5)
        assert new_api != old_api, "the API still presents the old certificate"
        assert new_edge != old_edge, "the edge still presents the old certificate"
        # What is served is the leaf renew-certs wrote.
        for served, name in ((new_api, "api.pem"), (new_edge, "edge.pem")):
            leaf = (plane.data / name).read_text().split("-----END CERTIFICATE-----")[0]
            assert served == ssl.PEM_cert_to_DER_cert(leaf + "-----END CERTIFICATE-----\n"), name
        assert plane.proc.poll() is None, "the server restarted or died"
        log = (tmp_path / "server.log").read_text()
        assert "certificate reloaded" in log, log[-2000:]
    finally:
        plane.close()
