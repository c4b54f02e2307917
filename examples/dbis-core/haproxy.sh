#!/bin/sh
# The load balancer: writes haproxy.cfg for BACKENDS (host:port,host:port,...) and either runs
# HAProxy in master-worker mode (`run`) or has the running master reload it (`reload`, SIGUSR2:
# new workers take the new backends, old ones finish their requests; the reload waits a second
# for them, so that Phoenix retires the old backends only after). Backends are not health-checked
# by HAProxy: Phoenix gates each one before it is listed, and a failed connection or an empty
# response is retried on another backend.
# Usage: haproxy.sh run|reload DATA_DIR PORT BACKENDS
set -eu
mode=$1; dir=$2; port=$3; backends=$4
cfg="$dir/haproxy.cfg"
{
    echo "global"
    echo "    maxconn 512"
    echo "defaults"
    echo "    mode http"
    echo "    timeout connect 2s"
    echo "    timeout client 30s"
    echo "    timeout server 30s"
    echo "    retries 3"
    echo "    option redispatch"
    echo "    retry-on conn-failure empty-response response-timeout"
    echo "frontend fe"
    echo "    bind 127.0.0.1:$port"
    echo "    default_backend app"
    echo "backend app"
    echo "    balance roundrobin"
    i=0
    for b in $(echo "$backends" | tr ',' ' '); do
        echo "    server app$i $b"
        i=$((i + 1))
    done
} > "$cfg.new"
mv "$cfg.new" "$cfg"
case "$mode" in
    run) exec haproxy -W -db -f "$cfg" -p "$dir/haproxy.pid" ;;
    reload) kill -USR2 "$(cat "$dir/haproxy.pid")" && sleep 1 ;;
esac
