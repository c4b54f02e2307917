#!/bin/sh
# Health of a streaming replica: it is in recovery, its WAL receiver streams from the primary,
# and what it has replayed is less than MAX_LAG bytes behind the primary's current WAL position.
# Usage: replica-ok.sh REPLICA_PORT PRIMARY_HOST:PORT MAX_LAG_BYTES
set -eu
rport=$1; paddr=$2; max=$3
phost=$(echo "$paddr" | cut -d: -f1)
pport=$(echo "$paddr" | cut -d: -f2)
q() { psql -X -At -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"; }
status=$(q "$rport" "SELECT status FROM pg_stat_wal_receiver")
[ "$status" = "streaming" ] || { echo "wal receiver: '$status'"; exit 1; }
lsn=$(psql -X -At -h "$phost" -p "$pport" -U postgres -d postgres -c "SELECT pg_current_wal_lsn()")
lag=$(q "$rport" "SELECT pg_wal_lsn_diff('$lsn', pg_last_wal_replay_lsn())::bigint")
[ "$lag" -lt "$max" ] || { echo "lag $lag bytes >= $max"; exit 1; }
echo "streaming, $lag bytes behind"
