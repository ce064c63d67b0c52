#!/usr/bin/env bash
# Direct vs through Shadowcat (memory store, and Redis store on a private
# redis-server; needs redis-server on PATH or --stores memory), side by side,
# on release builds.
#   benches/run.sh [--concurrency N] [--duration SECS] [--rounds N] [--json FILE] ...
# Every argument goes to shadowcat-bench (see `--help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p shadowcat-proxy -p shadowcat-bench
tests/peers/install.sh
exec target/release/shadowcat-bench --shadowcat target/release/shadowcat "$@"
