#!/usr/bin/env bash
# Sets up everything the tests need and runs every test. CI calls this.
#   scripts/test.sh
# Needs: the Rust toolchain, Node (20+) with npm, python3, redis-server, redis-cli
# and openssl on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> test peers (pinned npm packages, Python MCP SDK venv) and chart tools (helm, kubernetes-validate)"
tests/peers/install.sh
tests/chart/install.sh

echo "==> format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> build (the end-to-end tests run the real binary)"
cargo build --workspace --locked

echo "==> tests"
cargo test --workspace --locked -- --skip chaos_holds_every_invariant

echo "==> chaos suite (its seed and figures are printed; SHADOWCAT_CHAOS_SECONDS runs it longer)"
cargo test -p shadowcat-tests --test chaos --locked -- --nocapture
