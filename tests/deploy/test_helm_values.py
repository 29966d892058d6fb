"""Bad values are refused before anything reaches a cluster: by values.schema.json (as
`helm install`, `template` and `lint` apply it) or by the chart's own checks, with a
message naming the field."""

from __future__ import annotations

import re

import helm_python as helm
import pytest

from k8s import CUSTOMER_CHART, SERVER_CHART, chart, lint, merge, render
from values_sets import CUSTOMER_SETS, EXTERNAL, MANAGED_WIF, SERVER_SETS

SERVER = SERVER_SETS["external-postgres"]

# (base, override, words the error must contain)
SCHEMA_REFUSALS = {
    "unknown top-level key": (MANAGED_WIF, {"replicas": 2}, ["replicas"]),
    "typo inside gateway.config": (MANAGED_WIF, {"gateway": {"config": {"log_levle": "info"}}}, ["log_levle"]),
    "routes as a list": (MANAGED_WIF, {"gateway": {"config": {"routes": ["docs"]}}}, ["routes"]),
    "upstream with a path": (MANAGED_WIF, {"gateway": {"config": {"routes": {"docs": "http://10.0.0.5:8000/mcp"}}}}, ["routes"]),
    "upstream without a port": (MANAGED_WIF, {"gateway": {"config": {"routes": {"docs": "http://10.0.0.5"}}}}, ["routes"]),
    "upstream scheme": (MANAGED_WIF, {"gateway": {"config": {"routes": {"docs": "ftp://10.0.0.5:21"}}}}, ["routes"]),
    "bad log level": (MANAGED_WIF, {"gateway": {"config": {"log_level": "verbose"}}}, ["log_level"]),
    "bad duration": (MANAGED_WIF, {"gateway": {"config": {"shutdown_timeout": "30"}}}, ["shutdown_timeout"]),
    "allowed_ips with validation disabled": (
        MANAGED_WIF,
        {"gateway": {"config": {"upstream": {"allowed_ips": ["10.0.0.0/8"], "disable_ip_validation": True}}}},
        ["upstream"],
    ),
    "digest that is not sha256": (MANAGED_WIF, {"image": {"digest": "sha256:abc"}}, ["digest"]),
    "digest given as a tag": (MANAGED_WIF, {"image": {"repository": "r.example.com/m@sha256:" + "a" * 64}}, ["repository"]),
    "plain http API": (MANAGED_WIF, {"api": {"url": "http://api.tunnels.example.com"}}, ["url"]),
    "bad tunnel id": (MANAGED_WIF, {"tunnel": {"id": "tunnel-1"}}, ["id"]),
    "bad organization id": (MANAGED_WIF, {"api": {"wif": {"organizationId": "acme"}}}, ["organizationId"]),
    "bad cron schedule": (MANAGED_WIF, {"serverCert": {"cronSchedule": "daily"}}, ["cronSchedule"]),
    "zero replicas": (MANAGED_WIF, {"replicaCount": 0}, ["replicaCount"]),
    "too many HA connections": (MANAGED_WIF, {"connector": {"haConnections": 64}}, ["haConnections"]),
    "egress peer without ports": (
        EXTERNAL,
        {"networkPolicy": {"egress": {"mcpServers": [{"cidr": "10.0.0.5/32"}]}}},
        ["mcpServers"],
    ),
    "setup.enabled as a string": (MANAGED_WIF, {"setup": {"enabled": "yes"}}, ["enabled"]),
}

# Rules across fields (if/then in the schema), so `helm lint` reports them too.
MODE_REFUSALS = {
    "managed mode without an API URL": (
        {k: v for k, v in MANAGED_WIF.items() if k != "api"},
        {"api": {"apiKeySecret": {"name": "k"}}},
        ["/api/url"],
    ),
    "managed mode without credentials": (
        merge({k: v for k, v in MANAGED_WIF.items() if k != "api"}, {"api": {"url": "https://api.example.com"}}),
        {},
        ["/api/wif/federationRuleId", "/api/apiKeySecret/name"],
    ),
    "both WIF and an API key": (MANAGED_WIF, {"api": {"apiKeySecret": {"name": "k"}}}, ["/api/apiKeySecret/name"]),
    "external mode without Secrets": (
        merge(EXTERNAL, {"external": {"serverCertSecretName": ""}}),
        {},
        ["/external/serverCertSecretName"],
    ),
    "external mode without the tunnel domain": (
        EXTERNAL,
        {"gateway": {"config": {"tunnel_domain": ""}}},
        ["/gateway/config/tunnel_domain"],
    ),
    "listen_addr set by hand": (
        MANAGED_WIF,
        {"gateway": {"config": {"listen_addr": ":9999"}}},
        ["/gateway/config/listen_addr", "set by the chart"],
    ),
    "TLS paths set by hand": (
        MANAGED_WIF,
        {"gateway": {"config": {"tls": {"cert_file": "/x.crt"}}}},
        ["/gateway/config/tls/cert_file", "set by the chart"],
    ),
    "egress without the edge": (MANAGED_WIF, {"networkPolicy": {"egress": {"enabled": True}}}, ["/networkPolicy/egress/edge"]),
}

