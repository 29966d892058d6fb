"""Running the real `mcp-tunnel server` the way the operator artifacts run it: their
command lines as written, with the files they mount put in place here (for the chart,
a small stand-in for the kubelet: volumes, items, environment from Secrets and the
downward API, `$(VAR)` expansion), listeners moved to free loopback ports, and their
own health checks pointed at it. The database is SQLite in a scratch directory: the
artifacts' PostgreSQL URL is the one thing replaced."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import docs
import proxyrun

# Flags whose value is an address the server binds, and the one it advertises.
LISTEN_FLAGS = {"--listen", "--connector-listen", "--client-listen", "--peer-listen", "--edge-admin-listen"}
ADVERTISE_FLAGS = {"--peer-advertise"}
KUBECTL_VALUE_FLAGS = {"-n", "--namespace", "-o", "--from-literal", "--from-file", "--cert", "--key", "-c", "-f", "--from"}
TUNNELS_BETA = "mcp-tunnels-2026-06-22"


def sqlite_url(directory: Path) -> str:
    return f"sqlite://{directory / 'control.db'}?mode=rwc"


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- Ports -----------------------------------------------------------------------


@dataclass
class Ports:
    """Container port -> the free loopback port standing in for it."""

    mapped: dict[int, int] = field(default_factory=dict)

    def local(self, port: int) -> int:
        if port not in self.mapped:
            self.mapped[port] = proxyrun.free_port()
        return self.mapped[port]

    def address(self, value: str) -> str:
        host, _, port = value.rpartition(":")
        assert port.isdigit(), f"{value!r} has no port"
        return f"127.0.0.1:{self.local(int(port))}"


def local_argv(argv: list[str], mounts: dict[str, Path], ports: Ports) -> list[str]:
    """The artifact's argv with mounted paths and bound ports made local; nothing else
    changes, so the binary judges every other flag as written."""
    out: list[str] = []
    for i, token in enumerate(argv):
        flag = argv[i - 1] if i else ""
        if flag in LISTEN_FLAGS or flag in ADVERTISE_FLAGS:
            token = ports.address(token)
        for mount, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if token == mount or token.startswith(mount + "/"):
                token = str(local) + token[len(mount) :]
                break
        out.append(token)
    return out


def flag_value(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- The server process ----------------------------------------------------------


def get(url: str, *, cafile: Path | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    if cafile:
        context = ssl.create_default_context(cafile=str(cafile))
    elif url.startswith("https:"):
        # As the kubelet probes: TLS without verification.
        context = ssl._create_unverified_context()
    else:
        context = None
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def api_call(base: str, cafile: Path, key: str, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={
            "x-api-key": key,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": TUNNELS_BETA,
            "content-type": "application/json",
        },
    )
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def served_certificate(address: str, server_name: str, cafile: Path) -> bytes:
    """The DER certificate served at `address` for `server_name` to a TLS client that
    trusts only `cafile` (the CA connectors pin); fails if it does not chain to it."""
    import socket

    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.getpeercert(binary_form=True)


def edge_chain_pins(address: str, server_name: str, cafile: Path) -> bool:
    """Whether a TLS client trusting only `cafile` accepts the certificate served at
    `address` for `server_name`."""
    return bool(served_certificate(address, server_name, cafile))


@dataclass
class Running:
    process: subprocess.Popen
    log: Path

    def stop(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        return code, time.monotonic() - started


@contextmanager
def server(argv: list[str], env: dict[str, str], cwd: Path, health_url: str, name: str = "server") -> Iterator[Running]:
    """Starts the binary with exactly `env` (plus PATH), waits until `health_url`
    answers 200, and kills it at the end if a test has not stopped it."""
    log = cwd / f"{name}.log"
    full_env = {"PATH": os.environ.get("PATH", ""), **env}
    with log.open("wb") as out:
        process = subprocess.Popen([str(proxyrun.binary()), *argv], cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    running = Running(process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{log.read_text()}")
            try:
                if get(health_url)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{name} not healthy in 30 s:\n{log.read_text()}"
            time.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def init(data_dir: Path, database_url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "MCP_TUNNEL_DATABASE_URL": database_url}
    return subprocess.run(
        [str(proxyrun.binary()), "server", "init", "--data-dir", str(data_dir), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- A stand-in for the cluster --------------------------------------------------

Cluster = dict[tuple[str, str], dict[str, bytes]]


def cluster_from_kubectl(calls: list[list[str]], cwd: Path) -> Cluster:
    """The Secrets and ConfigMaps that `kubectl create` calls (as recorded) would make,
    reading the files they name relative to `cwd`."""
    objects: Cluster = {}
    for argv in calls:
        positional, opts = docs.flags(argv, KUBECTL_VALUE_FLAGS)
        if positional[:1] != ["create"] or positional[1] not in ("secret", "configmap"):
            continue
        if positional[1] == "configmap":
            kind, name = "ConfigMap", positional[2]
        else:
            kind, name = "Secret", positional[3]
        data: dict[str, bytes] = {}
        if positional[1:3] == ["secret", "tls"]:
            data = {"tls.crt": (cwd / opts["--cert"][0]).read_bytes(), "tls.key": (cwd / opts["--key"][0]).read_bytes()}
        for spec in opts.get("--from-file", []):
            key, _, path = spec.partition("=")
            data[key] = (cwd / path).read_bytes()
        for spec in opts.get("--from-literal", []):
            key, _, value = spec.partition("=")
            data[key] = value.encode()
        objects[(kind, name)] = data
    return objects


def _volume_sources(volume: dict[str, Any]) -> list[tuple[str, str, list[dict] | None, int | None]]:
    if "secret" in volume:
        v = volume["secret"]
        return [("Secret", v["secretName"], v.get("items"), v.get("defaultMode"))]
    if "configMap" in volume:
        v = volume["configMap"]
        return [("ConfigMap", v["name"], v.get("items"), v.get("defaultMode"))]
    if "projected" in volume:
        mode = volume["projected"].get("defaultMode")
        out = []
        for src in volume["projected"]["sources"]:
            kind = "Secret" if "secret" in src else "ConfigMap"
            s = src["secret"] if "secret" in src else src["configMap"]
            out.append((kind, s["name"], s.get("items"), mode))
        return out
    if "emptyDir" in volume:
        return []
    raise AssertionError(f"no stand-in for volume {volume}")


def materialize(spec: dict[str, Any], container: dict[str, Any], cluster: Cluster, root: Path) -> dict[str, Path]:
    """Every volumeMount of `container` as a local directory: mountPath -> directory.
    A missing Secret, ConfigMap or key fails here, as the pod would fail to start."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        local = root / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        for kind, name, items, mode in _volume_sources(volumes[mount["name"]]):
            assert (kind, name) in cluster, f"{kind} {name} does not exist: the pod would not start"
            data = cluster[(kind, name)]
            for item in items or [{"key": k, "path": k} for k in data]:
                assert item["key"] in data, f"{kind} {name} has no key {item['key']}: the pod would not start"
                path = local / item["path"]
                path.write_bytes(data[item["key"]])
                path.chmod(item.get("mode", mode if mode is not None else 0o644))
        mounts[mount["mountPath"]] = local
    return mounts


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of env values and args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def container_env(container: dict[str, Any], cluster: Cluster, pod: dict[str, str]) -> dict[str, str]:
    """The container's environment: values, secretKeyRef and fieldRef resolved."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
            continue
        source = e["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ("Secret", ref["name"]) in cluster, f"Secret {ref['name']} does not exist"
            env[e["name"]] = cluster[("Secret", ref["name"])][ref["key"]].decode()
        elif "fieldRef" in source:
            env[e["name"]] = pod[source["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"no stand-in for {source}")
    return env


def probe_url(probe: dict[str, Any], container: dict[str, Any], ports: Ports) -> str:
    get_ = probe["httpGet"]
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    port = named.get(get_["port"], get_["port"])
    scheme = get_.get("scheme", "HTTP").lower()
    return f"{scheme}://127.0.0.1:{ports.local(int(port))}{get_['path']}"


def check_api_and_edge(api: str, edge: str, client: str, ca: Path, admin_key: str, base_domain: str, edge_host: str) -> None:
    """The API answers with the admin key over HTTPS trusted via edge-ca.pem; a tunnel
    it creates lives under the base domain; connectors and clients get the edge CA."""
    status, page = api_call(f"https://{api}", ca, admin_key, "GET", "/v1/tunnels")
    assert status == 200 and page["data"] == [], page
    status, tunnel = api_call(f"https://{api}", ca, admin_key, "POST", "/v1/tunnels", {"display_name": "deploy test"})
    assert status == 200, tunnel
    assert tunnel["domain"].endswith("." + base_domain)
    status, token = api_call(f"https://{api}", ca, admin_key, "POST", f"/v1/tunnels/{tunnel['id']}/reveal_token")
    assert status == 200 and token["tunnel_token"].startswith("eyJ"), token
    assert edge_chain_pins(edge, edge_host, ca)
    assert edge_chain_pins(client, tunnel["domain"], ca)


class Pod:
    """The server container of a rendered Deployment's pod number `index`, made
    runnable here: mounts materialized under `root`, environment resolved, database
    URL replaced unless it is already SQLite, ports moved."""

    def __init__(self, objs, cluster: Cluster, root: Path, index: int, database_url: str):
        (deploy,) = [o for o in objs if o["kind"] == "Deployment"]
        self.spec = deploy["spec"]["template"]["spec"]
        (self.container,) = [c for c in self.spec["containers"] if c["name"] == "server"]
        fields = {"metadata.name": f"{deploy['metadata']['name']}-7d9f-{index}", "status.podIP": "127.0.0.1"}
        self.env = container_env(self.container, cluster, fields)
        if not self.env["MCP_TUNNEL_DATABASE_URL"].startswith("sqlite:"):
            self.env["MCP_TUNNEL_DATABASE_URL"] = database_url
        self.root = root / f"pod-{index}"
        self.mounts = materialize(self.spec, self.container, cluster, self.root)
        self.ports = Ports()
        args = [expand(a, self.env) for a in self.container["args"]]
        self.argv = local_argv(args, self.mounts, self.ports)
        self.index = index

    def probe(self, kind: str) -> str:
        return probe_url(self.container[kind], self.container, self.ports)

    def port(self, name: str) -> str:
        (p,) = [p["containerPort"] for p in self.container["ports"] if p["name"] == name]
        return f"127.0.0.1:{self.ports.local(p)}"
