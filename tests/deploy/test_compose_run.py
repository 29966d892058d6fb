"""The customer Compose stack's programmatic flow, run as the resolved Compose file
starts each container (stackrun.py), against a real operator side: `setup` provisions
./data through the Tunnels API, `mcp-proxy` and `connector` serve an MCP call from
outside through the edge, a new TOKEN_VERSION rotates the token under the running
connector, `renew-cert` renews without a network and the proxy reloads, and both
long-running services exit 0 on SIGTERM within their stop_grace_period."""

from __future__ import annotations

from pathlib import Path

import yaml

import proxyrun
import stackrun
from serverrun import Ports
from test_compose import CUSTOMER, CUSTOMER_ENV, flag, go_seconds, resolved


def service_env(svc: dict) -> dict[str, str]:
    # A name listed without a value and unset in the shell passes nothing.
    return {k: v for k, v in (svc.get("environment") or {}).items() if v is not None}


def test_programmatic_flow_end_to_end(tmp_path):
    with stackrun.control_plane(tmp_path / "operator") as plane:
        shell = {**CUSTOMER_ENV, "API_URL": plane.api, "API_TOKEN": plane.admin_key}
        services = resolved(CUSTOMER, shell, "setup")["services"]
        data = tmp_path / "data"
        data.mkdir(mode=0o700)
        mounts = {str(CUSTOMER / "data"): data, str(CUSTOMER / "config" / "mcp-proxy.yaml"): tmp_path / "config.yaml"}
        ports = Ports()

        def volumes(svc):
            return {v["target"]: mounts[v["source"]] for v in svc["volumes"]}

        # The API's certificate is publicly trusted in a real deployment; here the
        # operator's CA stands in for the system roots.
        trust = {"API_CA_FILE": str(plane.edge_ca)}

        def setup(svc):
            env = service_env(svc)
            assert env == {"API_URL": plane.api, "API_TOKEN": plane.admin_key}, "only what the shell set passes"
            out = stackrun.run(stackrun.local_argv(svc["command"], volumes(svc), ports), {**env, **trust}, tmp_path)
            assert out.returncode == 0, out.stdout + out.stderr
            return out

        # `docker compose run --rm setup`: everything the stack reads, in ./data.
        setup(services["setup"])
        for name in ("tunnel-id", "tunnel-domain", "tunnel-token", "ca.crt", "ca.key", "tls.crt", "tls.key"):
            assert (data / name).is_file(), name
        for name in ("tunnel-token", "ca.key", "tls.key"):
            assert (data / name).stat().st_mode & 0o077 == 0, f"{name} is readable by others"
        token = (data / "tunnel-token").read_text()
        # Idempotent: a second run with the same TOKEN_VERSION changes nothing and
        # never makes a second tunnel.
        setup(services["setup"])
        assert (data / "tunnel-token").read_text() == token
        assert [t["id"] for t in plane.call("GET", "/v1/tunnels")["data"]] == [(data / "tunnel-id").read_text().strip()]

        domain = (data / "tunnel-domain").read_text().strip()
        config = yaml.safe_load((CUSTOMER / "config" / "mcp-proxy.yaml").read_text())
        with proxyrun.mcp_server(tmp_path) as mcp_port:
            # What the page tells the operator to change: the domain setup wrote, the
            # routes and the addresses that cover them. Addresses become local.
            config |= {"tunnel_domain": domain, "routes": {"docs": f"http://127.0.0.1:{mcp_port}"}}
            config["upstream"]["allowed_ips"] = ["127.0.0.1/32"]
            for key in ("listen_addr", "admin_addr"):
                config[key] = stackrun.local_token(config[key], {}, ports)
            config["tls"] = {k: stackrun.local_token(v, {"/data": data}, ports) for k, v in config["tls"].items()}
            (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

            proxy_svc, connector_svc = services["mcp-proxy"], services["connector"]
            health = {n: stackrun.local_argv(services[n]["healthcheck"]["test"][1:], {}, ports) for n in ("mcp-proxy", "connector")}
            proxy_argv = stackrun.local_argv(proxy_svc["command"], volumes(proxy_svc), ports)
            connector_argv = stackrun.local_argv(connector_svc["command"], volumes(connector_svc), ports)
            # Shared network namespace: the connector's --url is the proxy's listener.
            assert flag(connector_argv, "--url") == f"http://{config['listen_addr']}"
            with stackrun.process("mcp-proxy", proxy_argv, service_env(proxy_svc), tmp_path) as proxy, \
                 stackrun.process("connector", connector_argv, service_env(connector_svc), tmp_path) as connector:
                assert health["mcp-proxy"][:2] == health["connector"][:2] == ["/usr/local/bin/mcp-tunnel", "healthcheck"]
                stackrun.wait_healthy(health["mcp-proxy"][2], proxy)
                # The connector's /ready: registered with the edge.
                stackrun.wait_healthy(health["connector"][2], connector)
                key = plane.client_key()
                url = f"https://docs.{domain}/mcp"
                assert "echo" in stackrun.call_through_edge(plane, url, data / "ca.crt", key, "--list")

                # Rotation: `TOKEN_VERSION=2 docker compose run --rm setup`; the
                # connector re-reads the file, no restart.
                rotated = resolved(CUSTOMER, {**shell, "TOKEN_VERSION": "2"}, "setup")["services"]["setup"]
                setup(rotated)
                assert (data / "tunnel-token").read_text() != token
                connector.wait_for_log("tunnel token file changed")
                assert "5" in stackrun.call_through_edge(plane, url, data / "ca.crt", key, "--tool", "add", "--args", '{"a": 2, "b": 3}')

                # `docker compose run --rm renew-cert`: no network and no credentials,
                # a no-op while more than --renew-before remains.
                renew = services["renew-cert"]
                assert renew["network_mode"] == "none" and not service_env(renew)
                renew_argv = stackrun.local_argv(renew["command"], volumes(renew), ports)
                cert = (data / "tls.crt").read_bytes()
                out = stackrun.run(renew_argv, {}, tmp_path)
                assert out.returncode == 0, out.stderr
                assert (data / "tls.crt").read_bytes() == cert
                # Due (a --renew-before longer than the validity): re-signed in place
                # with the stored CA; the proxy reloads it from the read-only mount.
                due = renew_argv.copy()
                due[due.index("--renew-before") + 1] = "3000h"
                out = stackrun.run(due, {}, tmp_path)
                assert out.returncode == 0, out.stderr
                assert (data / "tls.crt").read_bytes() != cert
                proxy.wait_for_log('"certificate reloaded"')
                assert "echo" in stackrun.call_through_edge(plane, url, data / "ca.crt", key, "--list")

                # `docker compose down`: the connector first (it depends on the proxy).
                for svc, running in ((connector_svc, connector), (proxy_svc, proxy)):
                    code, took = running.stop()
                    assert code == 0, running.text()
                    assert took < go_seconds(svc["stop_grace_period"]), running.name
