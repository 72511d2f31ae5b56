# Starting and stopping a benchmark server; sourced by run-benchmarks.sh and compare.sh.
# Needs OUT (the results dir). Sets server_pid, and TCP_ADDR, WS_ADDR and ADMIN_ADDR for clients.
# PORT_BASE (default 7000: tcp 7000, ws 7001, admin 8080) and BENCH_DATA_DIR (default
# /tmp/ringchat-bench-data) let two benchmarks share a machine without sharing a server.
server_pid=""
PORT_BASE=${PORT_BASE:-7000}
BENCH_DATA_DIR=${BENCH_DATA_DIR:-/tmp/ringchat-bench-data}
TCP_ADDR=127.0.0.1:$PORT_BASE
WS_ADDR=127.0.0.1:$((PORT_BASE + 1))
ADMIN_ADDR=127.0.0.1:$((PORT_BASE + 1080))
start_server() { # server binary, log name, then RINGCHAT_* overrides; KEEP_DATA=1 keeps the data
  # Sets server_pid and ready_s (seconds from exec to the ready line, polled every 10 ms);
  # START_WAIT_S (default 10) bounds the wait: a big store may open slowly.
  local bin=$1 name=$2; shift 2
  [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$BENCH_DATA_DIR"
  # A restart under the same name must not find the previous "ready" line.
  rm -f "$OUT/$name.server.out"
  local t0; t0=$(date +%s%N)
  env RINGCHAT_GATEWAY__TCP_LISTEN="$TCP_ADDR" RINGCHAT_GATEWAY__WS_LISTEN="$WS_ADDR" \
    RINGCHAT_ADMIN__LISTEN="$ADMIN_ADDR" RINGCHAT_STORAGE__DATA_DIR="$BENCH_DATA_DIR" \
    "$@" RINGCHAT_LOG=warn "$bin" serve --config bench/configs/server.toml \
    >"$OUT/$name.server.out" 2>"$OUT/$name.server.log" &
  server_pid=$!
  for _ in $(seq $((${START_WAIT_S:-10} * 100))); do
    if grep -q "ringchat ready" "$OUT/$name.server.out" 2>/dev/null; then
      local ms=$((($(date +%s%N) - t0) / 1000000))
      ready_s=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.01
  done
  echo "server for $name did not start" >&2; cat "$OUT/$name.server.log" >&2; exit 1
}
# Clears server_pid: an exit trap (`kill "$server_pid"`) must not hit a pid reused since.
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }
