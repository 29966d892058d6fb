"""Every command in docs/deploy-helm.md and docs/deploy-compose.md, exercised as far
as this machine allows:

- `helm` lines run through the Helm SDK (lint, template, and install and upgrade as
  client-side dry runs) with the page's own values blocks;
- `docker compose` lines are checked against the real project (services, profiles,
  variables) and `config` lines run with Docker Compose itself;
- `kubectl` lines are checked for the Secret names and keys the charts read;
- the manual flows' shell blocks run for real (openssl, files, permissions; `sudo`,
  `docker`, `kubectl` stubbed), and their certificates serve an MCP call through the
  proxy with the page's config, including a hot-reloaded renewal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import helm_python as helm
import pytest
import yaml

import docs
import proxyrun
from k8s import CUSTOMER_CHART, ROOT, SERVER_CHART, by_kind, hook, lint, merge, one, render, validate
import serverrun
from test_binary import help_flags
from test_compose import CUSTOMER, CUSTOMER_ENV, OPERATOR, OPERATOR_ENV, compose, flag, resolved

HELM_DOC, COMPOSE_DOC = "deploy-helm.md", "deploy-compose.md"
HELM_VALUE_FLAGS = {"-n", "--namespace", "-f", "--values", "--set", "--version"}
KUBECTL_VALUE_FLAGS = {"-n", "--namespace", "-o", "--from-literal", "--from-file", "--cert", "--key", "-c", "-f", "--from"}

# Which values file each helm block means.
VALUES_FOR_BLOCK = {
    "helm-managed": "values-managed",
    "helm-rotate": "values-managed",
    "helm-upgrade": "values-managed",
    "helm-external": "values-external",
    "teardown": "values-managed",
    "helm-server": "values-server",
}
CHARTS = {"./deploy/helm/mcp-tunnel": CUSTOMER_CHART, "./deploy/helm/mcp-tunnel-server": SERVER_CHART}


def values_block(name: str) -> dict:
    return yaml.safe_load(docs.named(HELM_DOC)[name].body)


def helm_lines():
    return [(b, c) for b, c in docs.all_commands(HELM_DOC) if c.argv[0] == "helm"]


def test_the_pages_have_the_checked_blocks():
    assert set(docs.named(HELM_DOC)) == {
        "values-managed", "helm-managed", "manual-certs", "manual-secrets", "values-external", "helm-external",
        "values-egress", "helm-rotate", "manual-rotate", "manual-renew", "helm-upgrade", "teardown",
        "server-init", "values-server", "helm-server",
    }
    assert set(docs.named(COMPOSE_DOC)) == {
        "compose-programmatic", "compose-config", "compose-up", "manual-certs", "compose-rotate",
        "compose-rotate-manual", "compose-renew", "manual-renew", "compose-upgrade", "compose-teardown",
        "compose-operator", "compose-operator-renew",
    }


@pytest.mark.parametrize("name", ["values-managed", "values-external", "values-egress"])
def test_helm_values_blocks_render(name):
    values = values_block(name)
    if name == "values-egress":
        values = merge(values_block("values-managed"), values)
    assert lint(CUSTOMER_CHART, values) == []
    objs = render(CUSTOMER_CHART, values)
    assert one(objs, "Deployment")
    for obj in objs:
        validate(obj)


def test_server_values_block_renders():
    values = values_block("values-server")
    assert lint(SERVER_CHART, values) == []
    objs = render(SERVER_CHART, values, release="mcp-tunnel-server")
    assert one(objs, "Ingress")
    for obj in objs:
        validate(obj)


@pytest.mark.parametrize("index", range(len(helm_lines())), ids=lambda i: helm_lines()[i][1].line[:60])
def test_helm_commands_run(index):
    block, cmd = helm_lines()[index]
    sub, *rest = cmd.argv[1:]
    positional, opts = docs.flags(rest, HELM_VALUE_FLAGS)
    namespace = (opts.get("-n") or opts.get("--namespace") or ["default"])[0]
    values = values_block(VALUES_FOR_BLOCK[block.name])
    for expr in opts.get("--set", []):
        values = merge(values, helm.parse_set_string(expr))
    if sub == "uninstall":
        assert positional == ["mcp-tunnel"] and namespace == "mcp-tunnel"
        return
    chart_arg = positional[0] if sub == "lint" else positional[1]
    path = CHARTS[chart_arg]
    assert opts.get("-f") in (["values.yaml"], ["server-values.yaml"])
    if sub == "lint":
        assert lint(path, values) == []
    elif sub == "template":
        assert render(path, values, release=positional[0], namespace=namespace)
    elif sub == "install":
        cfg = helm.Config(storage_driver="memory", namespace=namespace, kubeconfig_content=DUMMY_KUBECONFIG)
        release = cfg.install(
            str(path), positional[0], values, namespace=namespace, dry_run="client",
            create_namespace="--create-namespace" in opts,
        )
        assert release["name"] == positional[0] and release["manifest"]
    elif sub == "upgrade":
        objs = render(path, values, release=positional[0], namespace=namespace, upgrade=True)
        # The rotation command re-runs setup on upgrade; a plain upgrade does not.
        rerun = any("pre-upgrade" in hook(o) for o in by_kind(objs, "Job"))
        assert rerun == (block.name == "helm-rotate")
    else:
        pytest.fail(f"no check for `helm {sub}`: add one")


DUMMY_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
users: [{name: none, user: {token: none}}]
current-context: none
"""


