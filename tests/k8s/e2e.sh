#!/usr/bin/env bash
# End to end on a real, disposable cluster: kind or k3d (or any cluster your
# kubectl points at, with the image pushed where it can pull it).
#
#   tests/k8s/e2e.sh kind [CLUSTER]   # image loaded with `kind load`
#   tests/k8s/e2e.sh k3d  [CLUSTER]   # image imported with `k3d image import`
#   tests/k8s/e2e.sh none             # the cluster pulls $IMAGE itself
#
# Steps, each checked:
#   1. build the image; load it into the cluster
#   2. helm install the chart (2 operator replicas, webhook failurePolicy Fail)
#   3. the webhook path: a Deployment whose pod template carries the label
#      shadowcat.dev/proxy gets the sidecar in its pods (a native sidecar, an
#      init container), the Deployment object itself is unchanged, and calls
#      through the Service work across 3 replicas
#   4. two McpProxies naming one Deployment: the one its label does not name
#      reports Accepted=False/Conflict
#   5. operator failover: the leader pod is deleted, the other replica takes
#      the lease, and a new pod still gets the sidecar
#   6. target deleted first: the Deployment goes, then the McpProxy, and the
#      McpProxy is gone within a minute (no finalizer stuck); then the
#      namespace is deleted and goes too
# A trap deletes what it made (the test namespace, the release, and with
# E2E_DELETE_CLUSTER=1 the kind/k3d cluster) whatever happens.
#
# It cannot run on the project's CI machines (no container engine, no
# cluster). Needs: docker, kubectl, helm 3, and kind or k3d.
set -euo pipefail
cd "$(dirname "$0")/../.."

engine=${1:?usage: $0 kind|k3d|none [CLUSTER]}
cluster=${2:-shadowcat-e2e}
ns=shadowcat-e2e
system=shadowcat-system
image=${IMAGE:-shadowcat:e2e}
repo=${image%:*}
tag=${image##*:}

cleanup() {
  local code=$?
  echo "==> cleanup (exit $code)"
  kubectl delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 || true
  helm uninstall shadowcat -n "$system" >/dev/null 2>&1 || true
  kubectl delete namespace "$system" --wait=false --ignore-not-found >/dev/null 2>&1 || true
  if [[ ${E2E_DELETE_CLUSTER:-} == 1 ]]; then
    case $engine in
      kind) kind delete cluster --name "$cluster" || true ;;
      k3d) k3d cluster delete "$cluster" || true ;;
    esac
  fi
  exit "$code"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# Polls CMD until it succeeds, for at most SECONDS.
wait_for() { # wait_for SECONDS WHAT CMD...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  fail "$what (after ${seconds}s)"
}

condition() { # condition MCPPROXY TYPE -> "Status/Reason"
  kubectl -n "$ns" get mcpproxy "$1" \
    -o jsonpath="{.status.conditions[?(@.type==\"$2\")].status}/{.status.conditions[?(@.type==\"$2\")].reason}"
}

echo "==> cluster ($engine $cluster) and image"
case $engine in
  kind)
    kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster"
    kubectl config use-context "kind-$cluster"
    docker build -t "$image" .
    kind load docker-image "$image" --name "$cluster"
    ;;
  k3d)
    k3d cluster list "$cluster" >/dev/null 2>&1 || k3d cluster create "$cluster" --wait
    kubectl config use-context "k3d-$cluster"
    docker build -t "$image" .
    k3d image import "$image" --cluster "$cluster"
    ;;
  none) ;;
  *) fail "unknown engine $engine" ;;
esac
server_minor=$(kubectl version -o json | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | tail -n1)
[[ ${server_minor:-0} -ge 29 ]] || fail "Kubernetes >= 1.29 is needed for native sidecars (server minor: $server_minor)"

echo "==> chart"
helm upgrade --install shadowcat charts/shadowcat -n "$system" --create-namespace --wait \
  --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=IfNotPresent \
  --set sidecar.image.repository="$repo" --set sidecar.image.tag="$tag"
wait_for 120 "the operator's webhook CA bundle" \
  sh -c "kubectl get mutatingwebhookconfiguration shadowcat -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | grep -q ."

