#!/usr/bin/env bash
# Joins running cluster-enabled redis-servers on 127.0.0.1 into one Redis
# Cluster of primaries (slots spread evenly), and waits until every node
# reports cluster_state:ok.
#   create-cluster.sh PORT PORT PORT...
set -euo pipefail
nodes=()
for port in "$@"; do nodes+=("127.0.0.1:$port"); done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 1 200); do
  ok=1
  for port in "$@"; do
    redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' || ok=0
  done
  [[ $ok == 1 ]] && exit 0
  sleep 0.05
done
echo "create-cluster.sh: the cluster did not become ok" >&2
exit 1
