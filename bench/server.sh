# Starting and stopping a benchmark server; sourced by run-benchmarks.sh and compare.sh.
# Needs OUT (the results dir). Sets server_pid.
server_pid=""
start_server() { # server binary, log name, then RINGCHAT_* overrides; KEEP_DATA=1 keeps the data
  local bin=$1 name=$2; shift 2
  [ "${KEEP_DATA:-0}" = 1 ] || rm -rf /tmp/ringchat-bench-data
  # A restart under the same name must not find the previous "ready" line.
  rm -f "$OUT/$name.server.out"
  env "$@" RINGCHAT_LOG=warn "$bin" serve --config bench/configs/server.toml \
    >"$OUT/$name.server.out" 2>"$OUT/$name.server.log" &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q "ringchat ready" "$OUT/$name.server.out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server for $name did not start" >&2; cat "$OUT/$name.server.log" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; }
