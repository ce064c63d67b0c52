#!/usr/bin/env bash
# Shadowcat (memory store, and Redis store on a private redis-server) side by
# side with nginx, all in front of the same fast MCP upstream, on release
# builds: calls, session set-up, one busy session, held streams (memory per
# stream and broadcast fan-out) and a latency-vs-concurrency sweep.
#   benches/scale.sh [--duration SECS] [--scenarios a,b] [--json FILE] [--plots DIR] ...
# Every argument goes to shadowcat-scale (see `--help`).
#
# Held streams cost a proxy two descriptors each, so the open-file limit is
# raised to the hard limit here (children inherit it): under 20 000, about
# 9 900 streams is the most.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p shadowcat-proxy -p shadowcat-bench --bin shadowcat --bin shadowcat-scale \
    --bin shadowcat-bench-upstream
ulimit -n "$(ulimit -Hn)"
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "nginx is missing: installing nginx-light" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2 \
            || echo "could not install nginx-light; the nginx target will be skipped" >&2
    else
        echo "nginx is missing (and cannot be installed here): the nginx target will be skipped" >&2
    fi
fi
exec target/release/shadowcat-scale --shadowcat target/release/shadowcat \
    --upstream target/release/shadowcat-bench-upstream "$@"
