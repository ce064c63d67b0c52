#!/usr/bin/env bash
# Validates a Helm chart offline:
#   tests/chart/validate.sh CHART_DIR [VALUES_FILE...]
# Cases: "default" (the chart's own values) plus each VALUES_FILE, by default
# every tests/chart/values/*.yaml. For each case:
#   0. (values files) every key set must exist in the chart's values.yaml
#   1. helm lint --strict
#   2. helm template (release "shadowcat", namespace "shadowcat-system")
#   3. every rendered object checked with validate_manifests.py against the
#      Kubernetes schemas of each version in KUBE_VERSIONS (strict: unknown
#      fields fail); custom resources against the chart's CRD files.
# One more case, "crds", checks the chart's CRD files themselves. CRD files:
# crds/*.yaml (Helm installs them, never upgrades) and files/crds/*.yaml (a
# chart's templates render them, as charts/shadowcat's crds.yaml does).
# Prints one line per case and a last line "chart: N passed, N failed"; exits 1
# if any case failed. Writes only to a temp dir (nothing into CHART_DIR).
# Works from any cwd; runs install.sh first (quick when already installed).
#
# Env: KUBE_VERSIONS  Kubernetes versions to validate against (default "1.33 1.37":
#                     the oldest and newest that k8s-openapi 0.29 supports; the
#                     chart is rendered with --kube-version set to the last one)
#      KEEP=1         keep the temp dir with the rendered manifests and logs
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -ge 1 ]] || { echo "usage: $0 CHART_DIR [VALUES_FILE...]" >&2; exit 2; }
[[ -f $1/Chart.yaml ]] || { echo "validate.sh: $1/Chart.yaml not found" >&2; exit 2; }
chart=$(cd "$1" && pwd)
shift
values=()
for f in "$@"; do
  [[ -f $f ]] || { echo "validate.sh: values file $f not found" >&2; exit 2; }
  values+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
done
if [[ ${#values[@]} -eq 0 ]]; then
  shopt -s nullglob
  values=("$here"/values/*.yaml)
  shopt -u nullglob
fi
read -r -a kube_versions <<<"${KUBE_VERSIONS:-1.33 1.37}"

"$here/install.sh"
helm=$here/bin/helm
python=$here/.venv/bin/python

work=$(mktemp -d "${TMPDIR:-/tmp}/chart-validate.XXXXXX")
if [[ ${KEEP:-} == 1 ]]; then
  echo "validate.sh: keeping $work" >&2
else
  trap 'rm -rf "$work"' EXIT
fi
# Keep helm away from ~/.config, ~/.cache and any repositories there.
export HELM_CONFIG_HOME=$work/helm/config HELM_CACHE_HOME=$work/helm/cache HELM_DATA_HOME=$work/helm/data

kv_args=()
for v in "${kube_versions[@]}"; do kv_args+=(-k "$v"); done
shopt -s nullglob
crds=("$chart"/crds/*.yaml "$chart"/crds/*.yml "$chart"/files/crds/*.yaml "$chart"/files/crds/*.yml)
shopt -u nullglob
for c in "${crds[@]}"; do kv_args+=(--crd "$c"); done
# The Prometheus Operator's and cert-manager's CRDs are not available offline.
for skip in monitoring.coreos.com/ServiceMonitor monitoring.coreos.com/PodMonitor \
  cert-manager.io/Certificate cert-manager.io/Issuer; do
  kv_args+=(--skip "$skip")
done
helm_caps=(--kube-version "${kube_versions[-1]}" --api-versions monitoring.coreos.com/v1)

passed=0
failed=0
report() { # report NAME OK|FAIL DETAIL LOG
  if [[ $2 == ok ]]; then
    passed=$((passed + 1))
    printf 'ok   %-35s %s\n' "$1" "$3"
  else
    failed=$((failed + 1))
    [[ -f $4 ]] && sed 's/^/    | /' "$4" || true
    printf 'FAIL %-35s %s\n' "$1" "$3"
  fi
}

run_case() { # run_case NAME [VALUES_FILE]
  local name=$1 log=$work/${1//\//_}.log out=$work/${1//\//_}.rendered.yaml
  local vflags=()
  if [[ $# -ge 2 ]]; then
    vflags=(-f "$2")
    if ! "$python" "$here/check_values_keys.py" "$chart/values.yaml" "$2" >"$log" 2>&1; then
      report "$name" FAIL "sets keys the chart does not have" "$log"
      return
    fi
  fi
  if ! "$helm" lint --strict "$chart" --namespace shadowcat-system "${helm_caps[@]:0:2}" "${vflags[@]}" >"$log" 2>&1; then
    report "$name" FAIL "helm lint failed" "$log"
    return
  fi
  if ! "$helm" template shadowcat "$chart" --namespace shadowcat-system "${helm_caps[@]}" "${vflags[@]}" >"$out" 2>"$log"; then
    report "$name" FAIL "helm template failed" "$log"
    return
  fi
  if "$python" "$here/validate_manifests.py" "${kv_args[@]}" "$out" >"$log" 2>&1; then
    report "$name" ok "lint ok; $(tail -n1 "$log") (k8s ${kube_versions[*]})"
  else
    report "$name" FAIL "$(tail -n1 "$log") (k8s ${kube_versions[*]})" "$log"
  fi
}

run_case default
for f in "${values[@]}"; do
  run_case "values/$(basename "$f")" "$f"
done

if [[ ${#crds[@]} -gt 0 ]]; then
  kv_crd=()
  for v in "${kube_versions[@]}"; do kv_crd+=(-k "$v"); done
  if "$python" "$here/validate_manifests.py" "${kv_crd[@]}" "${crds[@]}" >"$work/crds.log" 2>&1; then
    report crds ok "$(tail -n1 "$work/crds.log") (k8s ${kube_versions[*]})"
  else
    report crds FAIL "$(tail -n1 "$work/crds.log")" "$work/crds.log"
  fi
fi

echo "chart: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
