#!/usr/bin/env bash
# The write path's cost of a replicated events stream (issue 19): authd built
# from the working tree on a local three-node JetStream cluster, with
# AUTHD_NATS_REPLICAS=1 and =3 in turn, the order alternating between rounds
# (R1, R3, then R3, R1, ...) so that the machine's drift falls on both alike.
# Each run gets a fresh cluster (the machine's nats-server, or NATS_SERVER) and
# a fresh database, and authbench's refresh scenario, whose every answer is
# one append that the relay publishes to the stream and, for the refresh's
# read-your-writes, the sessions projection applies from it. Prints one line
# per run: replicas, refreshes (appends) per second, p50 and p99 (ms), and
# the other processes' share of the machine.
#
#   bash cmd/authbench/scripts/replicas.sh [ROUNDS]     # ROUNDS defaults to 3
#
# Environment: REPLICAS_ARGS (more authbench flags, default
# "-c 16 -d 20s -warmup 3s"), NATS_SERVER (default: nats-server on PATH or
# /usr/sbin/nats-server), PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres).
# Scratch database authd_bench_replicas, dropped after each run. Needs mailpit
# on PATH or in $(go env GOPATH)/bin.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

rounds=${1:-3}
bench_args=${REPLICAS_ARGS:--c 16 -d 20s -warmup 3s}
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
user=${PGUSER:-postgres}
db=authd_bench_replicas
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number, not $rounds" >&2; exit 2; }

# shellcheck source=cmd/authbench/scripts/lib.sh
source cmd/authbench/scripts/lib.sh
nats_bin=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
[ -x "$nats_bin" ] || { echo "nats-server not found (set NATS_SERVER)" >&2; exit 2; }

echo "==> building authd and authbench; $("$nats_bin" --version)"
go build -o "$work/authd" ./cmd/authd
go build -o "$work/authbench" ./cmd/authbench
start_mailpit

# start_cluster starts three JetStream nodes in one cluster, as
# internal/testenv.StartNATSCluster does, and sets nats_url and nats_pids.
start_cluster() {
  local i client=() route=() others
  rm -rf "$work/nats"
  for i in 0 1 2; do client[i]=$(free_port); route[i]=$(free_port); done
  nats_pids=()
  for i in 0 1 2; do
    others=$(for j in 0 1 2; do [ "$j" = "$i" ] || printf 'nats://127.0.0.1:%s,' "${route[j]}"; done)
    "$nats_bin" -a 127.0.0.1 -p "${client[i]}" -n "n$i" -js -sd "$work/nats/n$i" \
      --cluster_name bench --cluster "nats://127.0.0.1:${route[i]}" --routes "${others%,}" \
      >"$work/nats-n$i.log" 2>&1 &
    nats_pids+=($!)
    pids+=($!)
  done
  nats_url="nats://127.0.0.1:${client[0]},nats://127.0.0.1:${client[1]},nats://127.0.0.1:${client[2]}"
}

stop() { kill "$@" 2>/dev/null || true; wait "$@" 2>/dev/null || true; }

# run REPLICAS starts a cluster and authd on a fresh database and loads it.
run() {
  local replicas=$1 http authd out url
  start_cluster
  http=$(free_port)
  url="http://127.0.0.1:$http"
  psql_ -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  rm -rf "$work/data"
  # authd retries until the cluster has elected its meta leader.
  DATABASE_URL="postgres://$user@$host:$port/$db?sslmode=disable" AUTHD_ADDR="127.0.0.1:$http" \
    NATS_URL="$nats_url" AUTHD_NATS_REPLICAS="$replicas" AUTHD_DATA_DIR="$work/data" AUTHD_RATE_LIMIT=off \
    SMTP_URL="smtp://127.0.0.1:$smtp" AUTHD_LOG_LEVEL=warn AUTHD_REQUEST_LOG=off \
    "$work/authd" >"$work/authd.log" 2>&1 &
  authd=$!
  wait_ready "$url" "$work/authd.log"
  # shellcheck disable=SC2086 # REPLICAS_ARGS is a list of flags
  out=$("$work/authbench" -url "$url" -mailpit "http://127.0.0.1:$web" -authd-pid "$authd" \
    -pg-db "$db" -scenario refresh -engine raw -json $bench_args) || true
  stop "$authd"
  stop "${nats_pids[@]}"
  python3 -c '
import json, sys
r = json.loads(sys.argv[2])
lat, cpu = r["latency"], r.get("cpu") or {}
print("R%s  refresh %8.1f/s  p50 %6.2f ms  p99 %7.2f ms  others %3.0f%%" % (
    sys.argv[1], r["ok_rps"], lat["p50_ms"], lat["p99_ms"], cpu.get("others_pct", 0)))
' "$replicas" "$out"
}

for r in $(seq 1 "$rounds"); do
  echo "==> round $r"
  if ((r % 2)); then run 1; run 3; else run 3; run 1; fi
done
