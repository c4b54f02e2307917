#!/bin/sh
# Applies the migration files given (NNN_name.sql, in the order given) that the database at
# HOST:PORT has not recorded yet. Each file and its record in schema_migrations are one
# transaction, so a failing file leaves nothing of itself behind and the next run retries it.
# The files are listed in the spec, so adding one changes the job's command, and Phoenix runs
# it again (once per change).
# Usage: migrate.sh HOST:PORT FILE...
set -eu
addr=$1; shift
host=$(echo "$addr" | cut -d: -f1)
port=$(echo "$addr" | cut -d: -f2)
psql_() { psql -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres -d postgres "$@"; }
psql_ -c "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
for f in "$@"; do
    name=$(basename "$f")
    done_=$(psql_ -Atc "SELECT 1 FROM schema_migrations WHERE name = '$name'")
    if [ "$done_" = "1" ]; then
        continue
    fi
    echo "applying $name"
    { cat "$f"; echo; echo "INSERT INTO schema_migrations (name) VALUES ('$name');"; } \
        | psql_ --single-transaction -f -
done
echo "migrations up to date"
