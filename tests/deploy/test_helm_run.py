"""The customer chart's managed mode run for real, as the rendered manifests start each
container (stackrun.py; serverrun.py's stand-in kubelet), against a real operator side
and a stand-in Kubernetes API (k8sapi.py) that enforces the rendered Roles:

install   the empty Secret hook, then the setup Job fills it through the Kubernetes
          API with its own ServiceAccount; Helm deletes the Job's RBAC;
pods      the Deployment's proxy and connector from that Secret pass their probes and
          serve an MCP call from outside through the edge;
rotate    `helm upgrade --set setup.force=true` with a new tunnel.tokenVersion re-runs
          the Job, which rotates the token; the connector re-reads the refreshed file;
renew     the CronJob, as its own ServiceAccount, re-signs the certificate in the
          Secret without an API call; the proxy reloads the refreshed pair.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import yaml

import proxyrun
import serverrun
import stackrun
from k8s import CUSTOMER_CHART, by_kind, hook, merge, one, render
from k8sapi import FakeKube
from serverrun import Ports
from test_compose import go_seconds
from values_sets import CUSTOMER_SETS

NS = "mcp-tunnel"
SECRET = "mcp-tunnel"


def cluster_view(kube: FakeKube) -> serverrun.Cluster:
    """The namespace's Secrets (as the API holds them) and the release's ConfigMaps."""
    view: serverrun.Cluster = {("Secret", name): data for (ns, name), data in kube.secrets.items() if ns == NS}
    for cm in by_kind(kube.objects, "ConfigMap"):
        view[("ConfigMap", cm["metadata"]["name"])] = {k: v.encode() for k, v in cm["data"].items()}
    return view


def run_pod(kube: FakeKube, obj: dict, plane: stackrun.ControlPlane, root: Path, args: list[str] | None = None):
    """A Job's or CronJob's single container, to completion, as the kubelet runs it."""
    spec = (obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"])["template"]["spec"]
    (container,) = spec["containers"]
    assert not container.get("volumeMounts"), "no stand-in for this Job's volumes"
    env = serverrun.container_env(container, cluster_view(kube), {"metadata.namespace": NS})
    env |= kube.pod_env()
    if spec["automountServiceAccountToken"]:
        env["MCP_TUNNEL_K8S_SERVICE_ACCOUNT_DIR"] = str(kube.service_account_dir(NS, spec["serviceAccountName"]))
    # The API's certificate is publicly trusted in a real deployment; here the
    # operator's CA stands in for the system roots.
    env["API_CA_FILE"] = str(plane.edge_ca)
    argv = [serverrun.expand(a, env) for a in (args or container["args"])]
    out = stackrun.run(argv, env, root)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


class Pod:
    """The Deployment's pod: each container's mounts materialized from the cluster, its
    environment resolved, its loopback addresses made local (one Ports for the pod's
    shared network namespace)."""

    def __init__(self, objs: list[dict], kube: FakeKube, root: Path):
        self.spec = one(objs, "Deployment")["spec"]["template"]["spec"]
        self.kube, self.root, self.ports = kube, root, Ports()
        self.containers = {c["name"]: c for c in self.spec["containers"]}
        self.mounts = {name: self._materialize(c, root / name) for name, c in self.containers.items()}

    def _materialize(self, container: dict, root: Path) -> dict[str, Path]:
        return serverrun.materialize(self.spec, container, cluster_view(self.kube), root)

    def refresh(self) -> None:
        """The kubelet's update of Secret volumes: every file replaced atomically."""
        for name, container in self.containers.items():
            fresh = self._materialize(container, self.root / f"{name}.next")
            for mount, directory in fresh.items():
                for f in directory.iterdir():
                    os.replace(f, self.mounts[name][mount] / f.name)

    def argv_env(self, name: str) -> tuple[list[str], dict[str, str]]:
        c = self.containers[name]
        env = serverrun.container_env(c, cluster_view(self.kube), {"metadata.namespace": NS})
        args = [serverrun.expand(a, env) for a in c["args"]]
        return stackrun.local_argv(args, self.mounts[name], self.ports), env

    def probe(self, name: str, kind: str) -> str:
        return serverrun.probe_url(self.containers[name][kind], self.containers[name], self.ports)

    def local_config(self) -> dict:
        """The mounted config.yaml rewritten for this machine: addresses and TLS paths."""
        (path,) = [d / "config.yaml" for d in self.mounts["mcp-proxy"].values() if (d / "config.yaml").exists()]
        config = yaml.safe_load(path.read_text())
        for key in ("listen_addr", "admin_addr"):
            config[key] = stackrun.local_token(config[key], {}, self.ports)
        config["tls"] = {k: stackrun.local_token(v, self.mounts["mcp-proxy"], self.ports) for k, v in config["tls"].items()}
        path.write_text(yaml.safe_dump(config))
        return config


