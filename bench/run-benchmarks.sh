#!/usr/bin/env bash
# Runs every benchmark that docs/BENCHMARKS.md reports, against a release build on this machine,
# and prints the median of RUNS runs per configuration. Results (one JSON per run) go to $OUT.
#
#   bash bench/run-benchmarks.sh            # all of them (about 15 minutes)
#   ONLY=pairs bash bench/run-benchmarks.sh # a subset: connect, pairs, drivers, shards, ws, paced,
#                                           # presence, group, room, postgres
#
# Connection counts are limited by RLIMIT_NOFILE (server and load generator each need one
# descriptor per connection; both raise their soft limit to the hard one). CONNECT_SIZES
# overrides the default "10000 19000" (this sandbox's hard limit is 20000). python3 prints the
# summary.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
OUT=${OUT:-target/bench-results/$(date +%Y%m%d-%H%M%S)}
ONLY=${ONLY:-all}
mkdir -p "$OUT"
cargo build --release --locked -p ringchat-gateway -p ringchat-bench >&2
SERVER=target/release/ringchat
BENCH=target/release/ringchat-bench
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

source bench/server.sh
# A failed step ends the script: never with the server still running.
trap '[ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true' EXIT

measured() { # name (for messages), then the command: a run that saw problems (exit 2) is kept
  # (its JSON says which, and the summary counts them) and the series goes on; any other
  # failure ends the script.
  local name=$1 status=0; shift
  "$@" || status=$?
  case $status in
    0) ;;
    2) echo "$name: problems (see its .txt and .json in $OUT)" >&2 ;;
    *) echo "$name: failed ($status)" >&2; exit "$status" ;;
  esac
}

pairs() { # name, bench args (the tcp listener unless they name an --addr)...
  local name=$1; shift
  [[ " $* " == *" --addr "* ]] || set -- "$@" --addr "$TCP_ADDR"
  set -- "$@" --admin "$ADMIN_ADDR"
  # One unmeasured run creates the users and warms the store.
  measured "$name warm-up" "$BENCH" pairs --server-pid "$server_pid" --quiet --duration 2s "$@" >/dev/null
  for run in $(seq "$RUNS"); do
    [ -z "${STORE_PID_FILE:-}" ] || store_cpu_s >"$OUT/$name.$run.store0"
    measured "$name run $run" "$BENCH" pairs --server-pid "$server_pid" --quiet --duration "$DURATION" "$@" \
      --json "$OUT/$name.$run.json" --html "$OUT/$name.$run.html" >"$OUT/$name.$run.txt"
    if [ -n "${STORE_PID_FILE:-}" ]; then
      awk -v a="$(cat "$OUT/$name.$run.store0")" -v b="$(store_cpu_s)" 'BEGIN { print b - a }' \
        >"$OUT/$name.$run.store_cpu_s"
      rm "$OUT/$name.$run.store0"
    fi
  done
}

# CPU seconds used so far by a networked store's server: the process in the first line of
# STORE_PID_FILE (PostgreSQL's postmaster.pid) and its children (one backend per pooled
# connection, the WAL writer, the checkpointer...). Pooled connections live as long as the
# ringchat server, so nothing that did the run's work exits before it is counted.
store_cpu_s() {
  python3 - "$(head -n 1 "$STORE_PID_FILE")" <<'PY'
import os, sys
root = sys.argv[1]
ticks = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    fields = stat[stat.rindex(")") + 2:].split()
    if pid == root or fields[1] == root:  # fields[1] is the parent pid
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
print(ticks / os.sysconf("SC_CLK_TCK"))
PY
}

want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }

if want connect; then
  for n in ${CONNECT_SIZES:-10000 19000}; do
    for run in $(seq "$RUNS"); do
      start_server "$SERVER" "connect-$n" RINGCHAT_STORAGE__DURABILITY=none
      # Users are registered by a first pass; the measured pass only logs in.
      measured connect "$BENCH" connect --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" --admin "$ADMIN_ADDR" --conns "$n" --hold 1s >/dev/null
      stop_server
      KEEP_DATA=1 start_server "$SERVER" "connect-$n" RINGCHAT_STORAGE__DURABILITY=none
      measured connect "$BENCH" connect --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" --admin "$ADMIN_ADDR" --conns "$n" --hold 5s \
        --json "$OUT/connect-$n.$run.json" >"$OUT/connect-$n.$run.txt"
      stop_server
    done
  done
