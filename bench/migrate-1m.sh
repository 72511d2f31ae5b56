#!/usr/bin/env bash
# Migration, backup and restore of a store of MESSAGES messages (default 1,000,000; issue 13):
# fills a data dir with backend/examples/fill_store.rs, then times
#   ringchat migrate --from embedded:A --to embedded:B   (copy + verification pass)
#   ringchat backup --to BK (server stopped), ringchat verify-backup BK, ringchat restore
# and prints each one's wall time, records/s and the sizes. The test suite does the same with
# 100,000 messages in a debug build (gateway/tests/backup.rs); this is the full-size run.
#   bash bench/migrate-1m.sh        # BIN (default target/release) holds ringchat and
#                                   # examples/fill_store: cargo build --release -p ringchat-gateway
#                                   # && cargo build --release -p ringchat-backend --example fill_store
# MESSAGES, BATCH (records per batch, default 8192), DIR (default /tmp/ringchat-migrate; removed
# at the end unless KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
MESSAGES=${MESSAGES:-1000000}; BATCH=${BATCH:-8192}
DIR=${DIR:-/tmp/ringchat-migrate}
rm -rf "$DIR"; mkdir -p "$DIR"
timed() { # label, command…
  local label=$1; shift
  local t0 t1; t0=$(date +%s.%N)
  "$@" > "$DIR/$label.out" 2> "$DIR/$label.err" || { cat "$DIR/$label.err"; exit 1; }
  t1=$(date +%s.%N)
  awk -v l="$label" -v a="$t0" -v b="$t1" -v n="$MESSAGES" \
    'BEGIN { printf "%-14s %7.1f s  %9.0f messages/s\n", l, b - a, n / (b - a) }'
}
"$BIN/examples/fill_store" --dir "$DIR/a" --messages "$MESSAGES" --users 20000 --convs 10000 \
  | grep '^fill:' || true
echo "source: $(du -sh "$DIR/a" | cut -f1)"
timed migrate "$BIN/ringchat" migrate --from "embedded:$DIR/a" --to "embedded:$DIR/b" --batch-records "$BATCH"
grep -E 'messages|verification' "$DIR/migrate.out"
timed backup env RINGCHAT_STORAGE__DATA_DIR="$DIR/a" "$BIN/ringchat" backup --to "$DIR/bk" --batch-records "$BATCH"
echo "backup: $(du -sh "$DIR/bk" | cut -f1)"
timed verify-backup "$BIN/ringchat" verify-backup "$DIR/bk" --batch-records "$BATCH"
timed restore "$BIN/ringchat" restore --from "$DIR/bk" --data-dir "$DIR/r" --batch-records "$BATCH"
grep verification "$DIR/restore.out"
[ "${KEEP:-0}" = 1 ] || rm -rf "$DIR"
