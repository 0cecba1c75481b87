#!/bin/sh
# `make bench`: starts a release hub with its own managed Redis (as `make run` does) and
# the fan-out floor (`quorum-hub-bench floor`, a bare broadcaster), then runs
# `quorum-hub-bench suite` against them: vote throughput and latency (G=60, G=3, and at
# half the maximum rate), fan-out to 10,000 registered sessions beside the floor (four
# rounds, taking turns at going first), memory per session, decisions delivered to 4
# webhook endpoints at a receiver in the bench (beside the same over the WebSocket),
# fan-out and memory at 50,000 sessions (or as many as the open-files limit allows),
# redis-benchmark running the same vote script on the same Redis, and the CPU time Redis
# spent per vote, as one table.
# With BENCH_BASELINE set to a commit (one Redis only), that commit's hub is built beside
# this one (target/bench-baseline, kept between runs) and started on a managed Redis of
# its own, and the vote runs (G=60 and G=3) are made on both, taking turns at going first.
# With --cluster first, the hub runs on a local Redis Cluster of 3 primaries and 3 replicas
# instead (scripts/cluster.sh, ports 7201-7206; no redis-benchmark row).
# Extra arguments go to `bench suite` (e.g. --duration 30s --json).
set -eu
cd "$(dirname "$0")/.."
cluster=""
if [ "${1:-}" = "--cluster" ]; then cluster=yes; shift; fi
cargo build --release --locked
baseline="${BENCH_BASELINE:-none}"
[ -z "$cluster" ] || baseline=none
baseline_bin=""
if [ "$baseline" != none ]; then
  if commit=$(git rev-parse --verify --quiet "$baseline^{commit}"); then
    # The previous build's sources, unpacked once per commit, and its own target dir, so
    # that later runs build nothing.
    src="target/bench-baseline/src"
    if [ "$(cat "$src/.commit" 2>/dev/null)" != "$commit" ]; then
      rm -rf "$src" && mkdir -p "$src"
      git archive "$commit" | tar -x -C "$src"
      echo "$commit" >"$src/.commit"
    fi
    echo "building the previous build ($baseline) beside this one" >&2
    CARGO_TARGET_DIR=target/bench-baseline/target \
      cargo build --release --locked --manifest-path "$src/Cargo.toml" -p quorum-hub --bin quorum-hub
    baseline_bin=target/bench-baseline/target/release/quorum-hub
  else
    echo "BENCH_BASELINE=$baseline is not a commit here (a shallow clone?): no comparison" >&2
  fi
fi
dir=$(mktemp -d /tmp/qh-bench.XXXXXX)
hub=""
floor=""
base_hub=""
cleanup() {
  [ -z "$hub" ] || { kill "$hub" 2>/dev/null || true; wait "$hub" 2>/dev/null || true; }
  [ -z "$base_hub" ] || { kill "$base_hub" 2>/dev/null || true; wait "$base_hub" 2>/dev/null || true; }
  [ -z "$floor" ] || { kill "$floor" 2>/dev/null || true; wait "$floor" 2>/dev/null || true; }
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
# 50,000 sessions need more descriptors than most shells allow: raise the limit as far as
# the hard limit (or, with CAP_SYS_RESOURCE, past it); the suite uses what it gets.
ulimit -n 120000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files limit: $(ulimit -n)" >&2
# Rate limits stay on, raised so that they are checked on every call but do not bind.
# --webhook-allow-private lets the hub deliver to the bench's receiver on 127.0.0.1.
# shellcheck disable=SC2086
./target/release/quorum-hub --listen 127.0.0.1:0 $redis --max-sessions 60000 \
  --vote-rate-limit 1000000/60s --session-rate-limit 100000/1s \
  --webhook-allow-private >"$dir/hub.log" 2>&1 &
hub=$!
# Waits until FILE has a line matching PATTERN, polling every 50 ms up to TRIES times;
# fails with the log, saying that WHAT never happened.
wait_for_line() {
  tries=0
  until grep -q "$2" "$1"; do
    tries=$((tries + 1))
    if [ "$tries" -gt "$3" ]; then echo "$4:" >&2; cat "$1" >&2; exit 1; fi
    sleep 0.05
  done
}
# Prints the address a process logged in FILE ("<what> listening on ADDR"), waiting up to
# 30 s for the line.
logged_address() {
  wait_for_line "$1" "listening on [0-9.:]*" 600 "$2 did not start"
  sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$1" | head -n 1
}
addr=$(logged_address "$dir/hub.log" "the hub")
# Ready once its decision listener is subscribed (the log says so).
wait_for_line "$dir/hub.log" "decision listener subscribed" 1200 "the hub never became ready"
compare=""
if [ -n "$baseline_bin" ]; then
  mkdir -p "$dir/baseline"
  # shellcheck disable=SC2086
  "$baseline_bin" --listen 127.0.0.1:0 --data-dir "$dir/baseline" --max-sessions 60000 \
    --vote-rate-limit 1000000/60s --session-rate-limit 100000/1s >"$dir/baseline.log" 2>&1 &
  base_hub=$!
  base_addr=$(logged_address "$dir/baseline.log" "the previous build's hub")
  wait_for_line "$dir/baseline.log" "decision listener subscribed" 1200 "the previous build's hub never became ready"
  compare="--baseline-url ws://$base_addr/ws --baseline-redis-url unix://$dir/baseline/redis.sock --baseline-label $baseline"
fi
./target/release/quorum-hub-bench floor --listen 127.0.0.1:0 2>"$dir/floor.log" &
floor=$!
floor_addr=$(logged_address "$dir/floor.log" "the floor")
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(redis-server --version | cut -d' ' -f1-3)" >&2
# shellcheck disable=SC2086
./target/release/quorum-hub-bench suite --url "ws://$addr/ws" --hub-pid "$hub" \
  --floor-url "ws://$floor_addr/ws" $measure $compare "$@"
