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
    assert api["spec"]["type"] == "ClusterIP"
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    for svc in (edge, api):
        assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    ports = {p["name"] for p in server["ports"]}
    assert {p["targetPort"] for s in (edge, api) for p in s["spec"]["ports"]} <= ports


def test_database_url_never_in_a_manifest(rendered):
    values, objs = rendered
    server = one(objs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in server["env"]}
    if values.get("postgresql", {}).get("enabled"):
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mcp-tunnel-pg", "key": "password"}
        # The kubelet substitutes the password; the manifest holds a reference only.
        assert "$(PGPASSWORD)@ops-mcp-tunnel-server-postgresql:5432/" in env["DATABASE_URL"]["value"]
        assert set(by_kind(objs, "StatefulSet")[0]["spec"]["template"]["metadata"]["labels"].items()) >= {
            ("app.kubernetes.io/component", "postgresql")
        }
    else:
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "mcp-tunnel-db", "key": "database-url"}
        assert by_kind(objs, "StatefulSet") == []
    assert by_kind(objs, "Secret") == [] and by_kind(objs, "ConfigMap") == []


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
    assert sorted(p["port"] for p in public[0]["ports"]) == [7844, 8443]
    for rule in rules:
        if "from" in rule:
            assert rule["from"], "an empty from would admit every source"
            assert {p["port"] for p in rule["ports"]} <= {8080, 9090}
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
