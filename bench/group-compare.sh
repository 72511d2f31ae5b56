#!/usr/bin/env bash
# Before/after for group fan-out: the same group load against two server binaries, taking
# turns on fresh servers; RUNS (3), DURATION (10s), GROUP_ARGS (10,000 online at 1 msg/s).
#   bash bench/group-compare.sh BEFORE_DIR AFTER_DIR   # AFTER_DIR's ringchat-bench for both
# A run that saw problems (exit 2) is kept and counted in the summary; any other failure ends
# the script, its server stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1; AFTER=$2; RUNS=${RUNS:-3}
OUT=${OUT:-target/bench-results/group-compare-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
BENCH=$AFTER/ringchat-bench
ulimit -n 20000
source bench/server.sh
trap '[ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true' EXIT
ARGS=${GROUP_ARGS:---members 10000 --online 10000 --senders 1 --size 64 --rate 1}
measured() { # name, then the command
  local name=$1 status=0; shift
  "$@" || status=$?
  case $status in
    0) ;;
    2) echo "$name: problems (see its .txt and .json in $OUT)" >&2 ;;
    *) echo "$name: failed ($status)" >&2; exit "$status" ;;
  esac
}
for run in $(seq "$RUNS"); do
  for side in before after; do
    dir=$BEFORE; [ "$side" = after ] && dir=$AFTER
    start_server "$dir/ringchat" "$side-$run"
    # $ARGS is a list of flags: split on purpose.
    # shellcheck disable=SC2086
    measured "$side $run warm-up" "$BENCH" group --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" \
      --admin "$ADMIN_ADDR" $ARGS --duration 2s >/dev/null
    # shellcheck disable=SC2086
    measured "$side $run" "$BENCH" group --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" \
      --admin "$ADMIN_ADDR" $ARGS --duration "${DURATION:-10s}" --json "$OUT/$side.$run.json" \
      >"$OUT/$side.$run.txt"
    stop_server
  done
done
python3 - "$OUT" <<'PY'
import json,sys,glob,os
out=sys.argv[1]
# Everything a run counts as wrong (keys absent from an older report count 0).
PROBLEMS=["lost","unanswered","unsent","duplicates","out_of_order","corrupt","errors"]
# A paced group run must have every send taken (GroupReport::clean).
def problems(r):
    paced_refused = r.get("rate_limited", 0) if r.get("rate_target_msgs_per_s") else 0
    return sum(r.get(k, 0) for k in PROBLEMS) + paced_refused
for side in ("before","after"):
    paths=sorted(glob.glob(f"{out}/{side}.*.json"), key=lambda p: int(os.path.basename(p).split(".")[1]))
    rs=[json.load(open(p)) for p in paths]
    if not rs: continue
    keys=[k for k in rs[0] if "cpu" in k]
    lat=lambda r,q: r["latency_us"][q]
    print(side, "p50", [lat(r,"p50") for r in rs], "p99", [lat(r,"p99") for r in rs],
          {k:[round(r[k],2) if r[k] is not None else None for r in rs] for k in keys},
          "problems", [problems(r) for r in rs])
PY
