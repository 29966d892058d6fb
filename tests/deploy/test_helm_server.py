"""The mcp-tunnel-server chart (operator side): `server` replicas on PostgreSQL with the
edge and API Services, rendered by real Helm and checked like the customer chart."""

from __future__ import annotations

import pytest

from k8s import SERVER_CHART, DIGEST, by_kind, containers, lint, one, pod_specs, render, validate
from values_sets import SERVER_SETS

SETS = list(SERVER_SETS)
FULLNAME = "ops-mcp-tunnel-server"


@pytest.fixture(scope="module", params=SETS)
def rendered(request):
    values = SERVER_SETS[request.param]
    return values, render(SERVER_CHART, values, release="ops", namespace="mcp-ops")


@pytest.mark.parametrize("name", SETS)
def test_lints_clean(name):
    assert lint(SERVER_CHART, SERVER_SETS[name]) == []


def test_every_manifest_matches_its_schema(rendered):
    _, objs = rendered
    for obj in objs:
        validate(obj)


def test_server_replicas_with_edge_and_api_services(rendered):
    values, objs = rendered
    deploy = one(objs, "Deployment", FULLNAME)
    assert deploy["spec"]["replicas"] == values.get("replicaCount", 2)
    (server,) = deploy["spec"]["template"]["spec"]["containers"]
    assert server["args"][0] == "server"
    edge = one(objs, "Service", f"{FULLNAME}-edge")
    assert {p["name"]: p["port"] for p in edge["spec"]["ports"]} == {"connector": 7844, "client": 443}
    assert edge["spec"]["type"] == "LoadBalancer"
    api = one(objs, "Service", f"{FULLNAME}-api")
    api_type = values.get("service", {}).get("api", {}).get("type", "ClusterIP")
    assert api["spec"]["type"] == api_type
    assert {p["name"]: p["port"] for p in api["spec"]["ports"]} == {"api": 8443}
    # Published services keep client addresses (per-source limits, audit `source`).
    for svc in (edge, api):
        if svc["spec"]["type"] != "ClusterIP":
            assert svc["spec"]["externalTrafficPolicy"] == "Local"
    pdbs = by_kind(objs, "PodDisruptionBudget")
    assert len(pdbs) == (1 if deploy["spec"]["replicas"] > 1 else 0)
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    for svc in (edge, api):
        assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    ports = {p["name"] for p in server["ports"]}
    assert {p["targetPort"] for s in (edge, api) for p in s["spec"]["ports"]} <= ports


