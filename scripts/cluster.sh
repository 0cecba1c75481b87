#!/bin/sh
# A local Redis Cluster of 3 primaries and 3 replicas, for trying quorum-hub on a cluster
# and for `make bench-cluster`.
#
#   scripts/cluster.sh start DIR [BASE_PORT]   start it in DIR on 127.0.0.1 ports
#                                              BASE_PORT..BASE_PORT+5 (default 7001), wait
#                                              until it is whole, print its redis+cluster:// URL
#   scripts/cluster.sh stop DIR                stop it
#
# Each node keeps its files in DIR/PORT. The cluster bus of each node listens on its port
# plus 10000.
set -eu

usage() { echo "usage: $0 start DIR [BASE_PORT] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
dir=$2
base=${3:-7001}

case "$action" in
start)
  mkdir -p "$dir"
  ports=""
  for n in 0 1 2 3 4 5; do
    port=$((base + n))
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$dir/$port/nodes.conf" --cluster-node-timeout 2000 \
      --repl-diskless-sync-delay 0 --appendonly yes --appendfsync everysec --save "" \
      --dir "$dir/$port" --daemonize yes --pidfile "$dir/$port/redis.pid" \
      --logfile "$dir/$port/redis.log"
    ports="$ports 127.0.0.1:$port"
  done
  for port in $(seq "$base" $((base + 5))); do
    tries=0
    until redis-cli -p "$port" PING >/dev/null 2>&1; do
      tries=$((tries + 1))
      [ "$tries" -lt 100 ] || { echo "node $port did not start; see $dir/$port/redis.log" >&2; exit 1; }
      sleep 0.1
    done
  done
  # shellcheck disable=SC2086
  redis-cli --cluster create $ports --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
    { cat "$dir/create.log" >&2; exit 1; }
  # Whole: every node says cluster_state:ok and every replica's link is up.
  whole() {
    for port in $(seq "$base" $((base + 5))); do
      redis-cli -p "$port" CLUSTER INFO
      redis-cli -p "$port" INFO replication
    done | grep -c -e 'cluster_state:ok' -e 'master_link_status:up'
  }
  tries=0
  until [ "$(whole)" = 9 ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 300 ] || { echo "the cluster did not become whole" >&2; exit 1; }
    sleep 0.1
  done
  echo "redis+cluster://$(echo $ports | tr ' ' ',')"
  ;;
stop)
  for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  ;;
*) usage ;;
esac
