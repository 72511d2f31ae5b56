#!/usr/bin/env bash
# Migration, backup and restore of a store of MESSAGES messages (default 1,000,000; issue 13):
# fills a data dir with backend/examples/fill_store.rs, then times
#   ringchat migrate --from embedded:A --to embedded:B   (copy + verification pass)
#   ringchat backup --to BK (server stopped), ringchat verify-backup BK, ringchat restore
#   ringchat migrate --from embedded:A --to postgres:URL       (PostgreSQL legs; PG=0 skips them)
#   ringchat migrate --from postgres:URL --to embedded:C
# and prints each one's wall time, messages/s and the sizes. The test suite does the same with
# 100,000 messages in a debug build (gateway/tests/backup.rs, gateway/tests/migrate_postgres.rs);
# this is the full-size run. The PostgreSQL legs use a fresh database on
# RINGCHAT_TEST_POSTGRES_URL, or start a private server (scripts/postgres-test-server.sh).
#   bash bench/migrate-1m.sh        # BIN (default target/release) holds ringchat and
#                                   # examples/fill_store: cargo build --release -p ringchat-gateway
#                                   # && cargo build --release -p ringchat-backend --example fill_store
# MESSAGES, BATCH (records per batch, default 8192), DIR (default /tmp/ringchat-migrate; removed
# at the end unless KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${BIN:-target/release}")
MESSAGES=${MESSAGES:-1000000}; BATCH=${BATCH:-8192}
DIR=${DIR:-/tmp/ringchat-migrate}
rm -rf "$DIR"; mkdir -p "$DIR"; DIR=$(realpath "$DIR")
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
timed verify-backup "$BIN/ringchat" verify-backup "$DIR/bk"
timed restore "$BIN/ringchat" restore --from "$DIR/bk" --data-dir "$DIR/r" --batch-records "$BATCH"
grep verification "$DIR/restore.out"
if [ "${PG:-1}" = 1 ]; then
  source scripts/postgres-test-server.sh
  psql=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)
  db="ringchat_bench_$$"
  "$psql" "$RINGCHAT_TEST_POSTGRES_URL" -q -c "CREATE DATABASE $db"
  pg_url="${RINGCHAT_TEST_POSTGRES_URL%/*}/$db"
  # The checkpoint of a copy into PostgreSQL goes in the working directory.
  (cd "$DIR" && timed to-postgres "$BIN/ringchat" migrate --from "embedded:$DIR/a" --to "postgres:$pg_url" --batch-records "$BATCH")
  grep -E 'messages|verification' "$DIR/to-postgres.out"
  timed from-postgres "$BIN/ringchat" migrate --from "postgres:$pg_url" --to "embedded:$DIR/c" --batch-records "$BATCH"
  grep -E 'messages|verification' "$DIR/from-postgres.out"
  "$psql" "$RINGCHAT_TEST_POSTGRES_URL" -q -c "DROP DATABASE $db" || true
fi
[ "${KEEP:-0}" = 1 ] || rm -rf "$DIR"
