#!/usr/bin/env bash
# The login flood of issue 16, item 9, in pairs: authd built at BEFORE and
# at the working tree, each loaded by `authbench -scenario flood` in turn,
# ROUNDS times. Each run measures an owner's logins, GET /me and POST
# /refresh without and then with a flood of unknown-email logins from 250
# addresses (X-Forwarded-For), offered at twice H, the hashes/s of the
# password hasher alone (BenchmarkHashOWASPParallel), measured before each pair.
#
#   bash cmd/authbench/scripts/flood.sh [ROUNDS]       # ROUNDS defaults to 2
#
# Environment: BEFORE (a commit, default f1f8af5), PGHOST (127.0.0.1), PGPORT
# (5432), PGUSER (postgres), FLOOD_ARGS (more authbench flags, default
# "-d 20s -warmup 3s"), HASH_TIME (5s), RATE_LIMIT (off: with the per-IP
# limit of 10 logins a minute, 250 addresses could offer only 42 logins/s,
# less than H on two cores). Each authd runs on a scratch database,
# authd_bench_flood, dropped after each run. Needs mailpit on PATH or in
# $(go env GOPATH)/bin. Run it on an otherwise idle machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

rounds=${1:-2}
before=${BEFORE:-f1f8af5}
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
user=${PGUSER:-postgres}
flood_args=${FLOOD_ARGS:--d 20s -warmup 3s}
hash_time=${HASH_TIME:-5s}
rate_limit=${RATE_LIMIT:-off}
db=authd_bench_flood
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number, not $rounds" >&2; exit 2; }

# shellcheck source=cmd/authbench/scripts/lib.sh
source cmd/authbench/scripts/lib.sh

echo "==> building authd at $before and at the working tree, authbench and the hasher benchmark"
build_pair "$before"
go test -c -o "$work/password.test" ./internal/password
start_mailpit

hashes() {
  "$work/password.test" -test.run '^$' -test.bench HashOWASPParallel -test.benchtime "$hash_time" |
    awk '/hashes\/s/ { for (i = 1; i < NF; i++) if ($(i + 1) == "hashes/s") print $i }'
}

# flood BINARY RATE runs one authd and one authbench flood run against it.
flood() {
  local bin=$1 rate=$2 http nats authd
  http=$(free_port) nats=$(free_port)
  psql_ -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  rm -rf "$work/data"
  DATABASE_URL="postgres://$user@$host:$port/$db?sslmode=disable" AUTHD_ADDR="127.0.0.1:$http" \
    AUTHD_EMBEDDED_NATS_ADDR="127.0.0.1:$nats" AUTHD_DATA_DIR="$work/data" AUTHD_RATE_LIMIT="$rate_limit" \
    AUTHD_TRUSTED_PROXIES=127.0.0.1/32 SMTP_URL="smtp://127.0.0.1:$smtp" AUTHD_LOG_LEVEL=warn \
    "$bin" >"$work/authd.log" 2>&1 &
  authd=$!
  wait_ready "http://127.0.0.1:$http" "$work/authd.log"
  # shellcheck disable=SC2086 # FLOOD_ARGS is a list of flags
  "$work/authbench" -url "http://127.0.0.1:$http" -mailpit "http://127.0.0.1:$web" -authd-pid "$authd" -pg-db "$db" \
    -scenario flood -engine raw -flood-rate "$rate" $flood_args || true
  kill "$authd"
  wait "$authd" 2>/dev/null || true
}

for r in $(seq 1 "$rounds"); do
  h=$(hashes)
  rate=$(awk -v h="$h" 'BEGIN { printf "%.0f", 2 * h }')
  echo "==> round $r: H $h hashes/s, flood at $rate logins/s"
  echo "--> authd at $before"
  flood "$work/authd-before" "$rate"
  echo "--> authd at the working tree"
  flood "$work/authd-after" "$rate"
done
