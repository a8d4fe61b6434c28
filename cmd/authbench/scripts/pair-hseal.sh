#!/usr/bin/env bash
# GET /me, POST /refresh and POST /login of authd built at BEFORE and at the
# working tree, in pairs: each round runs every scenario on both builds, the
# order of the two alternating between rounds, so that the machine's drift
# (±30% within minutes here) falls on both sides alike. Used for changes that
# must not move the figures (issue 18's restructuring).
#
#   bash cmd/authbench/scripts/pair.sh [ROUNDS]       # ROUNDS defaults to 3
#
# Environment: BEFORE (a commit, default b4c3a2e), SCENARIOS (default
# "me refresh login"), PAIR_ARGS (more authbench flags, default
# "-c 16 -d 10s -warmup 3s"), PGHOST (127.0.0.1), PGPORT (5432), PGUSER
# (postgres). Each authd runs on a scratch database, authd_bench_pair, dropped
# after each run. Prints one line per run: build, scenario, 2xx/s, p50 and p99
# (ms), authd's CPU ms per request. Needs mailpit on PATH or in
# $(go env GOPATH)/bin. Run it on an otherwise idle machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

rounds=${1:-3}
before=${BEFORE:-b4c3a2e}
scenarios=${SCENARIOS:-me refresh login}
pair_args=${PAIR_ARGS:--c 16 -d 10s -warmup 3s}
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
user=${PGUSER:-postgres}
db=authd_bench_pair_hseal
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number, not $rounds" >&2; exit 2; }

# shellcheck source=cmd/authbench/scripts/lib.sh
source cmd/authbench/scripts/lib.sh

echo "==> building authd at $before and at the working tree, and authbench"
build_pair "$before"
start_mailpit

# run NAME SCENARIO starts authd-NAME on a fresh database and loads it.
run() {
  local name=$1 scenario=$2 http nats authd out
  http=$(free_port) nats=$(free_port)
  psql_ -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  rm -rf "$work/data"
  DATABASE_URL="postgres://$user@$host:$port/$db?sslmode=disable" AUTHD_ADDR="127.0.0.1:$http" \
    AUTHD_EMBEDDED_NATS_ADDR="127.0.0.1:$nats" AUTHD_DATA_DIR="$work/data" AUTHD_RATE_LIMIT=off \
    SMTP_URL="smtp://127.0.0.1:$smtp" AUTHD_LOG_LEVEL=warn AUTHD_REQUEST_LOG=off \
    "$work/authd-$name" >"$work/authd.log" 2>&1 &
  authd=$!
  wait_ready "http://127.0.0.1:$http" "$work/authd.log"
  # shellcheck disable=SC2086 # PAIR_ARGS is a list of flags
  out=$("$work/authbench" -url "http://127.0.0.1:$http" -mailpit "http://127.0.0.1:$web" -authd-pid "$authd" \
    -pg-db "$db" -scenario "$scenario" -engine raw -json $pair_args) || true
  kill "$authd"
  wait "$authd" 2>/dev/null || true
  python3 -c '
import json, sys
r = json.loads(sys.argv[3])
cpu = (r.get("cpu") or {}).get("server_ms_per_req", 0)
lat = r["latency"]
print("%-7s %-8s %9.1f/s  p50 %7.2f ms  p99 %7.2f ms  cpu %.3f ms/req" % (sys.argv[1], sys.argv[2], r["ok_rps"], lat["p50_ms"], lat["p99_ms"], cpu))
' "$name" "$scenario" "$out"
}

for r in $(seq 1 "$rounds"); do
  echo "==> round $r"
  for s in $scenarios; do
    if ((r % 2)); then run before "$s"; run after "$s"; else run after "$s"; run before "$s"; fi
  done
done
