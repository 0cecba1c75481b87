#!/bin/sh
# `make cluster`: a local Redis Cluster (3 primaries, 3 replicas, ports 7001-7006) in a
# temporary directory, and two hubs on it (:8080 and :8081, each serving the dashboard).
# Ctrl-C stops the hubs and the cluster and removes the directory.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked -p quorum-hub
dir=$(mktemp -d /tmp/qh-cluster.XXXXXX)
hubs=""
stop() {
  for pid in $hubs; do kill "$pid" 2>/dev/null || true; done
  for pid in $hubs; do wait "$pid" 2>/dev/null || true; done
  scripts/cluster.sh stop "$dir"
  rm -rf "$dir"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT
url=$(scripts/cluster.sh start "$dir" "${CLUSTER_BASE_PORT:-7001}")
echo "cluster: $url (files in $dir)"
for port in 8080 8081; do
  ./target/release/quorum-hub --listen "127.0.0.1:$port" --redis-url "$url" ${HUB_ARGS:-} &
  hubs="$hubs $!"
done
echo "hubs: http://127.0.0.1:8080 and http://127.0.0.1:8081 (Ctrl-C stops everything)"
wait
