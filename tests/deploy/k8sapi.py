"""A stand-in for the Kubernetes API server, as far as the setup component uses it:
GET and PUT (and PATCH) of one namespaced Secret, over HTTPS, as a ServiceAccount
named by its bearer token, allowed or refused by the Roles and RoleBindings the chart
rendered, with resourceVersion conflicts. Everything else is 404 or 403, as the real
API server would answer a ServiceAccount with these Roles."""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SECRET_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[a-z0-9-]+)/secrets/(?P<name>[a-z0-9.-]+)$")
VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch"}


@dataclass
class FakeKube:
    """Secrets by (namespace, name) as {key: bytes}; Roles and bindings as rendered."""

    root: Path
    objects: list[dict[str, Any]]
    secrets: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (account, method, path)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.ca = self.root / "kube-ca.crt"
        key = self.root / "kube-apiserver.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(self.ca), "-days", "2", "-subj", "/CN=kube-apiserver",
             "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"],
            check=True, capture_output=True,
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    def create(self, namespace: str, name: str, data: dict[str, bytes] | None = None) -> None:
        with self.lock:
            self.secrets[(namespace, name)] = dict(data or {})
            self.versions[(namespace, name)] = 1

    def delete_objects(self, names: set[tuple[str, str]]) -> None:
        """Hooks Helm deletes once they succeeded (kind, name)."""
        self.objects = [o for o in self.objects if (o["kind"], o["metadata"]["name"]) not in names]

    def service_account_dir(self, namespace: str, account: str) -> Path:
        """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
        d = self.root / f"sa-{account}"
        d.mkdir(exist_ok=True)
        (d / "token").write_text(f"token.{namespace}.{account}")
        (d / "ca.crt").write_bytes(self.ca.read_bytes())
        (d / "namespace").write_text(namespace)
        return d

    def pod_env(self) -> dict[str, str]:
        """What the kubelet puts into every container's environment."""
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port)}

    def allowed(self, account: str, namespace: str, verb: str, name: str) -> bool:
        roles = {
            o["roleRef"]["name"]
            for o in self.objects
            if o["kind"] == "RoleBinding" and o["metadata"]["namespace"] == namespace and o["roleRef"]["kind"] == "Role"
            and {"kind": "ServiceAccount", "name": account, "namespace": namespace} in o["subjects"]
        }
        for role in self.objects:
            if role["kind"] != "Role" or role["metadata"]["name"] not in roles or role["metadata"]["namespace"] != namespace:
                continue
            for rule in role["rules"]:
                if ("" in rule["apiGroups"] and "secrets" in rule["resources"] and verb in rule["verbs"]
                        and (not rule.get("resourceNames") or name in rule["resourceNames"])):
                    return True
        return False

    def _handler(self):
        kube = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def status(self, code: int, reason: str, message: str) -> None:
                self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

            def handle_any(self) -> None:
                auth = self.headers.get("authorization", "")
                m = re.fullmatch(r"Bearer token\.(?P<ns>[a-z0-9-]+)\.(?P<sa>[a-z0-9-]+)", auth)
                if not m:
                    return self.status(401, "Unauthorized", "Unauthorized")
                account = m["sa"]
                kube.requests.append((account, self.command, self.path))
                path = SECRET_PATH.match(self.path.partition("?")[0])
                verb = VERBS.get(self.command)
                if not path or not verb or m["ns"] != path["ns"]:
                    return self.status(403, "Forbidden", f"{account} cannot {self.command} {self.path}")
                key = (path["ns"], path["name"])
                if not kube.allowed(account, path["ns"], verb, path["name"]):
                    return self.status(403, "Forbidden", f'secrets "{path["name"]}" is forbidden for {account}')
                body = None
                if verb != "get":
                    body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                with kube.lock:
                    if key not in kube.secrets:
                        return self.status(404, "NotFound", f'secrets "{path["name"]}" not found')
                    if verb == "update":
                        sent = body.get("metadata", {}).get("resourceVersion")
                        if sent is not None and sent != str(kube.versions[key]):
                            return self.status(409, "Conflict", "the object has been modified")
                        kube.secrets[key] = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
                        kube.versions[key] += 1
                    elif verb == "patch":
                        for k, v in (body.get("data") or {}).items():
                            kube.secrets[key][k] = base64.b64decode(v)
                        kube.versions[key] += 1
                    data = {k: base64.b64encode(v).decode() for k, v in kube.secrets[key].items()}
                    self.reply(200, {
                        "kind": "Secret", "apiVersion": "v1", "type": "Opaque", "data": data,
                        "metadata": {"name": path["name"], "namespace": path["ns"],
                                     "resourceVersion": str(kube.versions[key])},
                    })

            do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = handle_any

        return Handler
