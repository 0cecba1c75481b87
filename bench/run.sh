#!/bin/sh
# `make bench`: starts a release hub with its own managed Redis (as `make run` does),
# then runs `quorum-hub bench suite` against it: vote throughput and latency (G=60, G=3,
# and at half the maximum rate), fan-out to 10,000 sessions, memory per session, and
# redis-benchmark running the same vote script on the same Redis, and the CPU time Redis
# spent per vote, as one table.
# With --cluster first, the hub runs on a local Redis Cluster of 3 primaries and 3 replicas
# instead (scripts/cluster.sh, ports 7201-7206; no redis-benchmark row).
# Extra arguments go to `bench suite` (e.g. --duration 30s --json).
set -eu
cd "$(dirname "$0")/.."
cluster=""
if [ "${1:-}" = "--cluster" ]; then cluster=yes; shift; fi
cargo build --release --locked
dir=$(mktemp -d /tmp/qh-bench.XXXXXX)
hub=""
cleanup() {
  [ -z "$hub" ] || { kill "$hub" 2>/dev/null || true; wait "$hub" 2>/dev/null || true; }
  [ -z "$cluster" ] || scripts/cluster.sh stop "$dir/cluster"
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
if [ -n "$cluster" ]; then
  url=$(scripts/cluster.sh start "$dir/cluster" 7201)
  redis="--redis-url $url"
  measure="--redis-url $url"
else
  redis="--data-dir $dir"
  measure="--redis-socket $dir/redis.sock --redis-url unix://$dir/redis.sock"
fi
# Rate limits stay on, raised so that they are checked on every call but do not bind.
# shellcheck disable=SC2086
./target/release/quorum-hub --listen 127.0.0.1:0 $redis --max-sessions 30000 \
  --vote-rate-limit 1000000/60s --session-rate-limit 100000/1s >"$dir/hub.log" 2>&1 &
hub=$!
addr=""
tries=0
while [ -z "$addr" ]; do
  addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$dir/hub.log" | head -n 1)
  tries=$((tries + 1))
  if [ "$tries" -gt 600 ]; then echo "the hub did not start:" >&2; cat "$dir/hub.log" >&2; exit 1; fi
  [ -n "$addr" ] || sleep 0.05
done
# Ready once its decision listener is subscribed (the log says so).
until grep -q "decision listener subscribed" "$dir/hub.log"; do
  tries=$((tries + 1))
  if [ "$tries" -gt 1200 ]; then echo "the hub never became ready:" >&2; cat "$dir/hub.log" >&2; exit 1; fi
  sleep 0.05
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(redis-server --version | cut -d' ' -f1-3)" >&2
# shellcheck disable=SC2086
./target/release/quorum-hub bench suite --url "ws://$addr/ws" --hub-pid "$hub" $measure "$@"
