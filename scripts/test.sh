#!/usr/bin/env bash
# The whole test suite: installs what the browser test needs (Debian's chromium, playwright-core
# from npm), the e-mail tests' SMTP server (Python's aiosmtpd, from PyPI) and schemathesis (the
# admin API's property-based test, in a venv under target/) when missing, then
# runs every test with cargo.
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

cargo test --workspace --locked "$@"