def kubectl_lines():
    return [(d, b, c) for d in (HELM_DOC,) for b, c in docs.all_commands(d) if c.argv[0] == "kubectl"]


# Secret name -> the keys the charts read from it (or the setup component writes).
def secret_contract() -> dict[str, set[str]]:
    external = values_block("values-external")["external"]
    server = values_block("values-server")
    return {
        external["tunnelTokenSecretName"]: {"tunnel-token"},
        external["serverCertSecretName"]: {"tls.crt", "tls.key"},
        "tunnels-api-key": {"api-token"},
        server["tls"]["edgeSecretName"]: {"tls.crt", "tls.key"},
        server["tls"]["apiSecretName"]: {"tls.crt", "tls.key"},
        server["masterKey"]["secretName"]: {"master-key"},
        server["database"]["existingSecret"]: {"database-url"},
    }


# ConfigMap name -> the keys the charts read from it.
def configmap_contract() -> dict[str, set[str]]:
    return {values_block("values-server")["config"]["configMapName"]: {"config.json", "edge-ca.pem"}}


def test_api_key_secret_name_matches_the_chart_default_key():
    assert yaml.safe_load((CUSTOMER_CHART / "values.yaml").read_text())["api"]["apiKeySecret"]["key"] == "api-token"


@pytest.mark.parametrize("index", range(len(kubectl_lines())), ids=lambda i: kubectl_lines()[i][2].line[:60])
def test_kubectl_commands_name_what_the_charts_read(index):
    _, block, cmd = kubectl_lines()[index]
    positional, opts = docs.flags(cmd.argv[1:], KUBECTL_VALUE_FLAGS)
    verb = positional[:3]
    contract = secret_contract()
    managed = render(CUSTOMER_CHART, values_block("values-managed"))
    if verb[:2] == ["create", "namespace"] or positional == ["apply"]:
        return
    if verb == ["create", "secret", "generic"]:
        name = positional[3]
        keys = {v.split("=")[0] for f in ("--from-literal", "--from-file") for v in opts.get(f, [])}
        assert contract[name] == keys, name
    elif verb == ["create", "secret", "tls"]:
        assert contract[positional[3]] == {"tls.crt", "tls.key"}
    elif verb[:2] == ["create", "configmap"]:
        assert configmap_contract()[positional[2]] == {v.split("=")[0] for v in opts["--from-file"]}
    elif verb[:1] == ["port-forward"]:
        # The bundled PostgreSQL's Service, in the release the page installs.
        values = merge(values_block("values-server"), {"postgresql": {"enabled": True, "auth": {"existingSecret": "pg"}},
                                                        "database": {"existingSecret": ""}})
        objs = render(SERVER_CHART, values, release="mcp-tunnel-server", namespace="mcp-tunnel-server")
        service = one(objs, "Service", positional[1].removeprefix("svc/"))
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "postgresql"
        assert int(positional[2].split(":")[1]) == service["spec"]["ports"][0]["port"]
        assert (opts.get("-n") or [""])[0] == "mcp-tunnel-server"
    elif verb[:2] == ["get", "secret"]:
        assert positional[2] == one(managed, "Secret")["metadata"]["name"]
        assert re.fullmatch(r"\{\.data\.tunnel-domain\}", opts["-o"][0].removeprefix("jsonpath="))
    elif verb[:1] == ["logs"]:
        deploy = one(managed, "Deployment")
        assert positional[1] == f"deploy/{deploy['metadata']['name']}"
        assert opts["-c"][0] in {c["name"] for c in deploy["spec"]["template"]["spec"]["containers"]}
    elif verb[:2] == ["create", "job"]:
        assert opts["--from"][0] == f"cronjob/{one(managed, 'CronJob')['metadata']['name']}"
    elif verb[:2] == ["delete", "secret"]:
        # The managed Secret and the two of external mode, as SPEC §10's teardown lists them.
        assert set(positional[2:]) == {one(managed, "Secret")["metadata"]["name"], *list(contract)[:2]}
        assert "--ignore-not-found" in opts
    else:
        pytest.fail(f"no check for `{cmd.line}`: add one")


