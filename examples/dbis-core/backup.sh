#!/bin/sh
# A consistent logical backup of the primary (pg_dump runs in one snapshot), kept in this job's
# data dir as backup-N.sql with the newest also as latest.sql (what restore.sh loads on a
# rollback); the last 5 are kept. The job runs before every run of `migrate`.
# Usage: backup.sh HOST:PORT DIR
set -eu
host=$(echo "$1" | cut -d: -f1)
port=$(echo "$1" | cut -d: -f2)
dir=$2
n=$(ls "$dir" 2>/dev/null | grep -c '^backup-' || true)
out="$dir/backup-$(date +%Y%m%dT%H%M%S)-$n.sql"
pg_dump -h "$host" -p "$port" -U postgres -d postgres --clean --if-exists -f "$out.tmp"
mv "$out.tmp" "$out"
cp "$out" "$dir/latest.sql.tmp"
mv "$dir/latest.sql.tmp" "$dir/latest.sql"
ls "$dir"/backup-*.sql | sort | head -n -5 | xargs -r rm -f
echo "backed up to $out ($(wc -c < "$out") bytes)"
