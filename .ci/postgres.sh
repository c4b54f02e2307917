#!/usr/bin/env bash
# Installs PostgreSQL from Debian (if missing), starts a throwaway server on 127.0.0.1 and prints
#
#   export PHOENIX_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/phoenix_test
#
# on stdout, and nothing else there, so that callers can `eval "$(bash .ci/postgres.sh)"`.
# Everything else goes to stderr.
#
# Idempotent: a second run reuses the running server (or restarts the cluster it left behind).
# Works as root (the server itself runs as the `postgres` user, because PostgreSQL refuses to run
# as root) and as an ordinary user, with no terminal.
#
# Settings (environment):
#   PHOENIX_PG_DIR   cluster directory (default /tmp/phoenix-pg); deleting it gives a fresh cluster
#   PHOENIX_PG_DB    database to create (default phoenix_test)
set -euo pipefail

PG_DIR="${PHOENIX_PG_DIR:-/tmp/phoenix-pg}"
PG_DB="${PHOENIX_PG_DB:-phoenix_test}"
DATA="$PG_DIR/data"
PORT_FILE="$PG_DIR/port"
LOG="$PG_DIR/server.log"

say() { echo "postgres.sh: $*" >&2; }

find_bindir() {
    # Newest installed major version; Debian keeps the server binaries out of PATH.
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
        echo "$dir"
    fi
}

BIN=$(find_bindir)
if [[ -z "$BIN" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        say "PostgreSQL is not installed and this is not root; install the Debian package 'postgresql'"
        exit 1
    fi
    say "installing PostgreSQL from Debian"
    export DEBIAN_FRONTEND=noninteractive
    # The package may also create (and, where an init system runs, start) its own 'main'
    # cluster on 5432; harmless: ours then takes another free port.
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql postgresql-client >&2
    BIN=$(find_bindir)
    if [[ -z "$BIN" ]]; then
        say "apt-get installed PostgreSQL but no /usr/lib/postgresql/*/bin/initdb was found"
        exit 1
    fi
fi

# Run a PostgreSQL command as the cluster owner: `postgres` when we are root.
if [[ $(id -u) -eq 0 ]]; then
    OWNER=postgres
    if ! getent passwd postgres >/dev/null; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    as_owner() { runuser -u postgres -- "$@"; }
else
    OWNER=$(id -un)
    as_owner() { "$@"; }
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
    local port
    for port in 5432 $(seq 55432 55532); do
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    say "no free port in 5432, 55432-55532"
    return 1
}

# Running means accepting connections, not only "pg_ctl status": after a kill -9 the dead
# postmaster can linger as a zombie (containers often have no init reaping them), which pg_ctl
# takes for a live server.
server_ready() {
    local port="$1" tries
    as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1 || return 1
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 && return 0
        sleep 1
    done
    return 1
}

# A postmaster killed without a clean stop leaves postmaster.pid behind; if that pid is gone
# or a zombie, the file only stands in the way of the next start.
remove_stale_pid_file() {
    local pid
    [[ -f "$DATA/postmaster.pid" ]] || return 0
    pid=$(head -n 1 "$DATA/postmaster.pid")
    if ! kill -0 "$pid" 2>/dev/null || [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" == Z* ]]; then
        say "removing the stale pid file of postmaster $pid"
        rm -f "$DATA/postmaster.pid"
    fi
}

mkdir -p "$PG_DIR"
chown "$OWNER" "$PG_DIR"
chmod 700 "$PG_DIR"

if [[ -f "$DATA/PG_VERSION" && "$(cat "$DATA/PG_VERSION")" != "$(basename "$(dirname "$BIN")")" ]]; then
    say "cluster in $DATA is from another PostgreSQL version; recreating it"
    as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$DATA"
fi

if [[ ! -f "$DATA/PG_VERSION" ]]; then
    rm -rf "$DATA"
    say "creating a throwaway cluster in $DATA"
    # Trust authentication: the server only listens on 127.0.0.1 and a socket in $PG_DIR, and the
    # cluster holds nothing but test data.
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        --no-sync >&2
fi

if [[ -f "$PORT_FILE" ]] && server_ready "$(cat "$PORT_FILE")"; then
    PORT=$(cat "$PORT_FILE")
    say "reusing the server already running on port $PORT"
else
    # Whatever is left of an earlier server (lost port file, killed postmaster) goes first.
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -t 20 stop >/dev/null 2>&1 || true
    remove_stale_pid_file
    PORT=""
    if [[ -f "$PORT_FILE" ]] && ! port_in_use "$(cat "$PORT_FILE")"; then
        PORT=$(cat "$PORT_FILE")
    fi
    [[ -n "$PORT" ]] || PORT=$(pick_port)
    say "starting PostgreSQL on 127.0.0.1:$PORT (log: $LOG)"
    # fsync off: a throwaway test cluster trades durability for speed. stdin/stdout detached so
    # the server never holds the caller's `$(...)` pipe open.
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
        -o "-p $PORT -c listen_addresses=127.0.0.1 -k $PG_DIR -c fsync=off -c max_connections=200" \
        start </dev/null >&2
    echo "$PORT" >"$PORT_FILE"
fi

psql_admin() { as_owner "$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"; }

if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]]; then
    say "creating database $PG_DB"
    psql_admin -c "CREATE DATABASE \"$PG_DB\"" >&2
fi

echo "export PHOENIX_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PORT/$PG_DB"