def test_managed_mode_install_rotate_renew(tmp_path):
    # The API-key identity: WIF needs an OIDC issuer the operator side trusts.
    name = "managed-api-key"
    with ExitStack() as stack:
        plane = stack.enter_context(stackrun.control_plane(tmp_path / "operator"))
        mcp_port = stack.enter_context(proxyrun.mcp_server(tmp_path))
        values = merge(CUSTOMER_SETS[name], {
            "api": {"url": plane.api},
            "gateway": {"config": {"routes": {"docs": f"http://127.0.0.1:{mcp_port}"},
                                   "upstream": {"allowed_ips": ["127.0.0.1/32"]}}},
        })
        objs = render(CUSTOMER_CHART, values, namespace=NS)
        kube = FakeKube(tmp_path, objs)
        stack.callback(kube.close)
        # `kubectl create secret generic tunnels-api-key --from-literal=api-token=...`
        kube.create(NS, values["api"]["apiKeySecret"]["name"], {"api-token": plane.admin_key.encode()})

        # helm install: pre-install hooks by weight, the Secret first and empty.
        (secret,) = by_kind(objs, "Secret")
        assert secret["metadata"]["name"] == SECRET and "pre-install" in hook(secret)
        kube.create(NS, SECRET)
        job = one(objs, "Job", "mcp-tunnel-setup")
        run_pod(kube, job, plane, tmp_path)
        stored = kube.secrets[(NS, SECRET)]
        assert {"tunnel-id", "tunnel-domain", "tunnel-token", "ca.crt", "ca.key", "tls.crt", "tls.key"} <= set(stored)
        # Only ever the one Secret, only as the setup ServiceAccount.
        assert {(a, p) for a, _, p in kube.requests} == {("mcp-tunnel-setup", f"/api/v1/namespaces/{NS}/secrets/{SECRET}")}
        # hook-succeeded: Helm deletes the Job's ServiceAccount and RBAC.
        kube.delete_objects({(o["kind"], o["metadata"]["name"]) for o in objs
                             if "hook-succeeded" in o["metadata"].get("annotations", {}).get("helm.sh/hook-delete-policy", "")})

        pod = Pod(objs, kube, tmp_path / "pod")
        config = pod.local_config()
        proxy_argv, proxy_env = pod.argv_env("mcp-proxy")
        connector_argv, connector_env = pod.argv_env("connector")
        # The proxy's --tunnel-domain comes from the Secret setup filled.
        assert proxy_argv[proxy_argv.index("--tunnel-domain") + 1] == stored["tunnel-domain"].decode()
        assert connector_argv[connector_argv.index("--url") + 1] == f"http://{config['listen_addr']}"
        proxy = stack.enter_context(stackrun.process("mcp-proxy", proxy_argv, proxy_env, tmp_path))
        connector = stack.enter_context(stackrun.process("connector", connector_argv, connector_env, tmp_path))
        for container, running in (("mcp-proxy", proxy), ("connector", connector)):
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                stackrun.wait_healthy(pod.probe(container, kind), running)
        domain = stored["tunnel-domain"].decode()
        url = f"https://docs.{domain}/mcp"
        ca = tmp_path / "tunnel-ca.crt"
        ca.write_bytes(stored["ca.crt"])
        key = plane.client_key()
        assert "echo" in stackrun.call_through_edge(plane, url, ca, key, "--list")

        # helm upgrade -f values.yaml (tokenVersion 2) --set setup.force=true
        token = stored["tunnel-token"]
        upgraded = render(CUSTOMER_CHART, merge(values, {"tunnel": {"tokenVersion": "2"}, "setup": {"force": True}}),
                          namespace=NS, upgrade=True)
        kube.objects += [o for o in upgraded if "pre-upgrade" in hook(o) and o["kind"] in ("Role", "RoleBinding")]
        run_pod(kube, one(upgraded, "Job", "mcp-tunnel-setup"), plane, tmp_path)
        assert kube.secrets[(NS, SECRET)]["tunnel-token"] != token
        assert kube.secrets[(NS, SECRET)]["tunnel-id"] == stored["tunnel-id"], "a second tunnel"
        pod.refresh()
        connector.wait_for_log("tunnel token file changed")
        assert "5" in stackrun.call_through_edge(plane, url, ca, key, "--tool", "add", "--args", '{"a": 2, "b": 3}')
        kube.delete_objects({(o["kind"], o["metadata"]["name"]) for o in upgraded if "pre-upgrade" in hook(o)})

        # The CronJob, as its own ServiceAccount: a no-op while the certificate is fresh.
        cron = one(objs, "CronJob", "mcp-tunnel-cert-renew")
        before = len(kube.requests)
        cert = kube.secrets[(NS, SECRET)]["tls.crt"]
        run_pod(kube, cron, plane, tmp_path)
        assert kube.secrets[(NS, SECRET)]["tls.crt"] == cert
        # Due (a renewBefore longer than the validity): re-signed into the Secret.
        args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"].copy()
        args[args.index("--renew-before") + 1] = "3000h"
        run_pod(kube, cron, plane, tmp_path, args)
        assert kube.secrets[(NS, SECRET)]["tls.crt"] != cert
        assert {a for a, _, _ in kube.requests[before:]} == {"mcp-tunnel-cert-renew"}
        pod.refresh()
        proxy.wait_for_log('"certificate reloaded"')
        assert "echo" in stackrun.call_through_edge(plane, url, ca, key, "--list")

        grace = pod.spec["terminationGracePeriodSeconds"]
        for running in (connector, proxy):
            code, took = running.stop()
            assert code == 0, running.text()
            assert took < grace
        assert grace >= go_seconds(config["shutdown_timeout"])
