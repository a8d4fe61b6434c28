# What the benchmark scripts share; each sources it from the repository's
# root after setting host, port, user (Postgres) and db (its scratch
# database). Not a script of its own.

export PATH="$PATH:$(go env GOPATH)/bin"
command -v mailpit >/dev/null || { echo "mailpit not found: go install github.com/axllent/mailpit@v1.33.1" >&2; exit 2; }

# free_port asks the kernel for a port nobody listens on.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
psql_() { psql -X -q -h "$host" -p "$port" -U "$user" -d postgres "$@"; }

# On exit: stop what was started (pids), drop the scratch database, remove
# the work directory.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql_ -c "DROP DATABASE IF EXISTS $db" || true
  rm -rf "$work"
}
trap cleanup EXIT

# build_pair REV builds authd at REV ($work/authd-before) and at the working
# tree ($work/authd-after), and authbench.
build_pair() {
  mkdir "$work/before"
  git archive "$1" | tar -x -C "$work/before"
  (cd "$work/before" && go build -o "$work/authd-before" ./cmd/authd)
  go build -o "$work/authd-after" ./cmd/authd
  go build -o "$work/authbench" ./cmd/authbench
}

# start_mailpit starts a Mailpit on free ports: SMTP on $smtp, API on $web.
start_mailpit() {
  smtp=$(free_port) web=$(free_port)
  mailpit --smtp "127.0.0.1:$smtp" --listen "127.0.0.1:$web" --max 200000 >"$work/mailpit.log" 2>&1 &
  pids+=($!)
}

# wait_ready URL LOG waits up to 30 s for an authd's /readyz, showing its
# log when it does not get ready.
wait_ready() {
  for _ in $(seq 1 150); do
    curl -sf "$1/readyz" >/dev/null && return 0
    sleep 0.2
  done
  echo "authd at $1 did not get ready:" >&2
  cat "$2" >&2
  exit 1
}