def test_database_url_never_in_a_manifest(rendered):
    values, objs = rendered
    server = one(objs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in server["env"]}
    assert "--database-url" not in server["args"], "argv is visible to every local user"
    if values.get("postgresql", {}).get("enabled"):
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mcp-tunnel-pg", "key": "password"}
        # The URL names no password: the driver takes it from PGPASSWORD.
        assert env["MCP_TUNNEL_DATABASE_URL"]["value"] == (
            "postgres://mcp_tunnel@ops-mcp-tunnel-server-postgresql:5432/mcp_tunnel?sslmode=disable"
        )
        assert set(by_kind(objs, "StatefulSet")[0]["spec"]["template"]["metadata"]["labels"].items()) >= {
            ("app.kubernetes.io/component", "postgresql")
        }
    else:
        assert env["MCP_TUNNEL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "mcp-tunnel-db", "key": "database-url"}
        assert "PGPASSWORD" not in env
        assert by_kind(objs, "StatefulSet") == []
    assert by_kind(objs, "Secret") == [] and by_kind(objs, "ConfigMap") == []


def test_server_init_output_mounted_read_only(rendered):
    """The data directory holds config.json, edge-ca.pem and master.key (from the
    ConfigMap and Secret made from `server init`'s output); the edge and API keys come
    from their TLS Secrets. edge-ca.key, the CA's private key, is in none of them."""
    _, objs = rendered
    spec = one(objs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    (server,) = spec["containers"]
    args = server["args"]
    flag = lambda name: args[args.index(name) + 1]  # noqa: E731
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert all(m["readOnly"] for m in mounts.values())
    volumes = {v["name"]: v for v in spec["volumes"]}
    data = volumes[mounts[flag("--data-dir")]["name"]]["projected"]
    files = {}
    for source in data["sources"]:
        ((kind, obj),) = source.items()
        files |= {item["path"]: (kind, obj["name"], item["key"]) for item in obj["items"]}
    assert files == {
        "config.json": ("configMap", "mcp-tunnel-server-config", "config.json"),
        "edge-ca.pem": ("configMap", "mcp-tunnel-server-config", "edge-ca.pem"),
        "master.key": ("secret", "mcp-tunnel-master-key", "master-key"),
    }
    for cert, key, secret in (("--edge-tls-cert", "--edge-tls-key", "mcp-tunnel-edge-tls"),
                              ("--tls-cert", "--tls-key", "mcp-tunnel-api-tls")):
        directory = flag(cert).rpartition("/")[0]
        assert flag(cert) == f"{directory}/tls.crt" and flag(key) == f"{directory}/tls.key"
        assert volumes[mounts[directory]["name"]]["secret"]["secretName"] == secret
    for v in spec["volumes"]:
        source = v.get("secret") or v.get("projected")
        assert source["defaultMode"] == 0o440, v["name"]
    assert "--plaintext" not in args


def test_replica_mode_and_probes_match_the_server(rendered):
    """Always replica mode (a rolling update runs two servers at once): the peer port,
    advertised at the pod's IP under the pod's name, is open to the other server pods
    only. The probes ask the edge's admin listener, which serves /healthz and /ready."""
    _, objs = rendered
    (server,) = one(objs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"]
    args = server["args"]
    flag = lambda name: args[args.index(name) + 1]  # noqa: E731
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    listens = {
        "api": "--listen", "connector": "--connector-listen", "client": "--client-listen",
        "peer": "--peer-listen", "admin": "--edge-admin-listen",
    }
    assert {name: flag(f) for name, f in listens.items()} == {name: f":{ports[name]}" for name in listens}
    assert flag("--peer-advertise") == f"$(POD_IP):{ports['peer']}"
    assert flag("--edge-id") == "$(POD_NAME)"
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in server["env"]}
    assert env["POD_IP"] == "status.podIP" and env["POD_NAME"] == "metadata.name"
    assert server["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
    policy = one(objs, "NetworkPolicy", f"{FULLNAME}-server")
    (peer_rule,) = [r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {ports["peer"]}]
    (peer,) = peer_rule["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"


def test_server_settings_reach_the_command_line():
    values = SERVER_SETS["bundled-postgres"]
    (server,) = one(render(SERVER_CHART, values, release="ops"), "Deployment")["spec"]["template"]["spec"]["containers"]
    args = server["args"]
    assert args[args.index("--max-tunnels") + 1] == "50"
    assert args[args.index("--failed-auth-per-minute") + 1] == "10"
    trusted = [args[i + 1] for i, a in enumerate(args) if a == "--trusted-proxy"]
    assert trusted == ["10.244.0.0/16", "fd00:10:244::/56"]
    balancers = [args[i + 1] for i, a in enumerate(args) if a == "--proxy-protocol-from"]
    assert balancers == ["10.0.0.0/16"]
    assert args[args.index("--loglevel") + 1] == "warn"
    assert "lifecycle" not in server
    (default,) = one(render(SERVER_CHART, SERVER_SETS["external-postgres"], release="ops"), "Deployment")["spec"]["template"]["spec"]["containers"]
    # 0 keeps the limit `server init` recorded: --max-tunnels 0 would allow none.
    assert "--max-tunnels" not in default["args"]
    assert "--trusted-proxy" not in default["args"]
    assert "--proxy-protocol-from" not in default["args"]
    assert default["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}


def test_hardened_workloads(rendered):
    _, objs = rendered
    for where, spec in pod_specs(objs):
        assert spec["automountServiceAccountToken"] is False, where
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert "livenessProbe" in c and "readinessProbe" in c, where
    server = one(objs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert server["securityContext"]["runAsUser"] == 65532


def test_network_policy_opens_only_the_edge_to_everyone(rendered):
    values, objs = rendered
    policy = one(objs, "NetworkPolicy", f"{FULLNAME}-server")
    rules = policy["spec"]["ingress"]
    public = [r for r in rules if "from" not in r]
    assert len(public) == 1
    assert sorted(p["port"] for p in public[0]["ports"]) == [7844, 9443]
    for rule in rules:
        if "from" in rule:
            assert rule["from"], "an empty from would admit every source"
            assert {p["port"] for p in rule["ports"]} <= {8443, 9090, 9444}
    if values.get("postgresql", {}).get("enabled"):
        pg = one(objs, "NetworkPolicy", f"{FULLNAME}-postgresql")
        (rule,) = pg["spec"]["ingress"]
        (peer,) = rule["from"]
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"


@pytest.mark.parametrize("name", SETS)
def test_images_by_digest_when_given(name):
    values = SERVER_SETS[name]
    objs = render(SERVER_CHART, values, release="ops", namespace="mcp-ops")
    images = [c["image"] for _, spec in pod_specs(objs) for c in containers(spec)]
    if values.get("image", {}).get("digest"):
        assert images[0] == f"registry.example.com/mcp-tunnel@{DIGEST}"
        assert all(i.endswith(f"@{DIGEST}") for i in images)
    else:
        assert images == ["registry.example.com/mcp-tunnel:0.1.0"]


def test_api_published_over_https_only():
    values = SERVER_SETS["bundled-postgres"]
    ingress = one(render(SERVER_CHART, values, release="ops", namespace="mcp-ops"), "Ingress")
    assert ingress["spec"]["tls"] == [{"hosts": ["api.tunnels.example.com"], "secretName": "api-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{FULLNAME}-api", "port": {"name": "api"}}
