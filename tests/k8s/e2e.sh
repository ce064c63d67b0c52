#!/usr/bin/env bash
# End to end on a real cluster (kind, k3d, or any you have): build and load the
# image, install the chart, deploy the example MCP server with 3 replicas and
# an McpProxy, wait for Ready, call tools through the Service from inside the
# cluster, delete the McpProxy and check the sidecar is gone.
#
# It cannot run on the project's CI machines (no container engine, no cluster).
# Needs: docker, kubectl pointed at a disposable cluster, helm 3.
#   tests/k8s/e2e.sh [kind-cluster-name]
set -euo pipefail
cd "$(dirname "$0")/../.."
ns=shadowcat-e2e
image=shadowcat:e2e

echo "==> image"
docker build -t "$image" .
if command -v kind >/dev/null && kind get clusters | grep -qx "${1:-kind}"; then
  kind load docker-image "$image" --name "${1:-kind}"
fi

echo "==> chart"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install shadowcat charts/shadowcat -n "$ns" --wait \
  --set image.repository=shadowcat --set image.tag=e2e \
  --set sidecar.image.repository=shadowcat --set sidecar.image.tag=e2e

echo "==> example"
kubectl -n "$ns" apply -f examples/redis.yaml -f examples/mcp-server.yaml -f examples/mcpproxy.yaml
kubectl -n "$ns" wait --for=condition=Ready mcpproxy/everything --timeout=300s
kubectl -n "$ns" rollout status deploy/everything --timeout=300s
containers=$(kubectl -n "$ns" get deploy everything -o jsonpath='{.spec.template.spec.containers[*].name}')
[[ " $containers " == *" shadowcat "* ]] || { echo "sidecar missing: $containers"; exit 1; }

echo "==> calls through the Service, three replicas behind it"
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

echo "==> delete the McpProxy: the sidecar goes"
kubectl -n "$ns" delete mcpproxy everything --wait
kubectl -n "$ns" rollout status deploy/everything --timeout=300s
containers=$(kubectl -n "$ns" get deploy everything -o jsonpath='{.spec.template.spec.containers[*].name}')
[[ " $containers " != *" shadowcat "* ]] || { echo "sidecar still there: $containers"; exit 1; }
echo "e2e: ok"
