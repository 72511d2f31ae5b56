#!/usr/bin/env bash
# Before/after for group fan-out: the same group load against two server binaries, taking
# turns on fresh servers; RUNS (3), DURATION (10s), GROUP_ARGS (10,000 online at 1 msg/s).
#   bash bench/group-compare.sh BEFORE_DIR AFTER_DIR   # AFTER_DIR's ringchat-bench for both
set -uo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1; AFTER=$2; RUNS=${RUNS:-3}
OUT=${OUT:-target/bench-results/group-compare-$(date +%Y%m%d-%H%M%S)}; mkdir -p $OUT
BENCH=$AFTER/ringchat-bench
ulimit -n 20000
source bench/server.sh
ARGS=${GROUP_ARGS:---members 10000 --online 10000 --senders 1 --size 64 --rate 1}
for run in $(seq $RUNS); do
  for side in before after; do
    dir=$BEFORE; [ $side = after ] && dir=$AFTER
    start_server $dir/ringchat $side-$run
    $BENCH group --server-pid $server_pid --quiet --addr $TCP_ADDR --admin $ADMIN_ADDR $ARGS --duration 2s >/dev/null
    $BENCH group --server-pid $server_pid --quiet --addr $TCP_ADDR --admin $ADMIN_ADDR $ARGS --duration ${DURATION:-10s} --json $OUT/$side.$run.json > $OUT/$side.$run.txt
    stop_server
  done
done
python3 - $OUT <<'PY'
import json,sys,glob,statistics as st
out=sys.argv[1]
for side in ("before","after"):
    rs=[json.load(open(p)) for p in sorted(glob.glob(f"{out}/{side}.*.json"))]
    if not rs: continue
    keys=[k for k in rs[0] if "cpu" in k]
    lat=lambda r,q: r["latency_us"][q]
    print(side, "p50", [lat(r,"p50") for r in rs], "p99", [lat(r,"p99") for r in rs], {k:[round(r[k],2) for r in rs] for k in keys})
PY