fi

if want pairs; then
  for durability in none fsync; do
    start_server "$SERVER" "pairs-$durability" RINGCHAT_STORAGE__DURABILITY=$durability
    for size in 64 1024; do
      for window in 1 32; do
        pairs "pairs-$durability-${size}B-w$window" --pairs 100 --size "$size" --window "$window"
      done
    done
    stop_server
  done
fi

if want drivers; then
  for driver in io_uring epoll; do
    start_server "$SERVER" "driver-$driver" RINGCHAT_STORAGE__DURABILITY=none RINGCHAT_GATEWAY__DRIVER=$driver
    pairs "driver-$driver" --pairs 100 --size 64 --window 32
    stop_server
  done
fi

if want shards; then
  for cores in "[0]" "[0, 1]"; do
    name="shards-$(echo "$cores" | tr -cd ',' | wc -c)"
    start_server "$SERVER" "$name" RINGCHAT_STORAGE__DURABILITY=none "RINGCHAT_GATEWAY__CORES=$cores"
    pairs "$name" --pairs 100 --size 64 --window 32
    stop_server
  done
fi

if want ws; then
  start_server "$SERVER" websocket RINGCHAT_STORAGE__DURABILITY=none
  pairs "ws-64B-w32" --pairs 100 --size 64 --window 32 --transport ws --addr "$WS_ADDR"
  pairs "ws-64B-w1" --pairs 100 --size 64 --window 1 --transport ws --addr "$WS_ADDR"
  stop_server
fi

if want paced; then
  start_server "$SERVER" paced RINGCHAT_STORAGE__DURABILITY=fsync
  pairs "paced-1000pairs-10k" --pairs 1000 --size 64 --window 64 --rate 10000
  stop_server
fi

if want presence; then
  # Presence fan-out: every change pushed at once (no coalescing), so each change costs exactly
  # one push per online friend. The first run makes the users and friendships.
  start_server "$SERVER" presence RINGCHAT_PRESENCE__QUIET_PERIOD_MS=0
  measured presence-fanout "$BENCH" presence-fanout --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" --admin "$ADMIN_ADDR" \
    --friends 1000 --changes 20 >/dev/null
  for run in $(seq "$RUNS"); do
    measured presence-fanout "$BENCH" presence-fanout --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" --admin "$ADMIN_ADDR" \
      --friends 1000 --changes 200 --json "$OUT/presence-fanout-1000.$run.json" \
      >"$OUT/presence-fanout-1000.$run.txt"
  done
  # Login storm: 10,000 users with 100 friends each log in at once (token logins) and list
  # their friends with presence. Friendships made by the first run are kept for the next.
  for run in $(seq "$RUNS"); do
    measured login-storm "$BENCH" login-storm --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" --admin "$ADMIN_ADDR" \
      --users "${STORM_USERS:-10000}" --friends 100 --json "$OUT/login-storm.$run.json" \
      >"$OUT/login-storm.$run.txt"
  done
  stop_server
fi

group() { # name, bench args...: one unmeasured run makes the users, then RUNS measured runs
  local name=$1; shift
  measured "$name warm-up" "$BENCH" group --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" \
    --admin "$ADMIN_ADDR" "$@" --duration 2s >/dev/null
  for run in $(seq "$RUNS"); do
    measured "$name run $run" "$BENCH" group --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" \
      --admin "$ADMIN_ADDR" "$@" --duration "$DURATION" --json "$OUT/$name.$run.json" \
      >"$OUT/$name.$run.txt"
  done
}

if want group; then
  # Group fan-out at the default durability (fsync). A group of 100, all online, one sender
  # with 32 in flight: the server CPU per delivery.
  start_server "$SERVER" group-100
  group "group-100-w32" --members 100 --online 100 --senders 1 --size 64 --window 32
  stop_server
  # 10,000 online members, one message a second: send to the last member.
  start_server "$SERVER" group-10k
  group "group-10k-online" --members 10000 --online 10000 --senders 1 --size 64 --rate 1
  stop_server
  # 1,000 online members, 100 messages a second, in groups of 1,000 to 100,000 members: the
  # server CPU per message must not grow with the members who are offline.
  # The bench's owner is a member while it invites (it hands the group over and leaves after):
  # one more than 100,000 for that moment.
  start_server "$SERVER" group-big RINGCHAT_GROUPS__MEMBERS_MAX=100001
  for members in 1000 10000 100000; do
    group "group-$members-members-1000-online" --members "$members" --online 1000 --senders 10 \
      --size 64 --rate 100
  done
  stop_server
