"""The operator artifacts against the real server: the Compose stack's `init` and
`server` services and the chart's server pods, run as written (serverrun.py), pass
their own health checks, serve the Tunnels API with the admin key `server init` wrote,
present an edge certificate that chains to the CA connectors pin, write nothing into
their read-only mounts, and exit 0 on SIGTERM within their grace period."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

import proxyrun
import serverrun
from k8s import SERVER_CHART, render
from serverrun import Pod, Ports, check_api_and_edge, flag_value
from test_compose import OPERATOR, OPERATOR_ENV, go_seconds, resolved
from values_sets import SERVER_BASE, SERVER_SETS

BASE_DOMAIN = "tunnels.example.com"
EDGE_HOST = "edge.tunnels.example.com"
SECRET_FILES = ("master.key", "edge-ca.key", "edge.key", "api.key")


def test_compose_init_then_server(tmp_path):
    services = resolved(OPERATOR, OPERATOR_ENV, "init")["services"]
    init_svc, server_svc = services["init"], services["server"]
    local = {str(OPERATOR / "data"): tmp_path / "data", str(OPERATOR / "admin"): tmp_path / "admin"}
    (tmp_path / "admin").mkdir()
    (tmp_path / "db").mkdir()
    db = serverrun.sqlite_url(tmp_path / "db")

    def mounts(svc):
        return {v["target"]: local[v["source"]] for v in svc["volumes"]}

    def env(svc):
        e = dict(svc["environment"])
        assert e.pop("MCP_TUNNEL_DATABASE_URL").startswith("postgres://mcp_tunnel@postgres:5432/")
        e.pop("PGPASSFILE")
        return {**e, "MCP_TUNNEL_DATABASE_URL": db}

    ports = Ports()
    init_argv = serverrun.local_argv(init_svc["command"], mounts(init_svc), ports)
    run = lambda: subprocess.run(  # noqa: E731
        [str(proxyrun.binary()), *init_argv], env={"PATH": "/usr/bin:/bin", **env(init_svc)},
        capture_output=True, text=True, timeout=60,
    )
    first = run()
    assert first.returncode == 0, first.stderr
    data = tmp_path / "data"
    assert data.stat().st_mode & 0o777 == 0o700
    for name in SECRET_FILES:
        assert (data / name).stat().st_mode & 0o777 == 0o600, name
    admin_key_file = tmp_path / "admin" / "admin-api-key"
    assert admin_key_file.stat().st_mode & 0o777 == 0o600
    admin_key = admin_key_file.read_text().strip()
    assert admin_key.startswith("mtk_")
    password_file = tmp_path / "admin" / "console-admin-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    # Written to files, the secrets are not also printed (compose output is logged).
    assert admin_key not in first.stdout and password_file.read_text().strip() not in first.stdout
    written = serverrun.files_under(data)
    # One-shot: a second run refuses and leaves everything as it was.
    again = run()
    assert again.returncode != 0 and "already initialised" in again.stderr
    assert serverrun.files_under(data) == written

    argv = serverrun.local_argv(server_svc["command"], mounts(server_svc), ports)
    check = server_svc["healthcheck"]["test"]
    assert check[1:3] == ["/usr/local/bin/mcp-tunnel", "healthcheck"]
    scheme, _, rest = check[3].partition("://")
    authority, _, path = rest.partition("/")
    health = f"{scheme}://{ports.address(authority)}/{path}"
    with serverrun.server(argv, env(server_svc), tmp_path, health) as srv:
        out = subprocess.run([str(proxyrun.binary()), "healthcheck", health], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        # The port published on loopback is the one --listen binds.
        (api_port,) = [p["target"] for p in server_svc["ports"] if p.get("host_ip") == "127.0.0.1"]
        api = f"127.0.0.1:{ports.local(api_port)}"
        check_api_and_edge(
            api,
            ports.address(flag_value(server_svc["command"], "--connector-listen")),
            ports.address(flag_value(server_svc["command"], "--client-listen")),
            data / "edge-ca.pem", admin_key, BASE_DOMAIN, EDGE_HOST,
        )
        code, took = srv.stop()
    assert code == 0, srv.log.read_text()
    assert took < go_seconds(server_svc["stop_grace_period"])
    assert serverrun.files_under(data) == written, "the server wrote into its read-only data directory"


def init_cluster(tmp_path: Path) -> tuple[serverrun.Cluster, str, Path]:
    """`server init` output published as the chart's values name it (the contract
    docs/deploy-helm.md's kubectl lines follow; test_docs runs those lines too)."""
    (tmp_path / "db").mkdir()
    db = serverrun.sqlite_url(tmp_path / "db")
    out = serverrun.init(
        tmp_path / "server-data", db, "--base-domain", BASE_DOMAIN, "--edge-address", f"{EDGE_HOST}:7844",
        "--admin-key-file", str(tmp_path / "admin-api-key"),
    )
    assert out.returncode == 0, out.stderr
    f = lambda name: (tmp_path / "server-data" / name).read_bytes()  # noqa: E731
    cluster = {
        ("ConfigMap", SERVER_BASE["config"]["configMapName"]): {"config.json": f("config.json"), "edge-ca.pem": f("edge-ca.pem")},
        ("Secret", SERVER_BASE["masterKey"]["secretName"]): {"master-key": f("master.key")},
        ("Secret", SERVER_BASE["tls"]["edgeSecretName"]): {"tls.crt": f("edge.pem"), "tls.key": f("edge.key")},
        ("Secret", SERVER_BASE["tls"]["apiSecretName"]): {"tls.crt": f("api.pem"), "tls.key": f("api.key")},
        ("Secret", "mcp-tunnel-db"): {"database-url": db.encode()},
        ("Secret", "mcp-tunnel-pg"): {"password": b"only-read-by-postgresql-here"},
    }
    return cluster, (tmp_path / "admin-api-key").read_text().strip(), tmp_path / "server-data" / "edge-ca.pem"


