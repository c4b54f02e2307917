#!/bin/sh
# Puts the primary back as it was before a change: loads the newest backup (latest.sql, the
# pg_dump the `backup` job took before this apply's migration) in ONE transaction that first
# drops the `public` schema, so tables and rows a migration added go too and the schema and
# rows are exactly those of the dump; if any statement fails nothing changes. The replicas
# follow: the restore is ordinary WAL, which they replay (they are not rebuilt). Rows written
# after the backup was taken (during the failed apply) are lost: that is what restoring means.
# The job runs `for_each: backup`, i.e. in the backup job's instance, so DIR is where
# backup.sh left the dumps.
# Usage: restore.sh HOST:PORT DIR
set -eu
host=$(echo "$1" | cut -d: -f1)
port=$(echo "$1" | cut -d: -f2)
f="$2/latest.sql"
[ -s "$f" ] || { echo "no backup to restore: $f is missing or empty" >&2; exit 1; }
{
    echo "DROP SCHEMA public CASCADE;"
    echo "CREATE SCHEMA public AUTHORIZATION pg_database_owner;"
    cat "$f"
} | psql -X -q -v ON_ERROR_STOP=1 --single-transaction -h "$host" -p "$port" -U postgres \
    -d postgres -f - > /dev/null
echo "restored the primary at $1 from $f ($(wc -c < "$f") bytes)"
