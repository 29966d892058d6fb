#!/usr/bin/env bash
# Builds the container image's root filesystem into OUT_DIR: the statically linked
# mcp-tunnel binary at /usr/local/bin/mcp-tunnel and the /setup link to it. The
# Dockerfile runs exactly this; tests/deploy/test_image.py runs it without Docker and
# starts the result in an empty, read-only root as 65532:65532.
#
#   deploy/image/build-static.sh OUT_DIR
#
# Static glibc rather than musl: the musl target is one more toolchain to download, and
# aws-lc (the TLS provider) builds unchanged against glibc. `--target` keeps crt-static
# away from build scripts and proc macros, which must stay dynamic. glibc >= 2.34 has
# the `files` and `dns` NSS back ends inside libc, so name resolution needs no NSS
# modules on disk.
set -euo pipefail
out=${1:?usage: build-static.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/../.."

triple="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$triple" -p mcp-tunnel
bin="${CARGO_TARGET_DIR:-target}/$triple/release/mcp-tunnel"

# Modes spelled out: a root filesystem must not depend on the builder's umask.
chmod 0755 "$out"
install -d -m 0755 "$out/usr" "$out/usr/local" "$out/usr/local/bin"
install -m 0755 "$bin" "$out/usr/local/bin/mcp-tunnel"
ln -sfn /usr/local/bin/mcp-tunnel "$out/setup"

# Nothing in the image can load a shared library: refuse a binary that would need to.
if readelf -lW "$out/usr/local/bin/mcp-tunnel" | grep -q 'INTERP' ||
   readelf -dW "$out/usr/local/bin/mcp-tunnel" | grep -q 'NEEDED'; then
  echo "build-static.sh: $bin is dynamically linked" >&2
  exit 1
fi
"$out/usr/local/bin/mcp-tunnel" --version
