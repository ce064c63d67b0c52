#!/usr/bin/env bash
# Direct vs through Shadowcat, side by side, release build.
#   benches/run.sh [--concurrency N] [--duration SECS] [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
tests/peers/install.sh
cargo build --release --locked -p shadowcat-proxy -p shadowcat-bench
SHADOWCAT_BIN="$PWD/target/release/shadowcat" SHADOWCAT_LOG=warn exec target/release/shadowcat-bench "$@"
