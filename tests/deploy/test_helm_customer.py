"""The mcp-tunnel chart (customer stack, SPEC §11) rendered by real Helm in every mode:
lint, schema-valid manifests, and the hardening properties on what comes out."""

from __future__ import annotations

import re

import promql_parser
import pytest

from k8s import (
    CUSTOMER_CHART,
    DIGEST,
    by_kind,
    config_of,
    containers,
    hook,
    lint,
    merge,
    one,
    pod_specs,
    render,
    validate,
)
from values_sets import CUSTOMER_SETS, EXTERNAL, MANAGED_WIF

SETS = list(CUSTOMER_SETS)


@pytest.fixture(scope="module", params=SETS)
def rendered(request):
    values = CUSTOMER_SETS[request.param]
    return request.param, values, render(CUSTOMER_CHART, values)


@pytest.mark.parametrize("name", SETS)
def test_lints_clean(name):
    assert lint(CUSTOMER_CHART, CUSTOMER_SETS[name]) == []


def test_every_manifest_matches_its_schema(rendered):
    _, _, objs = rendered
    assert objs
    for obj in objs:
        validate(obj)


def test_one_deployment_with_the_proxy_and_the_connector(rendered):
    _, _, objs = rendered
    deploy = one(objs, "Deployment")
    names = [c["name"] for c in deploy["spec"]["template"]["spec"]["containers"]]
    assert names == ["mcp-proxy", "connector"]


def test_restricted_pod_security_everywhere(rendered):
    _, _, objs = rendered
    specs = list(pod_specs(objs))
    assert specs
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] == 65532 and pod["runAsGroup"] == 65532, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), where
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["runAsNonRoot"] is True, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (where, c["name"])
            assert not sc.get("privileged"), (where, c["name"])


def test_only_the_setup_and_renewal_pods_get_a_kubernetes_token(rendered):
    _, _, objs = rendered
    for where, spec in pod_specs(objs):
        wants_api = where.endswith(("-setup", "-cert-renew"))
        assert spec["automountServiceAccountToken"] is wants_api, where
    for sa in by_kind(objs, "ServiceAccount"):
        if not hook(sa):
            assert sa["automountServiceAccountToken"] is False, sa["metadata"]["name"]


def test_probes_on_the_health_endpoints(rendered):
    _, values, objs = rendered
    spec = one(objs, "Deployment")["spec"]["template"]["spec"]
    proxy, connector = spec["containers"]
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert connector["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    # An edge outage must not restart the connector: liveness is not readiness.
    assert connector["livenessProbe"]["httpGet"]["path"] != "/ready"
    ports = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c["ports"]}
    assert ports == {"admin": 9091, "metrics": 20241}
    # The kubelet can reach them only if they listen beyond loopback.
    assert config_of(objs)["admin_addr"] == "0.0.0.0:9091"
    assert "0.0.0.0:20241" in connector["args"]


def test_ingress_denied_by_default(rendered):
    _, values, objs = rendered
    policies = [p for p in by_kind(objs, "NetworkPolicy") if "Ingress" in p["spec"]["policyTypes"]]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    deploy_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for key, value in spec["podSelector"]["matchLabels"].items():
        assert deploy_labels[key] == value
    allowed = values.get("networkPolicy", {}).get("ingress", {}).get("metricsFrom", [])
    if not allowed:
        assert spec.get("ingress", []) == []
    else:
        # Only the named scrapers, only on the metrics ports.
        (rule,) = spec["ingress"]
        assert rule["from"] == allowed
        assert sorted(p["port"] for p in rule["ports"]) == [9091, 20241]


