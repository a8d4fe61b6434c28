#!/usr/bin/env bash
# Raw Postgres single-insert commit rate: the ceiling authd's append can be
# compared with in BENCHMARKS.md. Creates a scratch database holding a table
# shaped like authd's event log (migrations/00001_eventstore.sql), runs pgbench
# with one INSERT of an event-sized row per transaction (cmd/authbench/scripts/pgbench-insert.sql)
# for 1, 8 and 32 clients, prints the tps of each, and drops the database.
#
#   bash cmd/authbench/scripts/raw-insert.sh [DBNAME]        # DBNAME defaults to authd_bench_raw
#
# Environment: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres),
# BENCH_SECONDS (15), BENCH_CLIENTS ("1 8 32"), PGBENCH (/usr/bin/pgbench).
# Run it on an otherwise idle machine: the figures are per-commit latency bound.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

db=${1:-authd_bench_raw}
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
user=${PGUSER:-postgres}
seconds=${BENCH_SECONDS:-15}
clients=${BENCH_CLIENTS:-1 8 32}
pgbench=${PGBENCH:-/usr/bin/pgbench}

[[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "bad database name: $db" >&2; exit 2; }

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U "$user" -d postgres "$@"; }
psql_db() { psql -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U "$user" -d "$db" "$@"; }

exists=$(psql_admin -At -c "SELECT 1 FROM pg_database WHERE datname = '$db'")
if [[ -n $exists ]]; then
  # Only a scratch database left by an earlier run is dropped without asking.
  if [[ $db == authd_bench_* ]]; then
    echo "==> dropping leftover database $db"
    psql_admin -c "DROP DATABASE $db"
  else
    echo "database $db already exists; refusing to use it (choose another name)" >&2
    exit 2
  fi
fi

echo "==> creating database $db on $host:$port"
psql_admin -c "CREATE DATABASE $db"
trap 'echo "==> dropping database $db"; psql_admin -c "DROP DATABASE IF EXISTS $db" || true' EXIT

# The event log's shape, as in migrations/00001_eventstore.sql.
psql_db <<'SQL'
CREATE TABLE events (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    id          uuid        NOT NULL UNIQUE,
    stream_id   text        NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    type        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    tenant_id   uuid,
    user_id     uuid,
    metadata    jsonb       NOT NULL DEFAULT '{}',
    data        jsonb       NOT NULL DEFAULT '{}',
    sealed      bytea,
    sealed_kid  text,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE INDEX events_commit_order ON events (tx_id, position);
SQL

echo "==> server: $(psql_db -At -c "SELECT 'PostgreSQL ' || current_setting('server_version') || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', wal_sync_method=' || current_setting('wal_sync_method') || ', cores=$(nproc)'")"

declare -A tps
for c in $clients; do
  cmd=("$pgbench" -n -h "$host" -p "$port" -U "$user" -f cmd/authbench/scripts/pgbench-insert.sql -c "$c" -j "$c" -T "$seconds" "$db")
  echo "==> ${cmd[*]}"
  out=$("${cmd[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
  echo "$out" | grep -E '^(number of (transactions actually processed|failed transactions)|latency average|tps)'
  tps[$c]=$(echo "$out" | sed -nE 's/^tps = ([0-9.]+) .*/\1/p' | tail -n 1)
done

echo "==> rows inserted: $(psql_db -At -c 'SELECT count(*) FROM events')"
echo
echo "raw Postgres single-row INSERT commit rate (${seconds}s per run)"
printf '%-8s %12s\n' clients tps
for c in $clients; do
  printf '%-8s %12s\n' "$c" "${tps[$c]}"
done