def directory(database_url: str) -> dict[str, str]:
    path = database_url.removeprefix("sqlite://").partition("?")[0]
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT edge_id, peer_addr FROM edges"))


@pytest.mark.parametrize("name", list(SERVER_SETS))
def test_chart_pods_run_the_real_server(name, tmp_path):
    values = SERVER_SETS[name]
    objs = render(SERVER_CHART, values, release="ops", namespace="mcp-ops")
    cluster, admin_key, ca = init_cluster(tmp_path)
    db = cluster[("Secret", "mcp-tunnel-db")]["database-url"].decode()
    replicas = min(values.get("replicaCount", 2), 2)
    pods = [Pod(objs, cluster, tmp_path, i, db) for i in range(replicas)]
    mounted = {p.index: {m: serverrun.files_under(d) for m, d in p.mounts.items()} for p in pods}
    grace = pods[0].spec["terminationGracePeriodSeconds"]
    with ExitStack() as stack:
        running = [
            stack.enter_context(serverrun.server(p.argv, p.env, tmp_path, p.probe("startupProbe"), f"pod-{p.index}"))
            for p in pods
        ]
        for pod in pods:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert serverrun.get(pod.probe(kind))[0] == 200, (pod.index, kind)
        check_api_and_edge(
            pods[0].port("api"), pods[-1].port("connector"), pods[-1].port("client"), ca, admin_key, BASE_DOMAIN, EDGE_HOST,
        )
        # Each replica heartbeats its name ($(POD_NAME)) and the peer address it
        # advertises ($(POD_IP):peer port) into the shared directory.
        expected = {p.env["POD_NAME"]: p.port("peer") for p in pods}
        deadline = time.monotonic() + 10
        while (edges := directory(db)) != expected:
            assert time.monotonic() < deadline, edges
            time.sleep(0.2)
        for r in reversed(running):
            code, took = r.stop()
            assert code == 0 and took < grace, r.log.read_text()
    for pod in pods:
        assert {m: serverrun.files_under(d) for m, d in pod.mounts.items()} == mounted[pod.index]
