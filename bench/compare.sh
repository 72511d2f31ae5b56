#!/usr/bin/env bash
# Before/after: the same loads against two server binaries, one after the other on the same
# machine, medians of RUNS runs each, and the after/before ratio of server CPU per message.
#   bash bench/compare.sh BEFORE_DIR AFTER_DIR   # each holds a `ringchat` (and `ringchat-bench`)
# ONLY=pairs|connect picks a subset; PAIRS_CONFIGS="ws 1,tcp 32" (transport window, default all four); CONNECT_SIZES (default "10000 19000"); RUNS (default 3);
# DURATION (default 10s); for pairs also DURABILITY (none), SIZE (64), PAIRS (100) and RATE (unset:
# closed loop); BENCH_EXTRA adds load generator flags to the measured pairs runs (e.g.
# --no-delivery-ack). The load generator is AFTER_DIR's for both, so only the server differs.
# SERVER_ENV_BEFORE / SERVER_ENV_AFTER ("RINGCHAT_X=1 RINGCHAT_Y=2") give each side's pairs servers
# their own settings: with BEFORE_DIR = AFTER_DIR, a comparison of two configurations.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1; AFTER=$2
RUNS=${RUNS:-3}; DURATION=${DURATION:-10s}; ONLY=${ONLY:-all}
OUT=${OUT:-target/bench-results/compare-$(date +%Y%m%d-%H%M%S)}
BENCH=$AFTER/ringchat-bench
mkdir -p "$OUT"
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }

source bench/server.sh
# A failed step ends the script: never with the server still running.
trap '[ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true' EXIT

if want pairs; then
  # Every run on a fresh store, before and after taking turns: the store's growth from run to
  # run (compaction work) would otherwise swamp the difference between the two servers.
  IFS=, read -ra configs <<<"${PAIRS_CONFIGS:-tcp 32,tcp 1,ws 32,ws 1}"
  for cfg in "${configs[@]}"; do
    set -- $cfg; transport=$1; window=$2
    addr=$TCP_ADDR; [ "$transport" = ws ] && addr=$WS_ADDR
    args=(--pairs "${PAIRS:-100}" --size "${SIZE:-64}" --window "$window" --transport "$transport"
      --addr "$addr" --admin "$ADMIN_ADDR" ${RATE:+--rate "$RATE"})
    for run in $(seq "$RUNS"); do
      for side in before after; do
        dir=$BEFORE; [ "$side" = after ] && dir=$AFTER
        name="$side-pairs-$transport-w$window"
        side_env=${SERVER_ENV_BEFORE:-}; [ "$side" = after ] && side_env=${SERVER_ENV_AFTER:-}
        start_server "$dir/ringchat" "$name" RINGCHAT_STORAGE__DURABILITY="${DURABILITY:-none}" $side_env
        # An unmeasured run creates the users and warms the store.
        "$BENCH" pairs --server-pid "$server_pid" --quiet --duration 2s "${args[@]}" >/dev/null
        "$BENCH" pairs --server-pid "$server_pid" --quiet --duration "$DURATION" "${args[@]}" \
          ${BENCH_EXTRA:-} --json "$OUT/$name.$run.json" >"$OUT/$name.$run.txt"
        stop_server
      done
    done
  done
fi

if want connect; then
  for n in ${CONNECT_SIZES:-10000 19000}; do
    for run in $(seq "$RUNS"); do
      for side in before after; do
        dir=$BEFORE; [ "$side" = after ] && dir=$AFTER
        name="$side-connect-$n"
        start_server "$dir/ringchat" "$name" RINGCHAT_STORAGE__DURABILITY=none
        # Users are registered by a first pass; the measured pass only logs in.
        "$BENCH" connect --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" --admin "$ADMIN_ADDR" --conns "$n" --hold 1s >/dev/null
        stop_server
        KEEP_DATA=1 start_server "$dir/ringchat" "$name" RINGCHAT_STORAGE__DURABILITY=none
        "$BENCH" connect --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" --admin "$ADMIN_ADDR" --conns "$n" --hold 5s \
          --json "$OUT/$name.$run.json" >"$OUT/$name.$run.txt"
        stop_server
      done
    done
  done
fi

python3 - "$OUT" <<'PY'
import json, sys, glob, os, statistics
out = sys.argv[1]
groups = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    side, name = os.path.basename(path).rsplit(".", 2)[0].split("-", 1)
    groups.setdefault(name, {}).setdefault(side, []).append(json.load(open(path)))
med = statistics.median
print(f"results in {out}: medians of runs, after/before")
for name, sides in groups.items():
    b, a = sides.get("before", []), sides.get("after", [])
    if not b or not a:
        continue
    if b[0]["scenario"] == "connect":
        m = lambda runs, k: med([r[k] for r in runs])
        print(f"{name:22} KiB/conn marginal {m(b,'server_rss_kib_per_conn_marginal'):.2f} -> "
              f"{m(a,'server_rss_kib_per_conn_marginal'):.2f} "
              f"(runs {[round(r['server_rss_kib_per_conn_marginal'],2) for r in a]}); total "
              f"{m(b,'server_rss_kib_per_conn'):.2f} -> {m(a,'server_rss_kib_per_conn'):.2f}")
    else:
        cpu = lambda runs: med([r["server_cpu_us_per_msg"] for r in runs])
        rate = lambda runs: med([r["delivered_msgs_per_s"] for r in runs])
        p99 = lambda runs: med([r["latency_us"]["p99"] for r in runs])
        # Everything a run counts as wrong (keys absent from an older report count 0).
        bad = sum(r.get(k, 0) for r in a + b for k in
                  ["lost", "unanswered", "unsent", "duplicates", "out_of_order", "corrupt", "errors"])
        runs = lambda rs: [round(r["server_cpu_us_per_msg"], 1) for r in rs]
        print(f"{name:22} cpu/msg {cpu(b):.2f} -> {cpu(a):.2f} us (x{cpu(a)/cpu(b):.2f}; "
              f"runs {runs(b)} -> {runs(a)})  "
              f"msgs/s {rate(b):.0f} -> {rate(a):.0f}  p99 {p99(b):.0f} -> {p99(a):.0f} us  "
              f"problems={bad}")
PY
