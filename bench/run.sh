#!/usr/bin/env bash
# One command per measurement of issue 9, on this machine, in one run each:
#   bench/run.sh                 every figure of docs/PERFORMANCE.md (mcp-tunnel-bench all)
#   bench/run.sh soak [--duration 10m]   the fault soak of docs/RELIABILITY.md
#   bench/run.sh profile --role proxy    one role under callgrind
# Extra arguments go to mcp-tunnel-bench. rathole and bore are built from crates.io into
# BENCH_TOOLS (default /tmp/bench-tools), outside the repository, and never committed.
# Release builds go to CARGO_TARGET_DIR (default target/bench-release, apart from the
# debug builds of tests, so a bench build does not block them).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
[ $# -gt 0 ] && shift
tools=${BENCH_TOOLS:-/tmp/bench-tools}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/bench-release}

if [ "$what" = all ]; then
    for pkg in rathole@0.5.0 bore-cli@0.6.0; do
        bin=${pkg%@*}; bin=${bin%-cli}
        if [ ! -x "$tools/bin/$bin" ]; then
            # A tunnel that does not build is left out of the comparison, and says so.
            CARGO_TARGET_DIR="$tools/target" cargo install --root "$tools" "$pkg" \
                || echo "bench: $pkg did not build; the comparison leaves it out" >&2
        fi
    done
fi
cargo build --release --locked -p mcp-tunnel -p mcp-tunnel-bench
# 10,000 idle sessions need ~2 descriptors each in the load generator and the proxy.
ulimit -n 65536 2>/dev/null || echo "bench: could not raise the open-file limit; fewer idle sessions will be measured" >&2
exec "$CARGO_TARGET_DIR/release/mcp-tunnel-bench" "$what" --tools-dir "$tools/bin" "$@"
