#!/usr/bin/env bash
# Issue 17's measurements: sessions being established while others talk, medians of RUNS.
#   bash bench/storm.sh BIN_DIR     # holds `ringchat` and `ringchat-bench` (e.g. target/release)
# Each run, on a fresh server with the default durability:
#   first, second, third: `pairs --pairs 1000 --window 32 --rate 10000 --duration 8s` three times
#     in a row on one server; the first creates its 2,000 users right before it is measured,
#     the next two log the same users in again (the issue's runs 1, 2 and 3);
#   storm: `storm --pairs 1000 --rate 10000 --storm 10000` (token logins) on another fresh server,
#     after an unmeasured 2 s `pairs` run that makes the pairs' users and conversations: the
#     pairs are established sessions, not a first run.
# PAIRS, RATE, DURATION, STORM, STORM_LOGIN (token|password) and RUNS (default 3) change the
# load; ONLY=pairs|storm runs one half; PORT_BASE and BENCH_DATA_DIR as in bench/server.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
RUNS=${RUNS:-3}; ONLY=${ONLY:-all}
PAIRS=${PAIRS:-1000}; RATE=${RATE:-10000}; DURATION=${DURATION:-8s}
STORM=${STORM:-10000}; STORM_LOGIN=${STORM_LOGIN:-token}
OUT=${OUT:-target/bench-results/storm-$(date +%Y%m%d-%H%M%S)}
BENCH=$BIN/ringchat-bench
mkdir -p "$OUT"
# 2 × PAIRS + STORM connections in one load generator process.
need=$((2 * PAIRS + STORM + 256))
ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt "$need" ]; then
  echo "storm.sh: $need open files needed, the limit is $(ulimit -n) (hard $(ulimit -Hn))" >&2
  exit 1
fi
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }

source bench/server.sh
trap '[ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true' EXIT

common=(--server-pid PID --quiet --addr "$TCP_ADDR" --admin "$ADMIN_ADDR")
bench() { # scenario, json name, then the scenario's flags
  local scenario=$1 name=$2; shift 2
  local status=0
  "$BENCH" "$scenario" "${common[@]/PID/$server_pid}" "$@" --json "$OUT/$name.json" \
    >"$OUT/$name.txt" 2>"$OUT/$name.err" || status=$?
  # 2: the run finished but saw losses or failures; the report says which.
  if [ "$status" != 0 ] && [ "$status" != 2 ]; then
    echo "storm.sh: $scenario failed ($status):" >&2; cat "$OUT/$name.err" >&2; exit 1
  fi
}

for run in $(seq "$RUNS"); do
  if want pairs; then
    start_server "$BIN/ringchat" "pairs.$run"
    for nth in first second third; do
      bench pairs "$nth.$run" --pairs "$PAIRS" --window 32 --rate "$RATE" --duration "$DURATION"
    done
    stop_server
  fi
  if want storm; then
    start_server "$BIN/ringchat" "storm.$run"
    bench pairs "warm.$run" --pairs "$PAIRS" --window 32 --rate "$RATE" --duration 2s
    bench storm "storm.$run" --pairs "$PAIRS" --rate "$RATE" --storm "$STORM" \
      --storm-login "$STORM_LOGIN"
    stop_server
  fi
done
server_pid=""

python3 - "$OUT" <<'PY'
import json, sys, glob, os, statistics
out = sys.argv[1]
runs = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    kind = os.path.basename(path).split(".")[0]
    runs.setdefault(kind, []).append(json.load(open(path)))
med = statistics.median
# Everything a run counts as wrong (keys absent from an older report count 0).
PROBLEMS = ["lost", "unanswered", "unsent", "duplicates", "out_of_order", "corrupt", "errors"]
ms = lambda us: f"{us / 1000:.2f}"
print(f"results in {out}: medians of runs (each run's value in brackets)")
for kind in ["first", "second", "third"]:  # "warm" runs are not measurements
    rs = runs.get(kind)
    if not rs:
        continue
    cells = []
    for p in ["p50", "p99", "p999", "max"]:
        vals = [r["latency_us"][p] for r in rs]
        cells.append(f"{p} {ms(med(vals))} ms {[ms(v) for v in vals]}")
    bad = sum(r.get(k, 0) for r in rs for k in PROBLEMS)
    print(f"pairs {kind:6}  " + "  ".join(cells) + f"  problems={bad}")
rs = runs.get("storm", [])
if rs:
    for phase in ["before", "during", "after"]:
        key = f"latency_{phase}_us"
        cells = []
        for p in ["p50", "p99", "p999", "max"]:
            vals = [r[key][p] for r in rs]
            cells.append(f"{p} {ms(med(vals))} ms {[ms(v) for v in vals]}")
        print(f"storm pairs {phase:6}  " + "  ".join(cells))
    alls = [r["all_logged_in_s"] for r in rs]
    done = [a for a in alls if a is not None]
    print(f"storm: all {rs[0]['storm_clients']} logged in within "
          + (f"{med(done):.2f}" if len(done) == len(alls) else "NOT ALL") + " s "
          f"{[None if a is None else round(a, 2) for a in alls]};  logins/s "
          f"{med([r['logins_per_s'] for r in rs]):.0f};  login p99 "
          f"{med([r['login_latency_ms']['p99'] for r in rs]):.0f} ms;  server µs/login "
          f"{med([r['server_cpu_us_per_login'] or 0 for r in rs]):.0f}")
    print("storm: refusals " + str([r["refusals"] for r in rs]) + "  disconnects "
          + str([r["disconnects"] for r in rs]) + "  retries " + str([r["retries"] for r in rs]))
    bad = sum(r.get(k, 0) for r in rs for k in PROBLEMS + ["failures", "dropped_after_login"])
    print(f"storm: reset_before_reply {[r['reset_before_reply'] for r in rs]}  problems={bad}")
PY
