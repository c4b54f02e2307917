#!/usr/bin/env bash
# Starts Debian's Docker Engine (package docker.io) on the default socket if no engine answers
# there, and waits until it does. Idempotent. Everything goes to stderr.
set -euo pipefail
say() { echo "docker.sh: $*" >&2; }
if docker info >/dev/null 2>&1; then
    say "a Docker Engine already answers"
    exit 0
fi
command -v dockerd >/dev/null || { say "dockerd is not installed (Debian package docker.io)"; exit 1; }
LOG="${PHOENIX_DOCKERD_LOG:-/tmp/phoenix-dockerd.log}"
# A dockerd killed earlier leaves its pid file behind, and the next start refuses; a start can
# also time out waiting for containerd: three attempts.
for attempt in 1 2 3; do
    pgrep -x dockerd >/dev/null || rm -f /var/run/docker.pid
    say "starting dockerd, attempt $attempt (log $LOG)"
    nohup dockerd --host unix:///var/run/docker.sock >>"$LOG" 2>&1 &
    pid=$!
    for _ in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then
            say "Docker Engine is up"
            exit 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    sleep 2
done
say "dockerd did not answer within 60 s; its log:"
tail -n 30 "$LOG" >&2 || true
exit 1