def compose_lines():
    return [(b, c) for b, c in docs.all_commands(COMPOSE_DOC) if c.argv[:2] == ["docker", "compose"]]


@pytest.mark.parametrize("index", range(len(compose_lines())), ids=lambda i: compose_lines()[i][1].line[:60])
def test_compose_commands_exist_in_the_project(index):
    block, cmd = compose_lines()[index]
    operator = block.name.startswith("compose-operator")
    project, env = (OPERATOR, OPERATOR_ENV) if operator else (CUSTOMER, CUSTOMER_ENV)
    env = {**env, **cmd.env}
    positional, opts = docs.flags(cmd.argv[2:], {"--timeout", "--profile"})
    sub, services = positional[0], positional[1:]
    known = resolved(project, env, *(("init", "renew") if operator else ("setup",)))["services"]
    for service in services:
        assert service in known, f"{cmd.line}: no service {service}"
    if sub == "run":
        assert "--rm" in opts
        if "TOKEN_VERSION" in cmd.env:
            assert flag(known[services[0]]["command"], "--token-version") == cmd.env["TOKEN_VERSION"]
    elif sub == "config":
        out = compose(project, env, *cmd.argv[2:])
        assert out.returncode == 0, out.stderr
    elif sub in ("up", "ps", "pull", "logs", "down", "restart"):
        pass  # needs the Docker engine; the names are checked above
    else:
        pytest.fail(f"no check for `{cmd.line}`: add one")


def test_compose_doc_config_is_the_shipped_config():
    doc = yaml.safe_load(docs.named(COMPOSE_DOC)["compose-config"].body)
    shipped = yaml.safe_load((CUSTOMER / "config" / "mcp-proxy.yaml").read_text())
    assert doc == shipped


def test_docker_build_lines_build_the_repository_dockerfile():
    for doc in (HELM_DOC, COMPOSE_DOC):
        builds = [c for _, c in docs.all_commands(doc) if c.argv[:2] == ["docker", "build"]]
        assert builds, doc
        for cmd in builds:
            assert cmd.argv[-1] == "." and "-t" in cmd.argv
    assert (ROOT / "Dockerfile").exists()


