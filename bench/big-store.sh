#!/usr/bin/env bash
# A store that already holds 50 M messages (issue 9, item 4 and the targets table):
#  load:     fills a data dir with MESSAGES messages (backend/examples/fill_store.rs, through the
#            real store and ports), then runs the standard load (`pairs --pairs 100 --size 64
#            --window 32`, durability none, a 2 s unmeasured warm-up then DURATION measured, as
#            compare.sh does) RUNS times on the filled store and RUNS times on a fresh one,
#            taking turns, and prints the medians of server CPU per message and their ratio.
#  recovery: fills RECOVERY_MESSAGES messages, then RUNS times: start the server, load it, kill -9
#            it under load and time the restart until "ringchat ready"; stop it cleanly and time
#            a clean restart. Prints the medians.
#   bash bench/big-store.sh                # BIN (default target/release) holds ringchat,
#                                          # ringchat-bench and examples/fill_store
# ONLY=load|recovery; MESSAGES (default 50000000), RECOVERY_MESSAGES (10000000); FILL_SECONDS
# (default 1500: the fill stops there and says how far it got); FILL_ARGS (more fill_store
# flags); RUNS (3); DURATION (10s); PORT_BASE (7400); BIG_DIR (/tmp/ringchat-big: the data dirs;
# an existing filled dir is reused when REUSE_FILL=1); KEEP_BIG=1 keeps them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
RUNS=${RUNS:-3}; DURATION=${DURATION:-10s}; ONLY=${ONLY:-all}
MESSAGES=${MESSAGES:-50000000}; RECOVERY_MESSAGES=${RECOVERY_MESSAGES:-10000000}
FILL_SECONDS=${FILL_SECONDS:-1500}
BIG_DIR=${BIG_DIR:-/tmp/ringchat-big}
export PORT_BASE=${PORT_BASE:-7400}
OUT=${OUT:-target/bench-results/big-store-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT" "$BIG_DIR"
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
source bench/server.sh
BENCH=$BIN/ringchat-bench

fill() { # data dir, messages, log name
  local dir=$1 n=$2 name=$3
  if [ "${REUSE_FILL:-0}" = 1 ] && [ -d "$dir" ]; then
    echo "reusing $dir"; return 0
  fi
  rm -rf "$dir"
  "$BIN/examples/fill_store" --dir "$dir" --messages "$n" --max-seconds "$FILL_SECONDS" \
    ${FILL_ARGS:-} | tee "$OUT/$name.fill.txt"
  sync
  du -sb "$dir" "$dir"/keyspaces/* 2>/dev/null | tee "$OUT/$name.du.txt" || true
}

# start_server on a given data dir, kept, with a longer wait (a big store may open slowly);
# sets server_pid and ready_s.
start_timed() { # data dir, log name, then RINGCHAT_* overrides
  local dir=$1 name=$2; shift 2
  sleep 1 # the previous server's sockets: its port probe once failed right after a stop
  BENCH_DATA_DIR=$dir KEEP_DATA=1 START_WAIT_S=300 start_server "$BIN/ringchat" "$name" "$@"
}

pairs_args=(--pairs 100 --size 64 --window 32 --transport tcp --addr "$TCP_ADDR" --admin "$ADMIN_ADDR")

if want load; then
  fill "$BIG_DIR/filled" "$MESSAGES" filled
  for run in $(seq "$RUNS"); do
    for side in fresh filled; do
      name="$side-pairs-tcp-w32"
      [ "$side" = fresh ] && rm -rf "$BIG_DIR/fresh"
      start_timed "$BIG_DIR/$side" "$name.$run" RINGCHAT_STORAGE__DURABILITY=none
      echo "$side run $run: ready in $ready_s s"
      # New users each run (on the filled store too, so both runs start with new conversations);
      # the unmeasured run creates them and warms the store.
      "$BENCH" pairs --server-pid "$server_pid" --quiet --duration 2s --user-prefix "r${run}_" \
        "${pairs_args[@]}" >/dev/null
      "$BENCH" pairs --server-pid "$server_pid" --quiet --duration "$DURATION" \
        --user-prefix "r${run}_" "${pairs_args[@]}" \
        --json "$OUT/$name.$run.json" >"$OUT/$name.$run.txt"
      stop_server
    done
  done
  rm -rf "$BIG_DIR/fresh"
  du -sb "$BIG_DIR/filled" | tee "$OUT/filled.after-runs.du.txt"
fi

if want recovery; then
  dir=$BIG_DIR/recovery
  fill "$dir" "$RECOVERY_MESSAGES" recovery
  : >"$OUT/recovery.txt"
  for run in $(seq "$RUNS"); do
    # Under load (durability none: the most journal to replay), then kill -9.
    start_timed "$dir" "crash-load.$run" RINGCHAT_STORAGE__DURABILITY=none
    "$BENCH" pairs --server-pid "$server_pid" --quiet --duration 30s --user-prefix "k${run}_" \
      "${pairs_args[@]}" >"$OUT/crash-load.$run.txt" 2>&1 &
    bench_pid=$!
    sleep 6
    # What the kill leaves: messages stored by this server so far, and the journals to replay.
    stored=$(curl -s "http://$ADMIN_ADDR/metrics" | awk '/^ringchat_messages_stored_total/ {print $2}')
    journals=$(cat "$dir"/*.jnl | wc -c)
    kill -9 "$server_pid"; wait "$server_pid" 2>/dev/null || true
    echo "crash $run: killed after ${stored:-?} messages stored under load; journals $journals B" \
      | tee -a "$OUT/recovery.txt"
    kill "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true
    start_timed "$dir" "crash-restart.$run" RINGCHAT_STORAGE__DURABILITY=none
    echo "crash $run: ready in $ready_s s" | tee -a "$OUT/recovery.txt"
    stop_server
    start_timed "$dir" "clean-restart.$run" RINGCHAT_STORAGE__DURABILITY=none
    echo "clean $run: ready in $ready_s s" | tee -a "$OUT/recovery.txt"
    stop_server
  done
  du -sb "$dir" | tee "$OUT/recovery.after-runs.du.txt"
fi

[ "${KEEP_BIG:-0}" = 1 ] || rm -rf "$BIG_DIR/filled" "$BIG_DIR/recovery"

python3 - "$OUT" <<'PY'
import json, sys, glob, os, re, statistics
out = sys.argv[1]
med = statistics.median
print(f"results in {out}: medians of runs")
runs = {}
for path in sorted(glob.glob(os.path.join(out, "*-pairs-*.json"))):
    side = os.path.basename(path).split("-", 1)[0]
    runs.setdefault(side, []).append(json.load(open(path)))
if "fresh" in runs and "filled" in runs:
    f, b = runs["fresh"], runs["filled"]
    cpu = lambda rs: med([r["server_cpu_us_per_msg"] for r in rs])
    rate = lambda rs: med([r["delivered_msgs_per_s"] for r in rs])
    p99 = lambda rs: med([r["latency_us"]["p99"] for r in rs])
    rss = lambda rs: med([(r.get("server_rss_kib_after") or 0) / 1024 for r in rs])
    each = lambda rs: [round(r["server_cpu_us_per_msg"], 2) for r in rs]
    bad = sum(r["lost"] + r["duplicates"] + r["out_of_order"] + r["errors"] for r in f + b)
    print(f"pairs tcp w32 64 B none: cpu/msg fresh {cpu(f):.2f} us {each(f)} -> filled "
          f"{cpu(b):.2f} us {each(b)}: ratio x{cpu(b)/cpu(f):.2f}")
    print(f"  msgs/s {rate(f):.0f} -> {rate(b):.0f}  p99 {p99(f):.0f} -> {p99(b):.0f} us  "
          f"RSS after {rss(f):.0f} -> {rss(b):.0f} MiB  problems={bad}")
rec = os.path.join(out, "recovery.txt")
if os.path.exists(rec):
    t = {}
    for line in open(rec):
        m = re.match(r"(\w+) \d+: ready in ([\d.]+) s", line)
        if m:
            t.setdefault(m.group(1), []).append(float(m.group(2)))
    for k, v in t.items():
        print(f"restart after {'kill -9 under load' if k == 'crash' else 'a clean stop'}: "
              f"median {med(v):.2f} s to ready (runs {v})")
PY
