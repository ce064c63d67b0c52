#!/usr/bin/env bash
# Shadowcat's memory under floods (padded initializes, large results, held
# streams), on release builds, against its default budgets.
#   benches/flood.sh [--padded N] [--big N] [--streams N] [--concurrency N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p shadowcat-proxy -p shadowcat-bench -p shadowcat-tests --bin shadowcat --bin shadowcat-flood --bin scripted-upstream
exec target/release/shadowcat-flood "$@"
