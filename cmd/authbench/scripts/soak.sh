#!/usr/bin/env bash
# A soak of two authd instances on one Postgres and one JetStream server
# (issue 19): for DURATION, in chunks of CHUNK, authbench loads instance A
# with refreshes and instance B with GET /me, while a third authbench signs
# in at a steady rate on A; every chunk also signs up its users through the
# API and Mailpit. After each chunk it prints, per instance, the resident
# memory, the heap in use and the goroutines from /metrics, and each load's
# p99, so that a leak or a slow drift shows as a trend. The last lines
# compare the first and last fifth of the run.
#
#   bash cmd/authbench/scripts/soak.sh                 # DURATION 30m, CHUNK 60s
#
# Environment: DURATION, CHUNK, PGHOST (127.0.0.1), PGPORT (5432), PGUSER
# (postgres). Scratch database authd_bench_soak (dropped at the end), its own
# nats-server (the machine's binary) with JetStream in a temp dir, its own
# Mailpit. Needs mailpit on PATH or in $(go env GOPATH)/bin.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

duration=${DURATION:-30m}
chunk=${CHUNK:-60s}
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
user=${PGUSER:-postgres}
db=authd_bench_soak

# shellcheck source=cmd/authbench/scripts/lib.sh
source cmd/authbench/scripts/lib.sh
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || { echo "nats-server not found" >&2; exit 2; }
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

seconds() { python3 -c 'import sys,re; m=re.fullmatch(r"(\d+)([smh])", sys.argv[1]); print(int(m[1])*{"s":1,"m":60,"h":3600}[m[2]])' "$1"; }

echo "==> building authd and authbench"
go build -o "$work/authd" ./cmd/authd
go build -o "$work/authbench" ./cmd/authbench
psql_ -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"

start_mailpit
nats=$(free_port)
"$nats_bin" -a 127.0.0.1 -p "$nats" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)

# Both instances seal with the same master key, as a deployment's do.
master=$(head -c 32 /dev/urandom | base64)
declare -A url pid
for name in a b; do
  http=$(free_port)
  DATABASE_URL="postgres://$user@$host:$port/$db?sslmode=disable" AUTHD_ADDR="127.0.0.1:$http" \
    NATS_URL="nats://127.0.0.1:$nats" AUTHD_MASTER_KEY="$master" AUTHD_DATA_DIR="$work/data-$name" AUTHD_RATE_LIMIT=off \
    SMTP_URL="smtp://127.0.0.1:$smtp" AUTHD_LOG_LEVEL=warn AUTHD_REQUEST_LOG=0.001 \
    "$work/authd" >"$work/authd-$name.log" 2>&1 &
  pid[$name]=$!
  pids+=("${pid[$name]}")
  url[$name]="http://127.0.0.1:$http"
  wait_ready "${url[$name]}" "$work/authd-$name.log"
done

# metric INSTANCE NAME prints one sample of a metric from /metrics.
metric() { curl -sf "${url[$1]}/metrics" | awk -v m="$2" '$1 == m { printf "%.0f", $2 }'; }
# p99 FILE prints the p99 of an authbench JSON report.
p99() { python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["latency"]["p99_ms"])' "$1"; }
ok() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d/%d" % (sum(v for k,v in r["statuses"].items() if k.startswith("2")), r["requests"]))' "$1"; }

total=$(seconds "$duration")
step=$(seconds "$chunk")
chunks=$(( (total + step - 1) / step ))
bench() { "$work/authbench" -mailpit "http://127.0.0.1:$web" -engine raw -json -warmup 0s -d "$chunk" "$@"; }
printf '%-6s %-22s %-22s %-12s %-12s %-12s %-10s %s\n' chunk "rss MiB a/b" "heap MiB a/b" "goroutines" "refresh p99" "me p99" "login p99" "2xx/answered (refresh me login)"
for i in $(seq 1 "$chunks"); do
  bench -url "${url[a]}" -scenario refresh -c 4 >"$work/refresh.json" 2>/dev/null &
  r=$!
  bench -url "${url[b]}" -scenario me -c 4 >"$work/me.json" 2>/dev/null &
  m=$!
  bench -url "${url[a]}" -scenario login -c 2 -rate 5 >"$work/login.json" 2>/dev/null &
  l=$!
  wait "$r" "$m" "$l" || { echo "an authbench run failed in chunk $i" >&2; exit 1; }
  printf '%-6s %-22s %-22s %-12s %-12s %-12s %-10s %s %s %s\n' "$i" \
    "$(( $(metric a process_resident_memory_bytes) >> 20 ))/$(( $(metric b process_resident_memory_bytes) >> 20 ))" \
    "$(( $(metric a go_memstats_heap_inuse_bytes) >> 20 ))/$(( $(metric b go_memstats_heap_inuse_bytes) >> 20 ))" \
    "$(metric a go_goroutines)/$(metric b go_goroutines)" \
    "$(p99 "$work/refresh.json")" "$(p99 "$work/me.json")" "$(p99 "$work/login.json")" \
    "$(ok "$work/refresh.json")" "$(ok "$work/me.json")" "$(ok "$work/login.json")"
done
