#!/bin/sh
# Initialises a streaming replica's data dir from the primary with pg_basebackup. The job runs
# `for_each: pg-replica`, i.e. in the replica's own instance, so DATA_DIR is that replica's data
# dir; it runs before the replica first starts, and again whenever the replica is created or
# replaced. A data dir that already holds a cluster (PG_VERSION) is left alone, so running it
# again is harmless; an empty one (a new replica, or one whose data dir was wiped) is made from
# the primary. The copy is made beside the data dir and moved in place only once complete, so
# an interrupted run never leaves a data dir that looks initialised.
# Usage: replica-init.sh PRIMARY_HOST:PORT DATA_DIR
set -eu
host=$(echo "$1" | cut -d: -f1)
port=$(echo "$1" | cut -d: -f2)
d="$2/pg"
if [ -f "$d/PG_VERSION" ]; then
    echo "$d holds a cluster already: left alone"
    exit 0
fi
rm -rf "$d" "$d.new"
pg_basebackup -h "$host" -p "$port" -U postgres -D "$d.new" -R -X stream --no-sync
mv "$d.new" "$d"
echo "initialised $d from the primary at $1 (pg_basebackup)"
