#!/usr/bin/env bash
# Fuzzes the API of `phoenix serve` from its own OpenAPI document with schemathesis (from PyPI,
# pinned below, in a venv under the clone: .ci/venv). Started by .ci/run after the tests, so
# target/debug/phoenix is built. A small fleet is applied with the local provider so that the
# fleet routes have something to read; the server runs on a free loopback port with a viewer
# token in every request's header. The server, the fleet and the temp dir are cleaned up on
# exit (the server by its pid). Bounded: --max-examples per operation and a time budget.
#
#   bash .ci/fuzz-api.sh            # from the repository root
#
# Every answer must be a non-5xx status the document names, with a body of the documented
# content type and schema (schemathesis' checks: not_a_server_error, status_code_conformance,
# content_type_conformance, response_headers_conformance, response_schema_conformance).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${PHOENIX_FUZZ_MAX_EXAMPLES:-25}
MAX_SECONDS=${PHOENIX_FUZZ_MAX_SECONDS:-100}
BIN=${PHOENIX_BIN:-$PWD/target/debug/phoenix}

if [ ! -x .ci/venv/bin/schemathesis ] ||
    [ "$(.ci/venv/bin/schemathesis --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    python3 -m venv .ci/venv
    # The venv ignores itself, so that it never shows in `git status`.
    echo '*' > .ci/venv/.gitignore
    .ci/venv/bin/pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d -t pxfuzz.XXXXXX)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    (cd "$work" && "$BIN" destroy fleet.yaml --yes --state-dir s >/dev/null 2>&1) || true
    rm -rf "$work"
}
trap cleanup EXIT
export PHOENIX_OPERATOR_KEY="$work/operator.key"
unset PHOENIX_STATE_URL PHOENIX_LEDGER_URL PHOENIX_LEDGER_KEY

cat > "$work/fleet.yaml" <<'EOF'
phoenix: 1
name: demo
sites:
  - name: local
    tier: core
    capacity: { cpu: 8, memory: 8Gi, storage: 10G }
services:
  - name: web
    replicas: 1
    command: [python3, -m, http.server, '${port}', --bind, 127.0.0.1, --directory, '${data_dir}']
    ports: [port]
    metrics: { port: port, path: / }
    health: { http: 'http://127.0.0.1:${port}/', timeout: 15s, interval: 100ms }
    stop_grace: 2s
EOF
# Two revisions, so that the diff and revision routes have something to compare (the OpenAPI
# document's examples name fleet `demo`, revisions 1 and 2).
(cd "$work" && "$BIN" apply fleet.yaml --yes --state-dir s >/dev/null)
sed -i 's/replicas: 1/replicas: 2/' "$work/fleet.yaml"
(cd "$work" && "$BIN" apply fleet.yaml --yes --state-dir s >/dev/null)
token=$(cd "$work" && "$BIN" serve token create fuzz --role viewer --state-dir s | tail -n 1)

"$BIN" serve --listen 127.0.0.1:0 --state-dir "$work/s" > "$work/serve.out" 2> "$work/serve.err" &
server_pid=$!
url=
for _ in $(seq 1 100); do
    url=$(sed -n 's/^listening on //p' "$work/serve.out" | head -n 1)
    [ -n "$url" ] && break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "phoenix serve did not start:" >&2
    cat "$work/serve.err" >&2
    exit 1
fi
echo "fuzzing $url/openapi.json (at most $MAX_EXAMPLES examples per operation, $MAX_SECONDS s)"

# The event streams never end by design: they are left out, and so is an instance's logs,
# whose follow=true is one (tests/serve.rs covers them).
# Run from the temp dir: schemathesis keeps a cache (.schemathesis/) in its working directory.
venv=$PWD/.ci/venv
status=0
(cd "$work" && timeout $((MAX_SECONDS + 60)) "$venv/bin/schemathesis" run "$url/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_SECONDS" \
    --request-timeout 10 \
    --exclude-path-regex '/events$|/logs$' \
    --seed 11 \
    --no-color) || status=$?
if grep -q panicked "$work/serve.err"; then
    echo "phoenix serve panicked while fuzzed:" >&2
    cat "$work/serve.err" >&2
    status=1
fi
exit "$status"
