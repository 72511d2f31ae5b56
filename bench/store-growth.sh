#!/usr/bin/env bash
# Does a stored message cost more once the store is big? Writes into the conversations of a
# filled store against the same writes into a fresh one (issue 9: within 25 %).
#
#   cargo build --release -p ringchat-backend --example fill_store
#   bash bench/store-growth.sh [FILL_STORE_BIN]   # default target/release/examples/fill_store
#
# Fills one store with MESSAGES (default 15000000) messages over 100,000 conversations, once
# (kept in GROWTH_DIR/filled, reused when it exists), then RUNS (default 3) times, taking
# turns: a fresh fill of WRITES (default 3000000) messages, and WRITES more into a copy of the
# filled store's own conversations (`fill_store --continue 1`). Prints each run's CPU per
# message (all the filler's threads: its writes, the store's flushes and compactions) and the
# medians' ratio. FILL_ARGS (e.g. "--background-threads 2") are passed to every fill_store run,
# the first fill too. Needs about 3 × the filled store's size on disk (~2 GiB per 15 M).
set -euo pipefail
cd "$(dirname "$0")/.."
FILL=${1:-target/release/examples/fill_store}
MESSAGES=${MESSAGES:-15000000}; WRITES=${WRITES:-3000000}; RUNS=${RUNS:-3}
DIR=${GROWTH_DIR:-/tmp/ringchat-store-growth}
mkdir -p "$DIR"
[ -x "$FILL" ] || { echo "no fill_store at $FILL (cargo build --release -p ringchat-backend --example fill_store)" >&2; exit 1; }

cpu_per_msg() { grep -o '[0-9.]* us of CPU per message' "$1" | cut -d' ' -f1; }

if [ ! -d "$DIR/filled" ]; then
  # shellcheck disable=SC2086
  "$FILL" --dir "$DIR/filled" --messages "$MESSAGES" --max-seconds 3600 ${FILL_ARGS:-} \
    | tee "$DIR/filled.txt" | grep -v '^fill: *[0-9]* s '
fi
fresh=(); filled=()
for run in $(seq "$RUNS"); do
  rm -rf "$DIR/fresh"
  # The previous fill's or copy's dirty pages written back now, not during the fresh run.
  sync
  # shellcheck disable=SC2086
  "$FILL" --dir "$DIR/fresh" --messages "$WRITES" --max-seconds 600 ${FILL_ARGS:-} \
    >"$DIR/fresh.$run.txt"
  rm -rf "$DIR/fresh" "$DIR/work"
  cp -a "$DIR/filled" "$DIR/work"
  sync
  # shellcheck disable=SC2086
  "$FILL" --dir "$DIR/work" --continue 1 --messages "$WRITES" --max-seconds 600 ${FILL_ARGS:-} \
    >"$DIR/continue.$run.txt"
  rm -rf "$DIR/work"
  fresh+=("$(cpu_per_msg "$DIR/fresh.$run.txt")")
  filled+=("$(cpu_per_msg "$DIR/continue.$run.txt")")
  echo "run $run: fresh ${fresh[-1]} us/msg, into the filled store ${filled[-1]} us/msg"
done
python3 - "${fresh[*]}" "${filled[*]}" <<'EOF'
import statistics, sys
fresh = [float(x) for x in sys.argv[1].split()]
filled = [float(x) for x in sys.argv[2].split()]
f, g = statistics.median(fresh), statistics.median(filled)
print(f"medians: fresh {f:.2f} us/msg, into the filled store {g:.2f} us/msg: x{g / f:.2f}")
EOF
