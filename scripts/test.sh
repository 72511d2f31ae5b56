#!/usr/bin/env bash
# The whole test suite: installs what the browser test needs (Debian's chromium, playwright-core
# from npm), the e-mail tests' SMTP server (Python's aiosmtpd, from PyPI), the S3 tests' server
# (moto, from PyPI, in a venv under target/) and schemathesis (the
# admin API's property-based test, in a venv under target/) when missing, then
# runs every test with cargo, then the gateway's integration tests again on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the browser test needs Debian's chromium: run 'sudo apt-get install -y chromium' first" >&2
    exit 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
if [ ! -d web-tests/node_modules/playwright-core ]; then
  npm ci --prefix web-tests --no-audit --no-fund
fi

if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m pip install --quiet 'aiosmtpd==1.4.6'
fi

# The admin API's property-based test (gateway/tests/admin_openapi.rs) runs schemathesis.
if [ ! -x target/schemathesis-venv/bin/schemathesis ]; then
  python3 -m venv target/schemathesis-venv
  target/schemathesis-venv/bin/pip install --quiet 'schemathesis==4.32.5'
fi

# The PostgreSQL store's tests: a private server for this run (scripts/postgres-test-server.sh).
source scripts/postgres-test-server.sh
# Cluster tests: a private Redis for this run (scripts/redis-test-server.sh).
source scripts/redis-test-server.sh
# The files storage's S3 adapter: a private S3-compatible server (scripts/s3-test-server.sh).
source scripts/s3-test-server.sh

cargo test --workspace --locked "$@"

# The gateway's integration tests again with every server on PostgreSQL (RINGCHAT_TEST_STORE:
# gateway/tests/common/store.rs gives each server a database of its own on the server above).
# Left out, as their servers touch the store no differently: browser, browser_admin and
# browser_files (the web UI), restart (listening sockets across restarts), tls (handshakes), cli and deploy_files (config parsing; they start no TestServer); postgres,
# postgres_restart, migrate_postgres and every cluster* test (they run on PostgreSQL in the pass above); and the embedded engine's own tests, which return early on
# PostgreSQL saying so: backup (fjall backup/restore/migrate of a data dir), disk_full and
# power_loss (the file system under the data dir).
pg_left_out=" browser browser_admin browser_files restart tls cli postgres postgres_restart migrate_postgres deploy_files backup disk_full power_loss "
pg_tests=()
for f in gateway/tests/*.rs; do
  t=$(basename "$f" .rs)
  [[ $pg_left_out == *" $t "* || $t == cluster* ]] || pg_tests+=(--test "$t")
done
echo "== the gateway's integration tests on PostgreSQL (RINGCHAT_TEST_STORE=postgres)"
time RINGCHAT_TEST_STORE=postgres cargo test -p ringchat-gateway --locked "${pg_tests[@]}"
