# Sourced by scripts/test.sh: a private S3-compatible server for one test run (the S3 adapter of
# the files storage, backend/src/files/storage/s3.rs), unless RINGCHAT_TEST_S3_URL already names
# one. The server is moto's (PyPI, pinned; a real S3 REST API over HTTP, with multipart uploads
# and ranged GETs), installed into a venv under target/ when missing. It runs on 127.0.0.1 on a
# free port with a fresh bucket; exports RINGCHAT_TEST_S3_URL, _REGION, _BUCKET, _ACCESS_KEY_ID
# and _SECRET_ACCESS_KEY; and stops when the shell exits, after whatever EXIT trap was already
# set (the PostgreSQL and Redis scripts').

if [ -z "${RINGCHAT_TEST_S3_URL:-}" ]; then
  s3_venv="$PWD/target/s3-test-venv"
  if [ ! -x "$s3_venv/bin/moto_server" ]; then
    python3 -m venv "$s3_venv"
    "$s3_venv/bin/pip" install --quiet 'moto[server]==5.2.1'
  fi
  s3_dir=$(mktemp -d /tmp/ringchat-s3-test.XXXXXX)
  s3_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$s3_venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$s3_dir/moto.log" 2>&1 &
  s3_pid=$!
  s3_url="http://127.0.0.1:$s3_port"
  # Up when it answers; then the bucket (moto takes any credentials).
  s3_request() {
    python3 - "$1" "$2" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[2], method=sys.argv[1])
with urllib.request.urlopen(req, timeout=5) as r:
    sys.exit(0 if r.status < 300 else 1)
EOF
  }
  for _ in $(seq 150); do
    if s3_request GET "$s3_url/" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if ! s3_request PUT "$s3_url/ringchat-test"; then
    echo "the test S3 server did not start; see $s3_dir/moto.log" >&2
    kill "$s3_pid" 2>/dev/null || true
    exit 1
  fi
  stop_test_s3() {
    kill "$s3_pid" 2>/dev/null || true
    wait "$s3_pid" 2>/dev/null || true
    rm -rf "$s3_dir"
  }
  # Keep the EXIT trap already set, and run ours too.
  previous_exit_trap=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
  trap "stop_test_s3; ${previous_exit_trap:-:}" EXIT
  export RINGCHAT_TEST_S3_URL="$s3_url"
  export RINGCHAT_TEST_S3_REGION=us-east-1
  export RINGCHAT_TEST_S3_BUCKET=ringchat-test
  export RINGCHAT_TEST_S3_ACCESS_KEY_ID=ringchat-test
  export RINGCHAT_TEST_S3_SECRET_ACCESS_KEY=ringchat-test-secret
  echo "S3 for the tests: $RINGCHAT_TEST_S3_URL (bucket $RINGCHAT_TEST_S3_BUCKET)"
fi
