# Sourced by scripts/test.sh: a private PostgreSQL cluster for one test run (the PostgreSQL
# store's conformance suite and gateway/tests/postgres.rs), unless RINGCHAT_TEST_POSTGRES_URL
# already names a server. Installs Debian's postgresql when missing, initdb's a fresh cluster
# into target/pg-test (fsync on: the crash tests rely on it), listens on 127.0.0.1 on a free
# port, exports RINGCHAT_TEST_POSTGRES_URL and stops the cluster when the shell exits.
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` OS user.

if [ -z "${RINGCHAT_TEST_POSTGRES_URL:-}" ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "the PostgreSQL tests need a server: run 'sudo apt-get install -y postgresql' first, or set RINGCHAT_TEST_POSTGRES_URL" >&2
      exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  pg_dir="$PWD/target/pg-test"
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then
    as_pg=(runuser -u postgres --)
    # The postgres user must reach the cluster's directory.
    if ! runuser -u postgres -- test -x "$PWD/target"; then
      pg_dir=$(mktemp -d /tmp/ringchat-pg-test.XXXXXX)
    fi
  fi
  rm -rf "$pg_dir"
  mkdir -p "$pg_dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$pg_dir"; fi
  pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${as_pg[@]}" "$pg_bin/initdb" --pgdata="$pg_dir/data" --username=postgres --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$pg_dir/initdb.log"
  "${as_pg[@]}" "$pg_bin/pg_ctl" --pgdata="$pg_dir/data" --log="$pg_dir/server.log" --wait \
    --options="-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$pg_dir -c fsync=on -c max_connections=400" \
    start >/dev/null
  stop_test_postgres() {
    "${as_pg[@]}" "$pg_bin/pg_ctl" --pgdata="$pg_dir/data" --mode=immediate stop >/dev/null 2>&1 || true
    # A cluster made under /tmp (root runs it as `postgres`) leaves nothing behind.
    case "$pg_dir" in /tmp/ringchat-pg-test.*) rm -rf "$pg_dir" ;; esac
  }
  trap stop_test_postgres EXIT
  export RINGCHAT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "PostgreSQL for the tests: $RINGCHAT_TEST_POSTGRES_URL (cluster in $pg_dir)"
fi
