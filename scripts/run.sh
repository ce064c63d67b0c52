#!/usr/bin/env bash
# Sets up and runs Shadowcat in front of the reference MCP server
# (server-everything, pinned in tests/peers) on the memory store.
#   scripts/run.sh        then point any MCP client at http://127.0.0.1:8080/mcp
# Environment: PORT (upstream port, default 3001), and any SHADOWCAT_* setting.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/peers/install.sh
cargo build --locked -p shadowcat-proxy
port="${PORT:-3001}"
export PORT="$port"
exec target/debug/shadowcat --upstream "http://127.0.0.1:${port}/mcp" --log-format text -- \
  node tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp
