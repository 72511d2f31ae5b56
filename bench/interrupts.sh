#!/usr/bin/env bash
# Interrupts per message: rescheduling and function-call IPIs and TLB shootdowns, machine-wide,
# counted from /proc/interrupts across one measured `pairs` run (100 pairs, 64 B, `none`),
# with the server's CPU per message. A way to see wake-up costs that CPU figures hide in noise.
#   bash bench/interrupts.sh BIN_DIR WINDOW [RINGCHAT_X=… …]   # BIN_DIR holds ringchat and ringchat-bench
# DURATION (default 8s). Run it on an otherwise idle machine: the counts are the whole box's.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1; window=$2; shift 2
OUT=${OUT:-target/bench-results/interrupts-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
source bench/server.sh
start_server "$dir/ringchat" interrupts RINGCHAT_STORAGE__DURABILITY=none "$@"
args=(--pairs 100 --size 64 --window "$window" --addr "$TCP_ADDR" --admin "$ADMIN_ADDR")
"$dir/ringchat-bench" pairs --server-pid "$server_pid" --quiet --duration 2s "${args[@]}" >/dev/null
counts() { awk '$1 ~ /^(RES|CAL|TLB):$/ { n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; printf "%s %d ", $1, n }' /proc/interrupts; }
before=$(counts)
"$dir/ringchat-bench" pairs --server-pid "$server_pid" --quiet --duration "${DURATION:-8s}" "${args[@]}" \
  --json "$OUT/pairs.json" >"$OUT/pairs.txt"
after=$(counts)
stop_server
python3 - "$before" "$after" "$OUT/pairs.json" <<'PY'
import json, sys
before, after = sys.argv[1].split(), sys.argv[2].split()
report = json.load(open(sys.argv[3]))
messages = report["delivered"]
per = {before[i]: (int(after[i + 1]) - int(before[i + 1])) / messages for i in range(0, len(before), 2)}
print(f"messages {messages}  server CPU {report['server_cpu_us_per_msg']:.2f} us/msg  "
      + "  ".join(f"{k} {v:.3f}/msg" for k, v in per.items()))
PY
