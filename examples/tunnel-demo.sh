#!/usr/bin/env bash
# The whole data path on one machine, each role started by hand as an operator and a
# customer would: a private MCP server, the proxy in front of it, a connector dialing
# out to an edge, and an MCP call from outside through the edge.
#
# There is no control plane yet, so this script plays its part: it makes the tunnel's
# token and the edge's static store (JSON) itself. Everything else is the real thing.
set -euo pipefail
# --check: exit 0 after the calls succeed instead of staying up (CI runs it so).
check=false; [ "${1:-}" = "--check" ] && check=true
cd "$(dirname "$0")/.."
root=$PWD
domain=demo1234.tunnel.local

cargo build --locked --quiet -p mcp-tunnel
bin=${CARGO_TARGET_DIR:-$root/target}/debug/mcp-tunnel
if ! .venv/bin/python -c 'import mcp.server.mcpserver' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r testdata/requirements.txt
fi

work=$(mktemp -d -t mcp-tunnel-demo.XXXXXX)
cd "$work"
umask 077
q() { "$@" >/dev/null 2>&1; }

# Customer: the tunnel CA and the proxy's wildcard certificate (SPEC §8 openssl recipe).
q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -sha256 \
  -subj "/CN=demo tunnel CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash"
q openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj "/CN=*.$domain"
printf 'subjectAltName=DNS:*.%s\nauthorityKeyIdentifier=keyid\nextendedKeyUsage=serverAuth\n' "$domain" > server.ext
q openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt \
  -days 7 -sha256 -extfile server.ext

# Operator: the edge's CA and certificate (for 127.0.0.1 here).
q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout edge-ca.key \
  -out edge-ca.crt -days 30 -subj "/CN=demo edge CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign" -addext "subjectKeyIdentifier=hash"
q openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout edge.key -out edge.csr -subj "/CN=edge"
printf 'subjectAltName=IP:127.0.0.1\nauthorityKeyIdentifier=keyid\nextendedKeyUsage=serverAuth\n' > edge.ext
q openssl x509 -req -in edge.csr -CA edge-ca.crt -CAkey edge-ca.key -CAcreateserial -out edge.crt \
  -days 7 -sha256 -extfile edge.ext
cat edge.crt edge-ca.crt > edge-chain.crt

# Operator: a tunnel and a client access key in the edge's static store. The store keeps
# only hashes; the token (secret inside) goes to the customer.
python3 - "$domain" <<'PY'
import base64, hashlib, json, os, secrets, sys
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
secret = b64(os.urandom(32))
key = "ck_" + secrets.token_urlsafe(32)
json.dump({"tunnels": [{"id": "tnl_demo0000000000", "workspace_id": "wrkspc_demo",
                        "domain": sys.argv[1],
                        "token_secret_sha256": hashlib.sha256(secret.encode()).hexdigest()}],
           "client_keys": [{"key_sha256": hashlib.sha256(key.encode()).hexdigest(),
                            "workspace_id": "wrkspc_demo", "key_id": "ck_demo"}]},
          open("edge-store.json", "w"))
open("token-secret", "w").write(secret)
open("client-key", "w").write(key)
PY

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
wait_log() { for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.1; done; echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; exit 1; }
field() { grep "$2" "$1" | head -1 | sed "s/.*\"$3\":\"\([^\"]*\)\".*/\1/"; }

# Customer: the private MCP server and the proxy in front of it.
"$root/.venv/bin/python" "$root/testdata/mcp_server.py" > mcp-server.log 2>&1 &
pids+=($!)
wait_log mcp-server.log '^PORT '
cat > proxy.yaml <<YAML
listen_addr: "127.0.0.1:0"
admin_addr: "127.0.0.1:0"
tunnel_domain: $domain
tls: {cert_file: $work/tls.crt, key_file: $work/tls.key}
routes:
  mcp: http://127.0.0.1:$(sed -n 's/^PORT //p' mcp-server.log)
upstream:
  allowed_ips: ["127.0.0.1/32"]
YAML
"$bin" proxy -config proxy.yaml > proxy.log 2>&1 &
pids+=($!)
wait_log proxy.log '"proxy listening"'
proxy_addr=$(field proxy.log '"proxy listening"' listen_addr)

# Operator: the edge.
"$bin" edge --connector-listen 127.0.0.1:0 --client-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --tls-cert edge-chain.crt --tls-key edge.key --store-file edge-store.json > edge.log 2>&1 &
pids+=($!)
wait_log edge.log '"edge listening"'
edge_connectors=$(field edge.log '"edge listening"' connector)
edge_clients=$(field edge.log '"edge listening"' client)

# Customer: the token (tunnel id, secret, edge address, edge CA pin) and the connector.
pin=$(openssl x509 -in edge-ca.crt -outform der | sha256sum | cut -d' ' -f1)
python3 - "$edge_connectors" "$pin" <<'PY'
import base64, json, sys
tok = {"tunnel_id": "tnl_demo0000000000", "secret": open("token-secret").read(),
       "edge": sys.argv[1], "edge_ca_sha256": sys.argv[2]}
open("tunnel-token", "w").write(base64.urlsafe_b64encode(json.dumps(tok).encode()).rstrip(b"=").decode())
PY
"$bin" connector run --url "http://$proxy_addr" --token-file tunnel-token > connector.log 2>&1 &
pids+=($!)
wait_log connector.log 'Registered tunnel connection'

# Anyone with a client key: an MCP call from outside, through the edge.
export MCP_TUNNEL_CLIENT_KEY; MCP_TUNNEL_CLIENT_KEY=$(cat client-key)
call=("$bin" call "https://mcp.$domain/mcp" --edge "$edge_clients" --edge-ca-file "$work/edge-ca.crt" --ca-file "$work/ca.crt")
echo "== tools, listed through edge → connector → proxy"
"${call[@]}" --list
echo "== add(2, 3), called through edge → connector → proxy"
"${call[@]}" --tool add --args '{"a": 2, "b": 3}'

cat <<TXT

Edge clients: $edge_clients (connectors: $edge_connectors); proxy: $proxy_addr.
Logs and credentials: $work ({edge,connector,proxy,mcp-server}.log).
Call it yourself:
  MCP_TUNNEL_CLIENT_KEY=\$(cat $work/client-key) ${call[*]} --tool echo --args '{"text": "hi"}'
Press Ctrl-C to stop.
TXT
$check && exit 0
wait "${pids[1]}"
