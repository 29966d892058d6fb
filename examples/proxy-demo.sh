#!/usr/bin/env bash
# A private MCP server behind the mcp-tunnel proxy, on this machine, in one command:
#   1. builds mcp-tunnel, and a Python venv with the MCP SDK (PyPI `mcp`)
#   2. makes a tunnel CA and a server certificate with the documented openssl recipe
#   3. starts a sample MCP server on 127.0.0.1 and the proxy in front of it
#   4. lists and calls its tools through WebSocket + inner TLS with `mcp-tunnel call`
# It then stays up until Ctrl-C, printing the command to call it yourself.
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
# The openssl recipe (SPEC §8): an RSA-2048 CA with explicit extensions, and a wildcard
# server certificate for *.<tunnel domain> signed by it.
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -sha256 \
  -subj "/CN=demo tunnel CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj "/CN=*.$domain" 2>/dev/null
printf 'subjectAltName=DNS:*.%s\nauthorityKeyIdentifier=keyid\nextendedKeyUsage=serverAuth\n' "$domain" > server.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt \
  -days 7 -sha256 -extfile server.ext 2>/dev/null

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$root/.venv/bin/python" "$root/testdata/mcp_server.py" > mcp-server.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^PORT ' mcp-server.log 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/^PORT //p' mcp-server.log)

cat > config.yaml <<YAML
listen_addr: "127.0.0.1:0"
admin_addr: "127.0.0.1:0"
tunnel_domain: $domain
tls:
  cert_file: $work/tls.crt
  key_file: $work/tls.key
routes:
  mcp: http://127.0.0.1:$port
upstream:
  # The sample server is on loopback, outside the default (RFC 1918) allow-list.
  allowed_ips: ["127.0.0.1/32"]
YAML

"$bin" proxy -config config.yaml > proxy.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '"proxy listening"' proxy.log 2>/dev/null && break; sleep 0.1; done
addr=$(grep '"proxy listening"' proxy.log | sed 's/.*"listen_addr":"\([^"]*\)".*/\1/')

call=("$bin" call "https://mcp.$domain/mcp" --proxy "$addr" --ca-file "$work/ca.crt")
echo "== tools, listed through the proxy"
"${call[@]}" --list
echo "== add(2, 3), called through the proxy"
"${call[@]}" --tool add --args '{"a": 2, "b": 3}'

cat <<TXT

The proxy listens on $addr (WebSocket + inner TLS only); its logs are in $work/proxy.log.
Call it yourself:
  ${call[*]} --tool echo --args '{"text": "hello"}'
Press Ctrl-C to stop.
TXT
$check && exit 0
wait "${pids[1]}"