def test_egress_limited_to_dns_edge_and_mcp_servers_when_enabled(rendered):
    _, values, objs = rendered
    egress = [p for p in by_kind(objs, "NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]]
    np = values.get("networkPolicy", {}).get("egress", {})
    if not np.get("enabled"):
        assert egress == []
        return
    (policy,) = egress
    rules = policy["spec"]["egress"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "tunnel"
    dns, edge, *servers = rules
    assert {p["port"] for p in dns["ports"]} == {53}
    assert [t["ipBlock"]["cidr"] for t in edge["to"]] == np["edge"]["cidrs"]
    assert {(p["port"], p["protocol"]) for p in edge["ports"]} == {(7844, "TCP"), (7844, "UDP")}
    for rule in servers:
        assert rule["to"], "an egress rule without peers would allow everywhere"
        for peer in rule["to"]:
            assert peer.get("ipBlock", {}).get("cidr") != "0.0.0.0/0"


def test_egress_defaults_to_allowed_ips_on_the_route_ports():
    values = merge(
        EXTERNAL,
        {
            "gateway": {"config": {"upstream": {"allowed_ips": ["10.0.0.5", "fd00::7", "192.168.1.0/24"]}}},
            "networkPolicy": {"egress": {"enabled": True, "edge": {"cidrs": ["203.0.113.9/32"]}}},
        },
    )
    policy = one(render(CUSTOMER_CHART, values), "NetworkPolicy", "mcp-tunnel-egress")
    servers = policy["spec"]["egress"][2]
    assert [t["ipBlock"]["cidr"] for t in servers["to"]] == ["10.0.0.5/32", "fd00::7/128", "192.168.1.0/24"]
    assert sorted(p["port"] for p in servers["ports"]) == [3000, 8000]


MANAGED_SETS = [n for n in SETS if CUSTOMER_SETS[n].get("setup", {}).get("enabled", True)]


@pytest.mark.parametrize("name", MANAGED_SETS)
def test_managed_mode_setup_hook_and_its_rbac(name):
    values = CUSTOMER_SETS[name]
    objs = render(CUSTOMER_CHART, values)
    force = values.get("setup", {}).get("force", False)
    phases = {"pre-install", "pre-upgrade"} if force else {"pre-install"}
    job = one(objs, "Job", "mcp-tunnel-setup")
    assert hook(job) == phases
    assert "hook-succeeded" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "mcp-tunnel-setup"
    sa = one(objs, "ServiceAccount", "mcp-tunnel-setup")
    role = one(objs, "Role", "mcp-tunnel-setup")
    binding = one(objs, "RoleBinding", "mcp-tunnel-setup")
    for obj in (sa, role, binding):
        assert hook(obj) == phases
        # Created before the Job, in the same phase.
        assert int(obj["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mcp-tunnel-setup", "namespace": "mcp-tunnel"}]
    args = spec["containers"][0]["args"]
    assert args[:2] == ["setup", "init"]
    assert args[args.index("--output") + 1] == "k8s-secret:mcp-tunnel"
    assert args[args.index("--token-version") + 1] == str(values.get("tunnel", {}).get("tokenVersion", "1"))
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["API_URL"]["value"] == values["api"]["url"]
    if values.get("tunnel", {}).get("id"):
        assert env["TUNNEL_ID"]["value"] == values["tunnel"]["id"]
    else:
        assert "TUNNEL_ID" not in env


def test_setup_rbac_reaches_exactly_one_secret_named_after_the_release(rendered):
    _, values, objs = rendered
    assert by_kind(objs, "ClusterRole") == [] and by_kind(objs, "ClusterRoleBinding") == []
    roles = by_kind(objs, "Role")
    if values.get("setup", {}).get("enabled", True):
        assert {r["metadata"]["name"] for r in roles} == {"mcp-tunnel-setup", "mcp-tunnel-cert-renew"}
    else:
        assert roles == []
    for role in roles:
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""]
            assert rule["resources"] == ["secrets"]
            assert rule["resourceNames"] == ["mcp-tunnel"]
            # No create/list/watch/delete: create cannot be limited to a name.
            assert set(rule["verbs"]) <= {"get", "update", "patch"}


def test_managed_secret_is_created_empty_and_survives_uninstall(rendered):
    _, values, objs = rendered
    secrets = by_kind(objs, "Secret")
    if not values.get("setup", {}).get("enabled", True):
        assert secrets == []
        return
    (secret,) = secrets
    assert secret["metadata"]["name"] == "mcp-tunnel"
    assert "data" not in secret and "stringData" not in secret
    assert "pre-install" in hook(secret)
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < -10


def test_daily_cert_renewal_in_managed_mode(rendered):
    _, values, objs = rendered
    cronjobs = by_kind(objs, "CronJob")
    if not values.get("setup", {}).get("enabled", True):
        assert cronjobs == []
        return
    (cron,) = cronjobs
    cert = values.get("serverCert", {})
    assert cron["metadata"]["name"] == "mcp-tunnel-cert-renew"
    assert cron["spec"]["schedule"] == cert.get("cronSchedule", "0 0 * * *")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "mcp-tunnel-cert-renew"
    args = spec["containers"][0]["args"]
    assert args[:2] == ["setup", "renew-cert"]
    assert args[args.index("--renew-before") + 1] == cert.get("renewBefore", "720h")
    assert args[args.index("--cert-duration") + 1] == cert.get("duration", "2160h")
    # Renewal is local: no API URL, no identity.
    assert [e["name"] for e in spec["containers"][0]["env"]] == ["POD_NAMESPACE"]


def test_secrets_reach_the_pod_only_as_files_or_references(rendered):
    _, _, objs = rendered
    for where, spec in pod_specs(objs):
        for c in containers(spec):
            for e in c.get("env", []):
                if re.search(r"TOKEN|PASSWORD|SECRET|KEY", e["name"]) and not e["name"].endswith("_FILE"):
                    assert "value" not in e, (where, e["name"])
    text = "\n".join(str(cm["data"]) for cm in by_kind(objs, "ConfigMap"))
    for marker in ("PRIVATE KEY", "BEGIN CERTIFICATE", "eyJ", "tunnel-token", "api-token"):
        assert marker not in text


def test_each_container_mounts_only_the_keys_it_needs(rendered):
    _, _, objs = rendered
    spec = one(objs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    proxy, connector = spec["containers"]

    def keys(container):
        out = set()
        for m in container["volumeMounts"]:
            source = volumes[m["name"]].get("secret")
            if source:
                out |= {i["key"] for i in source["items"]}
            assert "subPath" not in m, "subPath mounts are never refreshed: renewals would be missed"
        return out

    assert keys(proxy) == {"tls.crt", "tls.key"}
    assert keys(connector) == {"tunnel-token"}
    cfg = config_of(objs)
    mount = next(m for m in proxy["volumeMounts"] if m["name"] == "server-cert")["mountPath"]
    assert cfg["tls"] == {**cfg["tls"], "cert_file": f"{mount}/tls.crt", "key_file": f"{mount}/tls.key"}
    token_mount = next(m for m in connector["volumeMounts"] if m["name"] == "tunnel-token")["mountPath"]
    assert connector["args"][connector["args"].index("--token-file") + 1] == f"{token_mount}/tunnel-token"


def test_chart_owned_config_fields(rendered):
    _, values, objs = rendered
    cfg = config_of(objs)
    assert cfg["listen_addr"] == "127.0.0.1:8080"
    connector = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][1]
    assert connector["args"][connector["args"].index("--url") + 1] == "http://127.0.0.1:8080"
    user_cfg = values["gateway"]["config"]
    for key, value in user_cfg.items():
        if key == "tunnel_domain" and not value:
            assert key not in cfg
        elif key != "tls":
            assert cfg[key] == value, key


def test_tunnel_domain_from_the_secret_in_managed_mode(rendered):
    _, values, objs = rendered
    proxy = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    managed = values.get("setup", {}).get("enabled", True)
    if managed:
        assert proxy["args"][-2:] == ["--tunnel-domain", "$(TUNNEL_DOMAIN)"]
        (env,) = proxy["env"]
        assert env["valueFrom"]["secretKeyRef"] == {"name": "mcp-tunnel", "key": "tunnel-domain"}
    else:
        assert "--tunnel-domain" not in proxy["args"]
        assert config_of(objs)["tunnel_domain"] == values["gateway"]["config"]["tunnel_domain"]


def test_external_mode_uses_the_named_secrets_and_makes_no_api_calls():
    objs = render(CUSTOMER_CHART, EXTERNAL)
    assert by_kind(objs, "Job") == [] and by_kind(objs, "CronJob") == []
    volumes = {v["name"]: v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tunnel-token"]["secret"]["secretName"] == "mcp-tunnel-token"
    assert [i["key"] for i in volumes["tunnel-token"]["secret"]["items"]] == ["tunnel-token"]
    assert volumes["server-cert"]["secret"]["secretName"] == "mcp-tunnel-cert"
    assert [i["key"] for i in volumes["server-cert"]["secret"]["items"]] == ["tls.crt", "tls.key"]


@pytest.mark.parametrize("name", SETS)
def test_images_by_digest_when_given(name):
    values = CUSTOMER_SETS[name]
    objs = render(CUSTOMER_CHART, values)
    digest = values.get("image", {}).get("digest")
    images = {c["image"] for _, spec in pod_specs(objs) for c in containers(spec)}
    assert images == {f"registry.example.com/mcp-tunnel@{digest}" if digest else "registry.example.com/mcp-tunnel:0.1.0"}
    pinned = render(CUSTOMER_CHART, merge(values, {"image": {"digest": DIGEST, "tag": "9.9.9"}}))
    images = {c["image"] for _, spec in pod_specs(pinned) for c in containers(spec)}
    assert images == {f"registry.example.com/mcp-tunnel@{DIGEST}"}


def test_termination_grace_covers_shutdown_timeout_and_prestop():
    def grace(values):
        spec = one(render(CUSTOMER_CHART, values), "Deployment")["spec"]["template"]["spec"]
        return spec["terminationGracePeriodSeconds"]

    assert grace(MANAGED_WIF) == 5 + 30 + 5
    longer = merge(MANAGED_WIF, {"gateway": {"config": {"shutdown_timeout": "1m30s"}, "preStopSleepSeconds": 0}})
    assert grace(longer) == 90 + 5
    connector_longest = merge(MANAGED_WIF, {"connector": {"gracePeriod": "2m"}})
    assert grace(connector_longest) == 5 + 120 + 5


def test_config_change_rolls_the_pods_and_nothing_else_does():
    def checksum(values):
        deploy = one(render(CUSTOMER_CHART, values), "Deployment")
        return deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum(MANAGED_WIF)
    assert checksum(merge(MANAGED_WIF, {"gateway": {"config": {"log_level": "debug"}}})) != base
    assert checksum(merge(MANAGED_WIF, {"tunnel": {"tokenVersion": "2"}})) == base


def test_names_follow_the_release():
    objs = render(CUSTOMER_CHART, MANAGED_WIF, release="acme", namespace="tunnels")
    assert one(objs, "Deployment")["metadata"]["name"] == "acme-mcp-tunnel"
    assert one(objs, "Job")["spec"]["template"]["spec"]["serviceAccountName"] == "acme-mcp-tunnel-setup"
    assert one(objs, "CronJob")["metadata"]["name"] == "acme-mcp-tunnel-cert-renew"
    # The Secret is named after the release, and RBAC follows it.
    assert one(objs, "Secret")["metadata"]["name"] == "acme"
    assert {n for r in by_kind(objs, "Role") for rule in r["rules"] for n in rule["resourceNames"]} == {"acme"}
    assert all(o["metadata"]["namespace"] == "tunnels" for o in objs)


def test_wif_token_is_projected_for_the_rule_audience():
    job = one(render(CUSTOMER_CHART, MANAGED_WIF), "Job")
    spec = job["spec"]["template"]["spec"]
    (vol,) = spec["volumes"]
    source = vol["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "api.tunnels.example.com"
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    mount = spec["containers"][0]["volumeMounts"][0]["mountPath"]
    assert env["ANTHROPIC_IDENTITY_TOKEN_FILE"] == f"{mount}/{source['path']}"
    assert env["ANTHROPIC_FEDERATION_RULE_ID"] == "fdrl_01abc"
    assert "API_TOKEN" not in env


def test_prometheus_rule_alerts_on_what_the_monitor_watches():
    values = CUSTOMER_SETS["managed-wif-everything"]
    rule = one(render(CUSTOMER_CHART, values), "PrometheusRule")
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    by_metric = {}
    for r in rules:
        promql_parser.parse(r["expr"])  # raises on invalid PromQL
        assert 'namespace="mcp-tunnel"' in r["expr"], r["alert"]
        assert r["labels"]["severity"] in {"info", "warning", "critical"}
        for metric in re.findall(r"(mcpt?_[a-z_]+)\{", r["expr"]):
            by_metric.setdefault(metric, []).append(r["alert"])
    for metric in (
        "mcp_proxy_ip_validation_rejections_total",
        "mcp_proxy_tls_handshake_failures_total",
        "mcpt_connector_connect_failures_total",
        "mcp_proxy_upstream_errors_total",
        "mcp_proxy_requests_total",
        "mcp_proxy_certificate_not_after_seconds",
        "mcpt_connector_ha_connections",
    ):
        assert metric in by_metric, metric
    token = next(r for r in rules if r["alert"] == "MCPTunnelTokenRejected")
    assert 'reason="token_rejected"' in token["expr"]


def test_metric_names_in_the_rule_exist_in_the_source():
    """The alerts watch metrics the proxy and connector really export."""
    from k8s import ROOT

    exported = set()
    for path in ("crates/proxy/src/metrics.rs", "crates/connector/src/metrics.rs"):
        exported |= set(re.findall(r'"(mcpt?_[a-z_]+)"', (ROOT / path).read_text()))
    rule = one(render(CUSTOMER_CHART, CUSTOMER_SETS["managed-wif-everything"]), "PrometheusRule")
    used = {m for g in rule["spec"]["groups"] for r in g["rules"] for m in re.findall(r"(mcpt?_[a-z_]+)\{", r["expr"])}
    assert used and used <= exported, used - exported


def test_upgrade_without_force_does_not_rerun_setup():
    objs = render(CUSTOMER_CHART, MANAGED_WIF, upgrade=True)
    for obj in objs:
        assert "pre-upgrade" not in hook(obj)
    forced = render(CUSTOMER_CHART, merge(MANAGED_WIF, {"setup": {"force": True}}), upgrade=True)
    assert "pre-upgrade" in hook(one(forced, "Job"))


# The rules of `mcp-tunnel monitor` (crates/ops) -> the chart's alert for each. Log lines
# (warnings, errors) have no metric: the monitor alone follows them.
MONITOR_TO_ALERT = {
    "burst.ip_validation_failed": "MCPTunnelIPValidationFailures",
    "burst.tls_handshake_failed": "MCPTunnelTLSHandshakeFailures",
    "burst.token_rejected": "MCPTunnelTokenRejected",
    "traffic.request_spike": "MCPTunnelRequestSpike",
    "traffic.new_route": "MCPTunnelNewRouteTraffic",
}
LOG_ONLY_RULES = {"log.error", "log.warning"}


def test_every_monitor_rule_with_a_metric_has_an_alert():
    from k8s import ROOT

    source = (ROOT / "crates" / "ops" / "src" / "monitor" / "mod.rs").read_text()
    rules = set(re.findall(r'"((?:burst|log|traffic)\.[a-z_]+)"', source))
    # A rule added to the monitor fails here until it is mapped (or declared log-only).
    assert rules == set(MONITOR_TO_ALERT) | LOG_ONLY_RULES
    rule = one(render(CUSTOMER_CHART, CUSTOMER_SETS["managed-wif-everything"]), "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(MONITOR_TO_ALERT.values()) <= alerts