fi

if want postgres; then
  # PostgreSQL as the store of record next to the embedded store, at the default durability
  # (fsync: synchronous_commit on): 100 pairs at W=32, and paced. A private PostgreSQL cluster
  # (scripts/postgres-test-server.sh, fsync on) with a fresh database per server; its CPU is
  # counted with the server's (store_cpu_s). RINGCHAT_TEST_POSTGRES_URL names another server.
  source scripts/postgres-test-server.sh
  STORE_PID_FILE=${STORE_PID_FILE:-$pg_dir/data/postmaster.pid}
  for engine in embedded postgres; do
    extra=()
    if [ "$engine" = postgres ]; then
      db="bench_$(date +%s)_$RANDOM"
      psql -q -d "$RINGCHAT_TEST_POSTGRES_URL" -c "CREATE DATABASE $db" >/dev/null
      extra=(RINGCHAT_STORAGE__ENGINE=postgres "RINGCHAT_STORAGE__POSTGRES__URL=${RINGCHAT_TEST_POSTGRES_URL%/*}/$db")
    fi
    start_server "$SERVER" "store-$engine" "${extra[@]}"
    pairs "store-$engine-64B-w32" --pairs 100 --size 64 --window 32
    pairs "store-$engine-paced" --pairs 1000 --size 64 --window 64 --rate 10000
    stop_server
  done
  unset STORE_PID_FILE
fi

if want room; then
  # Chat room fan-out: M members in one room, S of them sending at an aggregate rate; every
  # member checks every delivery. The room's budgets are raised above the offered rate.
  # ROOM_MEMBERS, ROOM_SENDERS, ROOM_RATE override the defaults (1000 members, 2 senders,
  # 500 msg/s: 499,000 deliveries a second).
  members=${ROOM_MEMBERS:-1000} senders=${ROOM_SENDERS:-2} rate=${ROOM_RATE:-500}
  start_server "$SERVER" room RINGCHAT_ROOMS__MESSAGES_PER_S_MAX=1000000 \
    RINGCHAT_ROOMS__USER_MESSAGES_PER_S_MAX=1000000 "RINGCHAT_ROOMS__MEMBERS_MAX=$members"
  for run in $(seq "$RUNS"); do
    measured "room run $run" "$BENCH" room --server-pid "$server_pid" --quiet --addr "$TCP_ADDR" --admin "$ADMIN_ADDR" \
      --members "$members" --senders "$senders" --size 64 --rate "$rate" --duration "$DURATION" \
      --json "$OUT/room-$members-$senders.$run.json" >"$OUT/room-$members-$senders.$run.txt"
  done
  stop_server
fi

server_pid=""
python3 - "$OUT" <<'PY'
import json, sys, glob, os, statistics
out = sys.argv[1]
groups = {}
for path in glob.glob(os.path.join(out, "*.json")):
    name, run, _ = os.path.basename(path).rsplit(".", 2)
    groups.setdefault(name, []).append((int(run), json.load(open(path))))
# Each configuration's runs in run order (1, 2, ..., 10: not as the file names sort), with
# their run numbers for the files written next to them.
run_numbers = {name: sorted(n for n, _ in rs) for name, rs in groups.items()}
groups = {name: [r for _, r in sorted(rs, key=lambda x: x[0])] for name, rs in sorted(groups.items())}
med = lambda xs: statistics.median(xs) if xs else float("nan")
# Everything a run counts as wrong (keys absent from an older report count 0).
PROBLEMS = ["lost", "unanswered", "unsent", "duplicates", "out_of_order", "corrupt", "errors"]
# A paced group run must have every send taken (GroupReport::clean; pairs counts its
# refusals in errors already).
def paced_refused(r):
    return r.get("rate_limited", 0) if r["scenario"] == "group" and r.get("rate_target_msgs_per_s") else 0