def run_block(body: str, cwd: Path, env: dict[str, str], real: dict[str, Path] | None = None) -> subprocess.CompletedProcess[str]:
    """A doc's shell block in bash, with sudo running the command itself and docker and
    kubectl recording their arguments (no engine, no cluster here): as text in .calls,
    and as JSON argv lines in .argv. `real` puts real programs on PATH under a name."""
    stubs = cwd / ".stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    record = "import json, sys; open(sys.argv[1], 'a').write(json.dumps(sys.argv[2:]) + chr(10))"
    for tool in ("docker", "kubectl"):
        (stubs / tool).write_text(
            f'#!/bin/sh\necho "{tool} $*" >> "{cwd}/.calls"\n'
            f'exec "{sys.executable}" -c "{record}" "{cwd}/.argv" {tool} "$@"\n'
        )
    if os.geteuid() != 0:
        (stubs / "chown").write_text("#!/bin/sh\nexit 0\n")
    for name, path in (real or {}).items():
        (stubs / name).symlink_to(path)
    for stub in stubs.iterdir():
        if not stub.is_symlink():
            stub.chmod(0o755)
    full_env = {**os.environ, **env, "PATH": f"{stubs}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)


def domain_of(body: str) -> str:
    return re.search(r"export TUNNEL_DOMAIN=(\S+)", body).group(1)


def test_compose_manual_flow_end_to_end(tmp_path):
    """The manual flow as written: certificates, token file, permissions; then the
    page's proxy config serves an MCP call with them; renewal is picked up without a
    restart; token rotation replaces the file atomically."""
    page = docs.named(COMPOSE_DOC)
    (tmp_path / "deploy" / "compose").mkdir(parents=True)
    shutil.copytree(CUSTOMER, tmp_path / "deploy" / "compose" / "customer")
    certs = run_block(page["manual-certs"].body, tmp_path, {})
    assert certs.returncode == 0, certs.stderr
    work = tmp_path / "mcp-tunnel"
    data = work / "data"
    assert (data / "tunnel-token").read_text() == "eyJ..."
    for key in ("ca.key", "tls.key", "tunnel-token"):
        assert (data / key).stat().st_mode & 0o077 == 0, f"{key} is readable by others"
    if os.geteuid() == 0:
        assert data.stat().st_uid == 65532 and (data / "tls.key").stat().st_uid == 65532
    domain = domain_of(page["manual-certs"].body)

    config = yaml.safe_load(page["compose-config"].body)
    with proxyrun.mcp_server(tmp_path) as port:
        config["routes"] = {"docs": f"http://127.0.0.1:{port}"}
        config["upstream"]["allowed_ips"] = ["127.0.0.1/32"]
        config["tls"]["reload_interval"] = "1s"
        cfg = proxyrun.local_config(config, {"cert": data / "tls.crt", "key": data / "tls.key", "ca": data / "ca.crt"})
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        argv = [str(proxyrun.binary()), "proxy", "--config", str(tmp_path / "config.yaml")]
        with proxyrun.proxy(argv, tmp_path, cfg) as p:
            assert "echo" in proxyrun.call_list(f"docs.{domain}", p.listen, data / "ca.crt")
            before = (data / "tls.crt").read_bytes()
            renew = run_block(page["manual-renew"].body, work, {"TUNNEL_DOMAIN": domain})
            assert renew.returncode == 0, renew.stderr
            assert (data / "tls.crt").read_bytes() != before
            deadline = time.monotonic() + 20
            while '"certificate reloaded"' not in p.log.read_text():
                assert time.monotonic() < deadline, "the renewed certificate was not reloaded"
                time.sleep(0.2)
            assert "echo" in proxyrun.call_list(f"docs.{domain}", p.listen, data / "ca.crt")
            assert p.stop() == 0

    rotate = run_block(page["compose-rotate-manual"].body, work, {})
    assert rotate.returncode == 0, rotate.stderr
    assert (data / "tunnel-token").read_text() == "eyJ..."
    assert not (data / "tunnel-token.new").exists()
    assert (data / "tunnel-token").stat().st_mode & 0o777 == 0o600

    teardown = run_block(page["compose-teardown"].body, work, {})
    assert teardown.returncode == 0, teardown.stderr
    assert not data.exists()
    assert "docker compose down" in (work / ".calls").read_text()


def test_helm_manual_flow_certificates_and_renewal(tmp_path):
    page = docs.named(HELM_DOC)
    made = run_block(page["manual-certs"].body, tmp_path, {})
    assert made.returncode == 0, made.stderr
    data = tmp_path / "mcp-tunnel" / "data"
    verify = ["openssl", "verify", "-CAfile", str(data / "ca.crt"), str(data / "tls.crt")]
    assert subprocess.run(verify, capture_output=True).returncode == 0
    before = (data / "tls.crt").read_bytes()
    renewed = run_block(page["manual-renew"].body, tmp_path, {"TUNNEL_DOMAIN": domain_of(page["manual-certs"].body)})
    assert renewed.returncode == 0, renewed.stderr
    assert (data / "tls.crt").read_bytes() != before
    assert subprocess.run(verify, capture_output=True).returncode == 0
    # The Secret is replaced from the renewed files with the keys the chart reads.
    calls = (tmp_path / ".calls").read_text()
    assert "create secret generic mcp-tunnel-cert --from-file=tls.crt=data/tls.crt --from-file=tls.key=data/tls.key" in calls


def recorded(cwd: Path, tool: str) -> list[list[str]]:
    lines = (cwd / ".argv").read_text().splitlines() if (cwd / ".argv").exists() else []
    return [argv[1:] for argv in map(json.loads, lines) if argv[0] == tool]


def test_compose_operator_block_makes_the_files_the_stack_reads(tmp_path):
    """The operator block as written: the password file matches the server's database
    URL and PostgreSQL's password, and every file has the mode and owner the page says."""
    (tmp_path / "deploy" / "compose").mkdir(parents=True)
    shutil.copytree(OPERATOR, tmp_path / "deploy" / "compose" / "operator")
    out = run_block(docs.named(COMPOSE_DOC)["compose-operator"].body, tmp_path, {})
    assert out.returncode == 0, out.stderr
    work = tmp_path / "mcp-tunnel-server"
    mode = lambda p: (work / p).stat().st_mode & 0o777  # noqa: E731
    assert mode(".env") == 0o600
    assert mode("data") == mode("admin") == mode("secrets") == 0o700
    assert mode("secrets/pgpass") == 0o600, "the driver ignores a password file others can read"
    assert mode("secrets/postgres-password") == 0o400
    if os.geteuid() == 0:
        owner = lambda p: (work / p).stat().st_uid  # noqa: E731
        assert owner("secrets/pgpass") == owner("data") == owner("admin") == 65532
        assert owner("secrets/postgres-password") == 999
    password = (work / "secrets" / "postgres-password").read_text()
    assert re.fullmatch(r"[0-9a-f]{48}", password)
    services = resolved(OPERATOR, OPERATOR_ENV, "init")["services"]
    url = services["server"]["environment"]["MCP_TUNNEL_DATABASE_URL"]
    m = re.fullmatch(r"postgres://(\w+)@([\w.-]+):(\d+)/(\w+)\?.*", url)
    assert m, url
    user, host, port, database = m.groups()
    assert (work / "secrets" / "pgpass").read_text() == f"{host}:{port}:{database}:{user}:{password}\n"
    pg = services["postgres"]["environment"]
    assert (pg["POSTGRES_USER"], pg["POSTGRES_DB"]) == (user, database)
    assert recorded(tmp_path, "docker") == [
        ["compose", "config", "--quiet"], ["compose", "run", "--rm", "init"], ["compose", "up", "-d"],
    ]


def test_helm_server_init_block_starts_the_chart(tmp_path):
    """The page's bootstrap as written, with the real binary and SQLite for the database
    URL: what its kubectl lines would create is what the chart (with the page's values)
    mounts, and the server pod then starts, passes its probes and serves the API with
    the admin key `init` wrote."""
    body = docs.named(HELM_DOC)["server-init"].body
    db = serverrun.sqlite_url(tmp_path)
    body, n = re.subn(r"^export MCP_TUNNEL_DATABASE_URL=.*$", f"export MCP_TUNNEL_DATABASE_URL='{db}'", body, flags=re.M)
    assert n == 1, "the block sets the database URL once"
    out = run_block(body, tmp_path, {}, real={"mcp-tunnel": proxyrun.binary()})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "admin-api-key").stat().st_mode & 0o777 == 0o600
    # Every object goes to the namespace the page installs into (a line without -n
    # would be missed here, and the pod below would not start).
    published = [c[2:] for c in recorded(tmp_path, "kubectl") if c[:2] == ["-n", "mcp-tunnel-server"]]
    cluster = serverrun.cluster_from_kubectl(published, tmp_path)
    assert set(cluster) == {("ConfigMap", "mcp-tunnel-server-config")} | {
        ("Secret", name) for name in ("mcp-tunnel-master-key", "mcp-tunnel-edge-tls", "mcp-tunnel-api-tls", "mcp-tunnel-db")
    }
    # edge-ca.key, the CA's private key, stays out of the cluster.
    ca_key = (tmp_path / "server-data" / "edge-ca.key").read_bytes()
    assert all(ca_key not in v for data in cluster.values() for v in data.values())

    values = values_block("values-server")
    objs = render(SERVER_CHART, values, release="mcp-tunnel-server", namespace="mcp-tunnel-server")
    pod = serverrun.Pod(objs, cluster, tmp_path, 0, db)
    init_argv = next(c.argv for _, c in docs.all_commands(HELM_DOC) if c.argv[:3] == ["mcp-tunnel", "server", "init"])
    edge_host = flag(init_argv, "--edge-address").rpartition(":")[0]
    with serverrun.server(pod.argv, pod.env, tmp_path, pod.probe("startupProbe")) as running:
        assert serverrun.get(pod.probe("readinessProbe"))[0] == 200
        serverrun.check_api_and_edge(
            pod.port("api"), pod.port("connector"), pod.port("client"), tmp_path / "server-data" / "edge-ca.pem",
            (tmp_path / "admin-api-key").read_text().strip(), flag(init_argv, "--base-domain"), edge_host,
        )
        code, _ = running.stop()
    assert code == 0, running.log.read_text()


def mcp_tunnel_lines():
    return [(d, c) for d in (HELM_DOC, COMPOSE_DOC) for _, c in docs.all_commands(d) if c.argv[0] == "mcp-tunnel"]


@pytest.mark.parametrize("index", range(len(mcp_tunnel_lines())), ids=lambda i: mcp_tunnel_lines()[i][1].line[:60])
def test_mcp_tunnel_commands_exist(index):
    _, cmd = mcp_tunnel_lines()[index]
    path = []
    for token in cmd.argv[1:]:
        if token.startswith("-"):
            break
        path.append(token)
    out = subprocess.run([str(proxyrun.binary()), *path, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    used = {t.split("=")[0] for t in cmd.argv if t.startswith("--")}
    assert not used - help_flags(out.stdout), cmd.line
