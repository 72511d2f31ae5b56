#!/usr/bin/env bash
# A 3-node ringchat cluster on this machine (PostgreSQL store of record + Redis, both private,
# from scripts/*-test-server.sh; loopback), measured with ringchat-bench's cluster-pairs
# scenario, every client placed by the status service (GET /assign):
#   same   pairs whose two users are on one node (the conversation's owner is still any node
#          by rendezvous: with 3 nodes about 2 of 3 sends are forwarded to another node's
#          sequencer and their pushes come back; a 1-node run, NODE_CORES=0, has no hop);
#   cross  pairs whose two users are on different nodes (the owner's push crosses gRPC);
#   group  one group of GROUP members spread over the nodes (each pair's two users on
#          different nodes), members sending only to it.
# Server CPU is summed over the three nodes (/proc/PID/stat) per delivered message; medians
# of RUNS runs are printed as a Markdown table (results, one JSON per run, in $OUT).
#
#   bash bench/cluster.sh                                  # release build, defaults below
#   BIN_DIR=target/debug RUNS=1 PAIRS=4 GROUP=4 DURATION=2s bash bench/cluster.sh  # smoke run
#   NODE_CORES=0 LOADS=same bash bench/cluster.sh          # the same load on a 1-node cluster
#
# Pinning for 2 cores: each node runs one gateway shard (gateway.cores) and one backend
# thread; n1's shard is on core 0, n2's on core 1, n3's on core 0 again (NODE_CORES="0 1 0").
# The load generator runs unpinned with BENCH_THREADS (1) threads. Each run takes about
# DURATION plus the set-up of its users; the whole script is bounded by
# RUNS × 3 × (DURATION + DRAIN + set-up).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}; DURATION=${DURATION:-10s}; DRAIN=${DRAIN:-20s}
PAIRS=${PAIRS:-50}; GROUP=${GROUP:-20}; WINDOW=${WINDOW:-4}; SIZE=${SIZE:-64}
NODE_CORES=${NODE_CORES:-0 1 0}; BENCH_THREADS=${BENCH_THREADS:-1}
# Which loads to run (a 1-node baseline, NODE_CORES="0 1" … with one core each, runs only same).
LOADS=${LOADS:-same cross group}
NODES=$(wc -w <<<"$NODE_CORES")
PORT_BASE=${PORT_BASE:-7600}
OUT=${OUT:-target/bench-results/cluster-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --locked -p ringchat-gateway -p ringchat-bench >&2
  BIN_DIR=target/release
fi
SERVER=$BIN_DIR/ringchat; BENCH=$BIN_DIR/ringchat-bench
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# shellcheck source=/dev/null
source scripts/postgres-test-server.sh
# shellcheck source=/dev/null
source scripts/redis-test-server.sh

# One database for this script's nodes, made fresh; each run signs up its own users.
db="ringchat_cluster_bench_$$"
PGOPTIONS="-c client_min_messages=warning" psql -q "$RINGCHAT_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
DB_URL="${RINGCHAT_TEST_POSTGRES_URL%/*}/$db"
PEER_SECRET="cluster-bench-secret-$(date +%s%N)"
REDIS_PREFIX="rc_bench_$$"

pids=(); status_urls=(); admins=()
stop_nodes() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
previous_exit_trap=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
trap "stop_nodes; ${previous_exit_trap:-:}" EXIT

start_node() { # index (1..3), core
  local i=$1 core=$2 base=$((PORT_BASE + 10 * $1))
  local tcp=127.0.0.1:$base ws=127.0.0.1:$((base + 1)) admin=127.0.0.1:$((base + 2)) grpc=127.0.0.1:$((base + 3))
  rm -rf "/tmp/ringchat-cluster-bench-n$i"
  env RINGCHAT_GATEWAY__TCP_LISTEN="$tcp" RINGCHAT_GATEWAY__WS_LISTEN="$ws" \
    RINGCHAT_ADMIN__LISTEN="$admin" RINGCHAT_STORAGE__DATA_DIR="/tmp/ringchat-cluster-bench-n$i" \
    RINGCHAT_GATEWAY__CORES="[$core]" RINGCHAT_BACKEND__WORKER_THREADS=1 \
    RINGCHAT_STORAGE__ENGINE=postgres RINGCHAT_STORAGE__POSTGRES__URL="$DB_URL" \
    RINGCHAT_CLUSTER__ENABLED=true RINGCHAT_CLUSTER__NODE_ID="n$i" RINGCHAT_FILES__ENABLED=false \
    RINGCHAT_CLUSTER__REDIS_URL="$RINGCHAT_TEST_REDIS_URL" RINGCHAT_CLUSTER__REDIS_KEY_PREFIX="$REDIS_PREFIX" \
    RINGCHAT_CLUSTER__PEER_SECRET="$PEER_SECRET" RINGCHAT_CLUSTER__GRPC_LISTEN="$grpc" \
    RINGCHAT_CLUSTER__CLIENT_ADDRS="[\"ws://$ws/ws\"]" RINGCHAT_LOG=warn \
    "$SERVER" serve --config bench/configs/server.toml \
    >"$OUT/n$i.server.out" 2>"$OUT/n$i.server.log" &
  pids+=($!)
  status_urls+=(--status-url "http://$ws/assign")
  admins+=("$admin")
  for _ in $(seq 1000); do
    grep -q "ringchat ready" "$OUT/n$i.server.out" 2>/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.01
  done
  echo "node n$i did not start" >&2; cat "$OUT/n$i.server.log" >&2; exit 1
}

i=1
for core in $NODE_CORES; do start_node "$i" "$core"; i=$((i + 1)); done
# Every node must see all three before clients are placed (they then agree on the owners).
for _ in $(seq 500); do
  seen=0
  for a in "${admins[@]}"; do
    curl -s "http://$a/metrics" | grep -q "^ringchat_cluster_nodes $NODES\$" && seen=$((seen + 1))
  done
  [ "$seen" = "${#admins[@]}" ] && break
  sleep 0.02
done
[ "$seen" = "${#admins[@]}" ] || { echo "the nodes did not all see each other" >&2; exit 1; }

server_pids=(); for pid in "${pids[@]}"; do server_pids+=(--server-pid "$pid"); done
common=("${status_urls[@]}" "${server_pids[@]}" --quiet --threads "$BENCH_THREADS"
  --size "$SIZE" --window "$WINDOW" --duration "$DURATION" --drain-timeout "$DRAIN")
for run in $(seq "$RUNS"); do
  for load in $LOADS; do
    case $load in
      same | cross)
        "$BENCH" cluster-pairs "${common[@]}" --placement "$load" --pairs "$PAIRS" \
          --user-prefix "$load${run}_" --json "$OUT/$load.$run.json" >"$OUT/$load.$run.txt" ;;
      # Cross placement spreads the group's members over at least two nodes.
      group)
        "$BENCH" cluster-pairs "${common[@]}" --placement cross --pairs $(((GROUP + 1) / 2)) \
          --group-members "$GROUP" --group-only \
          --user-prefix "group${run}_" --json "$OUT/group.$run.json" >"$OUT/group.$run.txt" ;;
      *) echo "unknown load $load" >&2; exit 2 ;;
    esac
  done