problems = lambda runs: sum(sum(r.get(k, 0) for k in PROBLEMS) + paced_refused(r) for r in runs)
print(f"results in {out}: median of runs per configuration")
for name, runs in groups.items():
    r0 = runs[0]
    if r0["scenario"] == "presence-fanout":
        print(f"{name:34} runs={len(runs)} friends={r0['friends']} changes={r0['changes']} "
              f"fanout_p50={med([r['fanout_ms_p50'] for r in runs]):.2f}ms "
              f"p99={med([r['fanout_ms_p99'] for r in runs]):.2f}ms "
              f"cpu/update={med([r['server_cpu_us_per_update'] for r in runs]):.3f}us "
              f"problems={sum(r['lost'] + r['duplicates'] + r['wrong_state'] + (r['friends'] * r['changes'] - r['delivered']) for r in runs)}")
        continue
    if r0["scenario"] == "room":
        print(f"{name:34} runs={len(runs)} members={r0['members']} senders={r0['senders']} "
              f"deliveries/s={med([r['deliveries_per_s'] for r in runs]):.0f} "
              f"p50={med([r['latency_ms_p50'] for r in runs]):.2f}ms "
              f"p99={med([r['latency_ms_p99'] for r in runs]):.2f}ms "
              f"cpu/delivery={med([r['server_cpu_us_per_delivery'] for r in runs]):.3f}us "
              f"problems={problems(runs)}")
        continue
    if r0["scenario"] == "login-storm":
        print(f"{name:34} runs={len(runs)} users={r0['users']} friends={r0['friends_per_user']} "
              f"snapshot_p50={med([r['snapshot_ms_p50'] for r in runs]):.0f}ms "
              f"p99={med([r['snapshot_ms_p99'] for r in runs]):.0f}ms "
              f"storm={med([r['storm_s'] for r in runs]):.1f}s "
              f"cpu/login={med([r['server_cpu_us_per_login'] for r in runs]):.0f}us "
              f"errors={sum(r['errors'] for r in runs)} "
              f"friends_missing={sum(r['users'] * r['friends_per_user'] - r['friends_listed'] for r in runs)} "
              f"not_logged_in={sum(r['users'] - r['logged_in'] for r in runs)}")
        continue
    if r0["scenario"] == "group":
        lat = lambda k: med([r["latency_us"][k] for r in runs])
        bad = problems(runs)
        print(f"{name:34} runs={len(runs)} members={r0['members']} online={r0['online']} "
              f"deliveries/s={med([r['deliveries_per_s'] for r in runs]):.0f} "
              f"to_last_p50={lat('p50'):.0f}us p99={lat('p99'):.0f}us "
              f"cpu/delivery={med([r['server_cpu_us_per_delivery'] for r in runs]):.3f}us "
              f"cpu/msg={med([r['server_cpu_us_per_message'] for r in runs]):.1f}us problems={bad}")
        continue
    if r0["scenario"] == "connect":
        print(f"{name:34} runs={len(runs)} conns={r0['conns']} "
              f"KiB/conn={med([r['server_rss_kib_per_conn'] for r in runs]):.2f} "
              f"marginal={med([r['server_rss_kib_per_conn_marginal'] for r in runs]):.2f} "
              f"connects/s={med([r['connects_per_s'] for r in runs]):.0f}")
    else:
        lat = lambda k: med([r["latency_us"][k] for r in runs])
        bad = problems(runs)
        # A networked store's own CPU (store_cpu_s files, written by pairs()), per message.
        store = []
        for i, r in zip(run_numbers[name], runs):
            f = os.path.join(out, f"{name}.{i}.store_cpu_s")
            if os.path.exists(f) and r["delivered"]:
                store.append(float(open(f).read()) * 1e6 / r["delivered"])
        print(f"{name:34} runs={len(runs)} msgs/s={med([r['delivered_msgs_per_s'] for r in runs]):.0f} "
              f"p50={lat('p50'):.0f}us p99={lat('p99'):.0f}us p99.9={lat('p999'):.0f}us "
              f"cpu/msg={med([r['server_cpu_us_per_msg'] for r in runs]):.2f}us "
              f"bench_cpu={med([r['bench_cpu_s'] for r in runs]):.1f}s problems={bad}")
        if store:
            print(f"{'':34} store cpu/msg={med(store):.2f}us "
                  f"server+store cpu/msg={med([r['server_cpu_us_per_msg'] for r in runs]) + med(store):.2f}us")
PY