echo "==> 3. the webhook path"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$ns" apply -f examples/redis.yaml -f examples/mcpproxy.yaml
wait_for 120 "McpProxy everything accepted" sh -c "[ \"\$(kubectl -n $ns get mcpproxy everything -o jsonpath='{.status.configHash}')\" != '' ]"
kubectl -n "$ns" apply -f examples/mcp-server.yaml
generation=$(kubectl -n "$ns" get deploy everything -o jsonpath='{.metadata.generation}')
kubectl -n "$ns" rollout status deploy/everything --timeout=300s
kubectl -n "$ns" wait --for=condition=Ready mcpproxy/everything --timeout=300s
for pod in $(kubectl -n "$ns" get pods -l shadowcat.dev/proxy=everything -o name); do
  init=$(kubectl -n "$ns" get "$pod" -o jsonpath='{.spec.initContainers[?(@.name=="shadowcat")].restartPolicy}')
  [[ $init == Always ]] || fail "$pod has no native sidecar"
done
[[ $(kubectl -n "$ns" get deploy everything -o jsonpath='{.metadata.generation}') == "$generation" ]] \
  || fail "the Deployment was written"
[[ $(kubectl -n "$ns" get deploy everything -o jsonpath='{.spec.template.spec.containers[*].name}') == server ]] \
  || fail "the Deployment's template changed"

kubectl -n "$ns" run e2e-client --rm -i --restart=Never --image=curlimages/curl -- sh -ec '
  url=http://everything/mcp
  h="-H content-type:application/json -H accept:application/json,text/event-stream"
  sid=$(curl -s -D - -o /dev/null $h -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"e2e\",\"version\":\"0\"}}}" $url \
        | tr -d "\r" | awk -F": " "tolower(\$1)==\"mcp-session-id\"{print \$2}")
  [ -n "$sid" ] || { echo "no session id"; exit 1; }
  curl -sf $h -H "mcp-session-id: $sid" -H "mcp-protocol-version: 2025-06-18" -d "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}" $url
  for i in 1 2 3 4 5 6 7 8 9; do
    curl -sf $h -H "mcp-session-id: $sid" -H "mcp-protocol-version: 2025-06-18" \
      -d "{\"jsonrpc\":\"2.0\",\"id\":$((i+1)),\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"e2e $i\"}}}" $url \
      | grep -q "Echo: e2e $i" || { echo "call $i failed"; exit 1; }
  done
  echo "9 calls on one session through the Service: ok"'

echo "==> 4. two McpProxies on one target"
sed 's/^  name: everything$/  name: everything-second/' examples/mcpproxy.yaml | kubectl -n "$ns" apply -f -
wait_for 60 "a Conflict on the McpProxy the label does not name" \
  sh -c "[ \"\$(kubectl -n $ns get mcpproxy everything-second -o jsonpath='{.status.conditions[?(@.type==\"Accepted\")].reason}')\" = Conflict ]"
[[ $(condition everything Accepted) == True/Accepted ]] || fail "the labelled McpProxy lost: $(condition everything Accepted)"
kubectl -n "$ns" delete mcpproxy everything-second --wait --timeout=60s

echo "==> 5. operator failover"
leader=$(kubectl -n "$system" get lease shadowcat -o jsonpath='{.spec.holderIdentity}')
[[ -n $leader ]] || fail "no leader"
kubectl -n "$system" delete pod "$leader" --wait=false
wait_for 60 "another replica to lead" \
  sh -c "h=\$(kubectl -n $system get lease shadowcat -o jsonpath='{.spec.holderIdentity}'); [ -n \"\$h\" ] && [ \"\$h\" != $leader ]"
kubectl -n "$ns" delete pod -l shadowcat.dev/proxy=everything --wait=false
kubectl -n "$ns" rollout status deploy/everything --timeout=300s
wait_for 120 "new pods with the sidecar and Ready" \
  sh -c "[ \"\$(kubectl -n $ns get mcpproxy everything -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"

echo "==> 6. target deleted first, then the McpProxy, then the namespace"
kubectl -n "$ns" delete deploy everything --wait --timeout=120s
kubectl -n "$ns" delete mcpproxy everything --timeout=60s || fail "McpProxy stuck in Terminating"
kubectl delete namespace "$ns" --timeout=180s || fail "namespace deletion blocked"
echo "e2e: ok"