done
stop_nodes

python3 - "$OUT" "$RUNS" "$NODES" $LOADS <<'PY'
import json, statistics, sys
out, runs, nodes, loads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
med = statistics.median
def load(name):
    return [json.load(open(f"{out}/{name}.{r}.json")) for r in range(1, runs + 1)]
rows = {n: load(n) for n in loads}
def m(name, f):
    vals = [f(r) for r in rows[name] if f(r) is not None]
    return med(vals) if vals else None
def fmt(v, d=1):
    return "n/a" if v is None else f"{v:,.{d}f}"
print(f"results in {out}: medians of {runs} runs; server CPU summed over {nodes} node(s)")
print()
print("| load | cross-node pairs / group nodes | delivered/s | server CPU µs per delivered msg | p50 µs | p99 µs | clean |")
print("|---|---|---|---|---|---|---|")
for name, label in (("same", "pairs, same node"), ("cross", "pairs, cross node"), ("group", "group fan-out")):
    if name not in rows:
        continue
    where = m(name, lambda r: r["group_nodes"] if name == "group" else r["cross_node_pairs"])
    clean = all(r["lost"] == 0 and r["seq_gaps"] == 0 and r["stored_twice"] == 0 and r["acked_missing"] == 0 and r["errors"] == 0 and r.get("drops", 0) == 0 for r in rows[name])
    print(f"| {label} | {fmt(where, 0)} | {fmt(m(name, lambda r: r['delivered_msgs_per_s']), 0)} "
          f"| {fmt(m(name, lambda r: r['server_cpu_us_per_msg']))} "
          f"| {fmt(m(name, lambda r: r['latency_us']['p50']), 0)} | {fmt(m(name, lambda r: r['latency_us']['p99']), 0)} | {'yes' if clean else 'NO'} |")
if "same" not in rows or "cross" not in rows:
    sys.exit(0)
hop = lambda f: None if m("cross", f) is None or m("same", f) is None else m("cross", f) - m("same", f)
print()
print(f"gRPC hop (cross − same): p50 {fmt(hop(lambda r: r['latency_us']['p50']), 0)} µs, "
      f"p99 {fmt(hop(lambda r: r['latency_us']['p99']), 0)} µs, "
      f"server CPU {fmt(hop(lambda r: r['server_cpu_us_per_msg']))} µs per message")
PY
