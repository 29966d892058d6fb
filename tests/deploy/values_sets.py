"""Value sets the charts are rendered with: each mode, and the options that change the
shape of the output. Shared by the chart, schema and docs tests."""

from __future__ import annotations

from k8s import DIGEST, merge

ROUTES = {"docs": "http://10.0.0.5:8000", "tickets": "http://192.168.1.20:3000"}

MANAGED_WIF = {
    "api": {
        "url": "https://api.tunnels.example.com",
        "wif": {
            "federationRuleId": "fdrl_01abc",
            "organizationId": "3f2b9c1e-8d4a-4c7e-9b1a-2e5f6a7b8c9d",
        },
    },
    "gateway": {"config": {"routes": ROUTES}},
}

EXTERNAL = {
    "setup": {"enabled": False},
    "external": {
        "tunnelTokenSecretName": "mcp-tunnel-token",
        "serverCertSecretName": "mcp-tunnel-cert",
    },
    "gateway": {"config": {"tunnel_domain": "ab12cd34.tunnel.example.com", "routes": ROUTES}},
}

CUSTOMER_SETS = {
    "managed-wif": MANAGED_WIF,
    "managed-wif-everything": merge(
        MANAGED_WIF,
        {
            "image": {"digest": DIGEST},
            "tunnel": {"id": "tnl_01hzy", "tokenVersion": "7"},
            "setup": {
                "force": True,
                "extraVolumes": [{"name": "spiffe", "csi": {"driver": "csi.spiffe.io", "readOnly": True}}],
                "extraVolumeMounts": [{"name": "spiffe", "mountPath": "/spiffe", "readOnly": True}],
            },
            "api": {"wif": {"workspaceId": "wrkspc_01x", "tokenFile": "/spiffe/jwt", "audience": "tunnels"}},
            "serverCert": {"duration": "720h", "renewBefore": "240h", "cronSchedule": "30 3 * * *"},
            "metrics": {"prometheusRule": {"enabled": True}, "podMonitor": {"enabled": True}},
            "networkPolicy": {
                "ingress": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
                "egress": {"enabled": True, "edge": {"cidrs": ["203.0.113.0/24"]}},
            },
        },
    ),
    "managed-api-key": merge(
        {k: v for k, v in MANAGED_WIF.items() if k != "api"},
        {"api": {"url": "https://api.tunnels.example.com", "apiKeySecret": {"name": "tunnels-api-key"}}},
    ),
    "external": EXTERNAL,
    "external-locked-down": merge(
        EXTERNAL,
        {
            "replicaCount": 1,
            "image": {"digest": DIGEST},
            "gateway": {
                "config": {
                    "log_level": "warn",
                    "log_format": "text",
                    "shutdown_timeout": "1m30s",
                    "upstream": {
                        "allowed_ips": ["10.0.0.5", "192.168.1.0/24"],
                        "tls": {"ca_file": "/etc/mcp-proxy-upstream/ca.crt"},
                        "connect_timeout": "5s",
                    },
                    "limits": {"max_body_bytes": 1048576, "handshake_timeout": "5s"},
                    "preserve_host": False,
                },
                "preStopSleepSeconds": 0,
                "extraVolumes": [{"name": "upstream-ca", "configMap": {"name": "upstream-ca"}}],
                "extraVolumeMounts": [{"name": "upstream-ca", "mountPath": "/etc/mcp-proxy-upstream", "readOnly": True}],
            },
            "connector": {"haConnections": 2, "gracePeriod": "45s", "edgeCaConfigMap": {"name": "edge-ca"}},
            "networkPolicy": {
                "egress": {
                    "enabled": True,
                    "edge": {"cidrs": ["198.51.100.7/32"]},
                    "mcpServers": [
                        {"cidr": "10.0.0.5/32", "ports": [8000]},
                        {"podSelector": {"matchLabels": {"app": "tickets"}}, "ports": [3000]},
                    ],
                },
            },
            "metrics": {"prometheusRule": {"enabled": True}},
        },
    ),
}

SERVER_BASE = {
    "config": {"configMapName": "mcp-tunnel-server-config"},
    "tls": {"edgeSecretName": "mcp-tunnel-edge-tls", "apiSecretName": "mcp-tunnel-api-tls"},
    "masterKey": {"secretName": "mcp-tunnel-master-key"},
}

SERVER_SETS = {
    "external-postgres": merge(SERVER_BASE, {"database": {"existingSecret": "mcp-tunnel-db"}}),
    "bundled-postgres": merge(
        SERVER_BASE,
        {
            "replicaCount": 3,
            "image": {"digest": DIGEST},
            "postgresql": {"enabled": True, "auth": {"existingSecret": "mcp-tunnel-pg"}, "image": {"digest": DIGEST}},
            "server": {"maxTunnels": 50, "failedAuthPerMinute": 10, "trustedProxies": ["10.244.0.0/16", "fd00:10:244::/56"], "proxyProtocolFrom": ["10.0.0.0/16"], "preStopSleepSeconds": 0, "logLevel": "warn"},
            "ingress": {"enabled": True, "host": "api.tunnels.example.com", "tlsSecretName": "api-tls"},
            "networkPolicy": {
                "apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}],
                "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            },
            "metrics": {"podMonitor": {"enabled": True}},
        },
    ),
    "single-replica-public-api": merge(
        SERVER_BASE,
        {
            "replicaCount": 1,
            "database": {"existingSecret": "mcp-tunnel-db"},
            # The API published by its own LoadBalancer, TLS in the pod: it sees the
            # clients' addresses.
            "service": {"api": {"type": "LoadBalancer"}, "edge": {"loadBalancerSourceRanges": ["0.0.0.0/0"]}},
            "networkPolicy": {"apiFrom": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
        },
    ),
}
