"""The operator artifacts on real PostgreSQL (MCP_TUNNEL_TEST_DATABASE_URL, which
.ci/setup provides): each test gets its own login role and database, and logs in the
way the artifact does, never with a password in the URL.

- Compose: `init` and `server` with the URL as written (host and names made local) and
  the password from a libpq password file in the page's format; a password file that
  others can read is ignored, as the page warns. Then `renew-certs` as written, against
  the running server.
- Chart, bundled PostgreSQL: the server pod with the URL as rendered (host made local)
  and PGPASSWORD from `postgresql.auth.existingSecret`; two replicas on one database."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from contextlib import ExitStack
from urllib.parse import urlsplit

import pytest

import proxyrun
import serverrun
from k8s import SERVER_CHART, render
from serverrun import Pod, Ports, check_api_and_edge, flag_value
from test_compose import OPERATOR, OPERATOR_ENV, resolved
from test_server_run import BASE_DOMAIN, EDGE_HOST
from values_sets import SERVER_SETS

ADMIN_URL = os.environ.get("MCP_TUNNEL_TEST_DATABASE_URL")
pytestmark = pytest.mark.skipif(not ADMIN_URL, reason="MCP_TUNNEL_TEST_DATABASE_URL is not set (PostgreSQL needed)")


@pytest.fixture
def database():
    """(host, port, name, password): a fresh login role owning a fresh database of the
    same name, dropped afterwards."""
    name = "mcpt_deploy_" + secrets.token_hex(4)
    password = secrets.token_hex(24)
    psql = lambda sql: subprocess.run(["psql", ADMIN_URL, "-qc", sql], check=True, capture_output=True, timeout=60)  # noqa: E731
    psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    psql(f"CREATE DATABASE {name} OWNER {name}")
    admin = urlsplit(ADMIN_URL)
    try:
        yield admin.hostname, admin.port or 5432, name, password
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql(f"DROP ROLE IF EXISTS {name}")


def local_url(url: str, host: str, port: int, name: str) -> str:
    """The artifact's URL with its host, port, user and database made local; the
    rest (no password, the query) as written."""
    m = re.fullmatch(r"postgres://(?P<user>\w+)@(?P<host>[\w.-]+):(?P<port>\d+)/(?P<db>\w+)(?P<query>\?.*)?", url)
    assert m, f"{url} is not a password-less postgres URL"
    return f"postgres://{name}@{host}:{port}/{name}{m['query'] or ''}"


def test_compose_init_and_server_log_in_with_the_password_file(database, tmp_path):
    host, port, name, password = database
    services = resolved(OPERATOR, OPERATOR_ENV, "init")["services"]
    init_svc, server_svc = services["init"], services["server"]
    local = {str(OPERATOR / "data"): tmp_path / "data", str(OPERATOR / "admin"): tmp_path / "admin"}
    (tmp_path / "admin").mkdir()
    # secrets/pgpass as the page writes it (`host:port:db:user:password`), made local.
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{host}:{port}:{name}:{name}:{password}\n")

    def env(svc):
        e = dict(svc["environment"])
        (secret,) = svc["secrets"]
        assert e["PGPASSFILE"] == secret["target"] == "/run/secrets/pgpass"
        return {"MCP_TUNNEL_DATABASE_URL": local_url(e["MCP_TUNNEL_DATABASE_URL"], host, port, name),
                "PGPASSFILE": str(pgpass)}

    ports = Ports()

    def init():
        argv = serverrun.local_argv(init_svc["command"], {v["target"]: local[v["source"]] for v in init_svc["volumes"]}, ports)
        return subprocess.run([str(proxyrun.binary()), *argv], env={"PATH": "/usr/bin:/bin", **env(init_svc)},
                              capture_output=True, text=True, timeout=60)

    # The driver ignores a password file group or others can read: no login.
    pgpass.chmod(0o644)
    refused = init()
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr, refused.stderr
    for leftover in (tmp_path / "data", tmp_path / "admin"):
        for f in leftover.rglob("*"):
            f.unlink() if f.is_file() else None
    pgpass.chmod(0o600)
    first = init()
    assert first.returncode == 0, first.stderr
    admin_key = (tmp_path / "admin" / "admin-api-key").read_text().strip()

    argv = serverrun.local_argv(server_svc["command"], {v["target"]: local[v["source"]] for v in server_svc["volumes"]}, ports)
    check = server_svc["healthcheck"]["test"]
    scheme, _, rest = check[3].partition("://")
    authority, _, path = rest.partition("/")
    health = f"{scheme}://{ports.address(authority)}/{path}"
    with serverrun.server(argv, env(server_svc), tmp_path, health) as srv:
        (api_port,) = [p["target"] for p in server_svc["ports"] if p.get("host_ip") == "127.0.0.1"]
        check_api_and_edge(
            f"127.0.0.1:{ports.local(api_port)}",
            ports.address(flag_value(server_svc["command"], "--connector-listen")),
            ports.address(flag_value(server_svc["command"], "--client-listen")),
            tmp_path / "data" / "edge-ca.pem", admin_key, BASE_DOMAIN, EDGE_HOST,
        )
        # The renew-certs service as written (plus --force: nothing is due a minute
        # after init) on the running server's data directory: the API and the edge
        # present the new certificates within the reload interval, no restart.
        renew_svc = resolved(OPERATOR, OPERATOR_ENV, "renew")["services"]["renew-certs"]
        assert renew_svc["network_mode"] == "none" and not renew_svc.get("environment")
        ca = tmp_path / "data" / "edge-ca.pem"
        api = f"127.0.0.1:{ports.local(api_port)}"
        client = ports.address(flag_value(server_svc["command"], "--client-listen"))
        before = (serverrun.served_certificate(api, "localhost", ca),
                  serverrun.served_certificate(client, f"x.{BASE_DOMAIN}", ca))
        renew_argv = serverrun.local_argv(renew_svc["command"], {v["target"]: local[v["source"]] for v in renew_svc["volumes"]}, ports)
        renewed = subprocess.run([str(proxyrun.binary()), *renew_argv, "--force"], env={"PATH": "/usr/bin:/bin"},
                                 capture_output=True, text=True, timeout=60)
        assert renewed.returncode == 0 and renewed.stdout.count("renewed, valid until") == 2, renewed.stdout + renewed.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = (serverrun.served_certificate(api, "localhost", ca),
                     serverrun.served_certificate(client, f"x.{BASE_DOMAIN}", ca))
            if after[0] != before[0] and after[1] != before[1]:
                break
            time.sleep(0.5)
        assert after[0] != before[0] and after[1] != before[1], "the server still presents the old certificates"
        assert srv.process.poll() is None, "the server restarted or died"
        code, _ = srv.stop()
    assert code == 0, srv.log.read_text()


def test_chart_bundled_postgres_logs_in_with_pgpassword(database, tmp_path):
    """Two server replicas as the chart renders them with the bundled PostgreSQL: the
    URL names no password, PGPASSWORD comes from the Secret, and both share the one
    database."""
    host, port, name, password = database
    values = SERVER_SETS["bundled-postgres"]
    objs = render(SERVER_CHART, values, release="ops", namespace="mcp-ops")
    cluster: serverrun.Cluster = {("Secret", values["postgresql"]["auth"]["existingSecret"]): {"password": password.encode()}}
    # `server init` on this database first (the page runs it through a port-forward).
    url = local_url(
        next(e["value"] for o in objs if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]
             for e in c["env"] if e["name"] == "MCP_TUNNEL_DATABASE_URL"),
        host, port, name,
    )
    env = {"PATH": os.environ.get("PATH", ""), "MCP_TUNNEL_DATABASE_URL": url, "PGPASSWORD": password}
    out = subprocess.run(
        [str(proxyrun.binary()), "server", "init", "--data-dir", str(tmp_path / "pg-data"), "--base-domain", BASE_DOMAIN,
         "--edge-address", f"{EDGE_HOST}:7844", "--admin-key-file", str(tmp_path / "admin-api-key")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    f = lambda n: (tmp_path / "pg-data" / n).read_bytes()  # noqa: E731
    cluster[("ConfigMap", values["config"]["configMapName"])] = {"config.json": f("config.json"), "edge-ca.pem": f("edge-ca.pem")}
    cluster[("Secret", values["masterKey"]["secretName"])] = {"master-key": f("master.key")}
    cluster[("Secret", values["tls"]["edgeSecretName"])] = {"tls.crt": f("edge.pem"), "tls.key": f("edge.key")}
    cluster[("Secret", values["tls"]["apiSecretName"])] = {"tls.crt": f("api.pem"), "tls.key": f("api.key")}
    pods = [Pod(objs, cluster, tmp_path, i, url) for i in range(2)]
    for pod in pods:
        assert pod.env["PGPASSWORD"] == password and "@" in pod.env["MCP_TUNNEL_DATABASE_URL"]
        assert password not in pod.env["MCP_TUNNEL_DATABASE_URL"]
    with ExitStack() as stack:
        running = [
            stack.enter_context(serverrun.server(p.argv, p.env, tmp_path, p.probe("startupProbe"), f"pod-{p.index}"))
            for p in pods
        ]
        for pod in pods:
            assert serverrun.get(pod.probe("readinessProbe"))[0] == 200
        check_api_and_edge(
            pods[0].port("api"), pods[1].port("connector"), pods[1].port("client"), tmp_path / "pg-data" / "edge-ca.pem",
            (tmp_path / "admin-api-key").read_text().strip(), BASE_DOMAIN, EDGE_HOST,
        )
        for r in reversed(running):
            code, _ = r.stop()
            assert code == 0, r.log.read_text()
