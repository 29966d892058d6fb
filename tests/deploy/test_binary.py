"""The artifacts against the real binary: every command line they run is one
`mcp-tunnel` understands, and every proxy configuration they produce is one the proxy
loads, serves health on, and shuts down from cleanly on SIGTERM."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import yaml

import proxyrun
from k8s import CUSTOMER_CHART, SERVER_CHART, config_of, containers, pod_specs, render
from test_compose import CUSTOMER, CUSTOMER_ENV, OPERATOR, OPERATOR_ENV, go_seconds, resolved
from values_sets import CUSTOMER_SETS, SERVER_SETS


def artifact_commands() -> dict[tuple[str, ...], set[str]]:
    """Subcommand path -> every --flag some artifact passes to it."""
    argvs: list[list[str]] = []
    for values in CUSTOMER_SETS.values():
        argvs += [c["args"] for _, s in pod_specs(render(CUSTOMER_CHART, values)) for c in containers(s)]
    for values in SERVER_SETS.values():
        objs = render(SERVER_CHART, values, release="ops")
        argvs += [c["args"] for where, s in pod_specs(objs) for c in containers(s) if "args" in c]
    for project, env, profiles in ((CUSTOMER, CUSTOMER_ENV, ["setup"]), (OPERATOR, OPERATOR_ENV, ["init"])):
        for svc in resolved(project, env, *profiles)["services"].values():
            if "mcp-tunnel" not in svc["image"]:
                continue
            argvs.append(svc["command"])
            argvs.append(svc["healthcheck"]["test"][2:]) if "healthcheck" in svc else None
    commands: dict[tuple[str, ...], set[str]] = {}
    for argv in argvs:
        path = []
        for token in argv:
            if token.startswith("-"):
                break
            path.append(token)
        # Positional arguments (a healthcheck's URL) are not subcommands.
        path = [p for p in path if "://" not in p]
        commands.setdefault(tuple(path), set()).update(t.split("=")[0] for t in argv if t.startswith("--"))
    return commands


COMMANDS = artifact_commands()


def test_the_artifacts_run_the_roles_the_spec_names():
    assert set(COMMANDS) == {
        ("proxy",),
        ("connector", "run"),
        ("setup", "init"),
        ("setup", "renew-cert"),
        ("server",),
        ("server", "init"),
        ("healthcheck",),
    }


def help_flags(text: str) -> set[str]:
    """The long options a `--help` text lists, from its option lines only (so
    `--tls-cert` is not found inside `--edge-tls-cert`, nor a flag a description names)."""
    return set(re.findall(r"^\s*(?:-\w, )?(--[a-z][a-z0-9-]*)", text, re.M))


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p))
def test_the_binary_understands_every_command_line(path):
    out = subprocess.run(
        [str(proxyrun.binary()), *path, "--help"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    missing = sorted(COMMANDS[path] - help_flags(out.stdout))
    assert not missing, f"`mcp-tunnel {' '.join(path)}` has no {missing}"


def test_the_server_reads_every_variable_the_operator_artifacts_set():
    """MCP_TUNNEL_* variables are the binary's own (`[env: …]` in its help); the
    PostgreSQL driver reads PGPASSWORD and PGPASSFILE (test_server_run runs the rest)."""
    names: set[str] = set()
    for values in SERVER_SETS.values():
        for _, spec in pod_specs(render(SERVER_CHART, values, release="ops")):
            names |= {e["name"] for c in containers(spec) if "args" in c for e in c.get("env", [])}
    for svc in resolved(OPERATOR, OPERATOR_ENV, "init")["services"].values():
        if "mcp-tunnel" in svc["image"]:
            names |= set(svc.get("environment", {}))
    helps = "".join(
        subprocess.run([str(proxyrun.binary()), *p, "--help"], capture_output=True, text=True, timeout=30).stdout
        for p in (["server"], ["server", "init"])
    )
    ours = {n for n in names if n.startswith("MCP_TUNNEL_")}
    assert ours == {"MCP_TUNNEL_DATABASE_URL"}
    for name in ours:
        assert f"[env: {name}" in helps, name
    assert names - ours <= {"PGPASSWORD", "PGPASSFILE", "POD_NAME", "POD_IP"}


@pytest.mark.parametrize("name", list(CUSTOMER_SETS))
def test_chart_configs_load_in_the_real_proxy(name, tmp_path):
    values = CUSTOMER_SETS[name]
    objs = render(CUSTOMER_CHART, values)
    certs = proxyrun.openssl_certs(tmp_path)
    cfg = proxyrun.local_config(config_of(objs), certs)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    argv = [str(proxyrun.binary()), "proxy", "--config", str(tmp_path / "config.yaml")]
    proxy_args = next(c["args"] for c in one_pod(objs)["containers"] if c["name"] == "mcp-proxy")
    if "--tunnel-domain" in proxy_args:
        argv += ["--tunnel-domain", proxyrun.DOMAIN]
    with proxyrun.proxy(argv, tmp_path, cfg) as p:
        assert p.get("/healthz")[0] == 200
        assert p.get("/readyz")[0] == 200
        status, metrics = p.get("/metrics")
        assert status == 200 and "mcp_proxy_certificate_not_after_seconds" in metrics
        started = time.monotonic()
        assert p.stop() == 0
        assert time.monotonic() - started < go_seconds(cfg.get("shutdown_timeout", "30s"))
    log = (tmp_path / "proxy.log").read_text()
    if cfg.get("log_level", "info") == "info" and cfg.get("log_format", "json") == "json":
        for route in values["gateway"]["config"]["routes"]:
            assert f'"route":"{route}"' in log


def test_compose_proxy_config_loads_in_the_real_proxy(tmp_path):
    config = yaml.safe_load((CUSTOMER / "config" / "mcp-proxy.yaml").read_text())
    certs = proxyrun.openssl_certs(tmp_path)
    cfg = proxyrun.local_config(config, certs)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with proxyrun.proxy([str(proxyrun.binary()), "proxy", "--config", str(tmp_path / "config.yaml")], tmp_path, cfg) as p:
        assert p.get("/readyz")[0] == 200
        assert p.stop() == 0


def one_pod(objs):
    (deploy,) = [o for o in objs if o["kind"] == "Deployment"]
    return deploy["spec"]["template"]["spec"]


def test_setup_is_reachable_as_slash_setup(tmp_path):
    """The image links /setup to the binary (SPEC §9): called by that name, it is
    `mcp-tunnel setup`."""
    link = tmp_path / "setup"
    link.symlink_to(proxyrun.binary())
    out = subprocess.run([str(link), "init", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "--output" in out.stdout and "--token-version" in out.stdout
