#!/usr/bin/env bash
# POST /login throughput as a share of H, the hashes/s of the password
# hasher alone (BenchmarkHashOWASPParallel): the login target of BENCHMARKS.md.
# On a shared machine H itself drifts by 10% or more within minutes, so the
# script interleaves them, H, logins, H, logins, ..., H, and compares each
# login run with the mean of the H measured just before and just after it.
#
#   bash cmd/authbench/scripts/login-ratio.sh [ROUNDS]       # ROUNDS defaults to 3
#
# It builds authd, authbench and the hasher benchmark, starts Mailpit and one
# authd (rate limits off) on a scratch database, authd_bench_login, which it
# drops at the end. Environment: PGHOST (127.0.0.1), PGPORT (5432), PGUSER
# (postgres), LOGIN_ARGS (authbench's, default "-c 8 -d 15s -warmup 3s"),
# HASH_TIME (5s). Needs mailpit on PATH or in $(go env GOPATH)/bin, as .ci/run
# installs it. Run it on an otherwise idle machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

rounds=${1:-3}
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
user=${PGUSER:-postgres}
login_args=${LOGIN_ARGS:--c 8 -d 15s -warmup 3s}
hash_time=${HASH_TIME:-5s}
db=authd_bench_login
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number, not $rounds" >&2; exit 2; }

export PATH="$PATH:$(go env GOPATH)/bin"
command -v mailpit >/dev/null || { echo "mailpit not found: go install github.com/axllent/mailpit@v1.33.1" >&2; exit 2; }

# free_port asks the kernel for a port nobody listens on.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -X -q -h "$host" -p "$port" -U "$user" -d postgres -c "DROP DATABASE IF EXISTS $db" || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> building authd, authbench and the hasher benchmark"
go build -o "$work/authd" ./cmd/authd
go build -o "$work/authbench" ./cmd/authbench
go test -c -o "$work/password.test" ./internal/password

psql -X -q -h "$host" -p "$port" -U "$user" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"

smtp=$(free_port) web=$(free_port) http=$(free_port) nats=$(free_port)
mailpit --smtp "127.0.0.1:$smtp" --listen "127.0.0.1:$web" --max 100000 >"$work/mailpit.log" 2>&1 &
pids+=($!)
DATABASE_URL="postgres://$user@$host:$port/$db?sslmode=disable" AUTHD_ADDR="127.0.0.1:$http" \
  AUTHD_EMBEDDED_NATS_ADDR="127.0.0.1:$nats" AUTHD_DATA_DIR="$work/data" AUTHD_RATE_LIMIT=off \
  SMTP_URL="smtp://127.0.0.1:$smtp" AUTHD_LOG_LEVEL=warn "$work/authd" >"$work/authd.log" 2>&1 &
authd=$!
pids+=("$authd")
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$http/readyz" >/dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$http/readyz" >/dev/null || { echo "authd did not get ready:" >&2; cat "$work/authd.log" >&2; exit 1; }

hashes() {
  "$work/password.test" -test.run '^$' -test.bench HashOWASPParallel -test.benchtime "$hash_time" |
    awk '/hashes\/s/ { for (i = 1; i < NF; i++) if ($(i + 1) == "hashes/s") print $i }'
}
logins() {
  # shellcheck disable=SC2086 # LOGIN_ARGS is a list of flags
  "$work/authbench" -url "http://127.0.0.1:$http" -mailpit "http://127.0.0.1:$web" -authd-pid "$authd" \
    -scenario login -engine raw $login_args | sed -n 's/.*(2xx \([0-9.]*\)\/s).*/\1/p'
}

h_before=$(hashes)
sum=0
for r in $(seq 1 "$rounds"); do
  l=$(logins)
  h_after=$(hashes)
  ratio=$(awk -v l="$l" -v a="$h_before" -v b="$h_after" 'BEGIN { printf "%.1f", 200 * l / (a + b) }')
  echo "round $r: H $h_before, logins $l/s, H $h_after: $ratio% of their mean"
  sum=$(awk -v s="$sum" -v x="$ratio" 'BEGIN { print s + x }')
  h_before=$h_after
done
awk -v s="$sum" -v n="$rounds" 'BEGIN { printf "mean: %.1f%% of H (target 85%%)\n", s / n }'