SERVER_REFUSALS = {
    "unknown key": (SERVER, {"server": {"domain": "x.example.com"}}, ["domain"]),
    # Set by `server init` into config.json; the chart has no say in it.
    "base domain in the values": (SERVER, {"server": {"baseDomain": "tunnels.example.com"}}, ["baseDomain"]),
    "client certificate the server cannot use": (SERVER, {"tls": {"clientSecretName": "wildcard"}}, ["clientSecretName"]),
    "negative tunnel limit": (SERVER, {"server": {"maxTunnels": -1}}, ["maxTunnels"]),
    # Trusting every address would let any client choose its own source address.
    "every address a trusted proxy": (SERVER, {"server": {"trustedProxies": ["0.0.0.0/0"]}}, ["trustedProxies"]),
    "trusted proxy that is a name": (SERVER, {"server": {"trustedProxies": ["ingress-nginx"]}}, ["trustedProxies"]),
    "every address a PROXY protocol balancer": (SERVER, {"server": {"proxyProtocolFrom": ["::/0"]}}, ["proxyProtocolFrom"]),
    "bad secret name": (SERVER, {"tls": {"apiSecretName": "API_TLS"}}, ["apiSecretName"]),
    "bad digest": (SERVER, {"image": {"digest": "sha256:XYZ"}}, ["digest"]),
    "bad service type": (SERVER, {"service": {"edge": {"type": "Ingress"}}}, ["type"]),
}

SERVER_MODE_REFUSALS = {
    "no database": ({k: v for k, v in SERVER.items() if k != "database"}, {}, ["/database/existingSecret"]),
    "both databases": (SERVER, {"postgresql": {"enabled": True, "auth": {"existingSecret": "pg"}}}, ["/database/existingSecret"]),
    "bundled postgres without a password Secret": (
        {k: v for k, v in SERVER.items() if k != "database"},
        {"postgresql": {"enabled": True}},
        ["/postgresql/auth/existingSecret"],
    ),
    "no init output": (SERVER, {"config": {"configMapName": ""}}, ["/config/configMapName"]),
    "no master key": (SERVER, {"masterKey": {"secretName": ""}}, ["/masterKey/secretName"]),
    "no API certificate": (SERVER, {"tls": {"apiSecretName": ""}}, ["/tls/apiSecretName"]),
    "ingress without TLS": (SERVER, {"ingress": {"enabled": True, "host": "api.example.com"}}, ["/ingress/tlsSecretName"]),
}


def _refused(path, base, override, words):
    values = merge(base, override)
    with pytest.raises(helm.HelmValuesError) as caught:
        render(path, values)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    # helm lint reports the same refusal as an error.
    assert any(f["severity"] == 3 for f in lint(path, values))


@pytest.mark.parametrize("case", [*SCHEMA_REFUSALS, *MODE_REFUSALS])
def test_customer_chart_refuses(case):
    base, override, words = {**SCHEMA_REFUSALS, **MODE_REFUSALS}[case]
    with pytest.raises(helm.HelmValuesError):
        chart(CUSTOMER_CHART).validate_schema(merge(base, override))
    _refused(CUSTOMER_CHART, base, override, words)


@pytest.mark.parametrize("case", [*SERVER_REFUSALS, *SERVER_MODE_REFUSALS])
def test_server_chart_refuses(case):
    base, override, words = {**SERVER_REFUSALS, **SERVER_MODE_REFUSALS}[case]
    _refused(SERVER_CHART, base, override, words)


@pytest.mark.parametrize("name", list(CUSTOMER_SETS))
def test_good_customer_values_pass_the_schema(name):
    chart(CUSTOMER_CHART).validate_schema(CUSTOMER_SETS[name])


@pytest.mark.parametrize("name", list(SERVER_SETS))
def test_good_server_values_pass_the_schema(name):
    chart(SERVER_CHART).validate_schema(SERVER_SETS[name])


@pytest.mark.parametrize("path", [CUSTOMER_CHART, SERVER_CHART], ids=["mcp-tunnel", "mcp-tunnel-server"])
def test_defaults_need_only_the_site_specific_values_and_are_all_described(path):
    """values.yaml and values.schema.json agree: the defaults fail only on what no
    default can know (where the API, the edge, the Secrets are), and every default key
    exists in the schema (additionalProperties is false throughout)."""
    c = chart(path)
    with pytest.raises(helm.HelmValuesError) as caught:
        c.validate_schema({})
    failing = set(re.findall(r"at '(/[^']+)'", str(caught.value)))
    site_specific = {
        CUSTOMER_CHART: {"/api/url", "/api/wif", "/api/wif/federationRuleId", "/api/wif/organizationId", "/api/apiKeySecret/name"},
        SERVER_CHART: {"/config/configMapName", "/masterKey/secretName", "/tls", "/tls/edgeSecretName",
                       "/tls/apiSecretName", "/database/existingSecret"},
    }[path]
    assert failing == site_specific

    def walk(values, schema, where):
        props = schema.get("properties", {})
        for key, value in values.items():
            assert key in props, f"{where}{key} has no schema"
            if isinstance(value, dict) and props[key].get("properties"):
                walk(value, props[key], f"{where}{key}.")

    walk(c.values, c.schema, "")
