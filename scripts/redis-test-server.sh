# Sourced by scripts/test.sh: a private Redis for one test run (gateway/tests/cluster.rs),
# unless RINGCHAT_TEST_REDIS_URL already names a server. Installs Debian's redis-server when
# missing, runs it on 127.0.0.1 on a free port with no persistence (the registry is rebuilt
# by the heartbeats), exports RINGCHAT_TEST_REDIS_URL (and RINGCHAT_TEST_REDIS_SERVER, the
# binary, which the tests use to restart a Redis of their own) and stops it when the shell
# exits, after whatever EXIT trap was already set (the PostgreSQL script's).

if [ -z "${RINGCHAT_TEST_REDIS_URL:-}" ]; then
  if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "the cluster tests need Redis: run 'sudo apt-get install -y redis-server' first, or set RINGCHAT_TEST_REDIS_URL" >&2
      exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
  fi
  redis_dir=$(mktemp -d /tmp/ringchat-redis-test.XXXXXX)
  redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$redis_dir" --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log" \
    --daemonize yes
  for _ in $(seq 100); do
    if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  redis-cli -p "$redis_port" ping >/dev/null || { echo "the test Redis did not start; see $redis_dir/redis.log" >&2; exit 1; }
  stop_test_redis() {
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$redis_dir"
  }
  # Keep the EXIT trap already set (scripts/postgres-test-server.sh's), and run ours too.
  previous_exit_trap=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
  trap "stop_test_redis; ${previous_exit_trap:-:}" EXIT
  export RINGCHAT_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/"
  export RINGCHAT_TEST_REDIS_SERVER=$(command -v redis-server)
  echo "Redis for the tests: $RINGCHAT_TEST_REDIS_URL"
fi
