#!/usr/bin/env bash
# make fuzz-api: schemathesis against a live host, driven by the host's own /openapi.json.
#
# Installs schemathesis (pinned) into target/fuzz-venv once, builds and starts the host on a
# free 127.0.0.1 port with a throw-away data dir (SQLite) and the process runtime, seeds a small
# workspace tree, then runs schemathesis with the checks that mean "no 5xx and no answer the
# description does not allow". Exits non-zero on any failure; the host is stopped either way.
#
# The process runtime (not `none`) so routes that need a running agent (files, restart, plugins)
# answer as they do in production instead of a designed 503 "no runtime". Agents are the
# reference agent beside the host binary; the host stops them when it stops.
#
#   FUZZ_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   FUZZ_SEED          schemathesis seed (default: random, printed in the summary)
#   FUZZ_KEEP          set to 1 to keep the data dir and the host log
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=target/fuzz-venv
EXAMPLES="${FUZZ_MAX_EXAMPLES:-50}"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "version $SCHEMATHESIS_VERSION"; then
    echo "fuzz-api: installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build -p molecule-host --bin molecule -p molecule-agent --bin molecule-agent

work="$(mktemp -d /tmp/molecule-fuzz.XXXXXX)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="fuzz-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
base="http://127.0.0.1:$port"

MOLECULE_ENV=development \
MOLECULE_ADMIN_TOKEN="$token" \
MOLECULE_BIND_ADDR="127.0.0.1:$port" \
MOLECULE_DATA_DIR="$work/data" \
MOLECULE_RUNTIME__KIND=process \
MOLECULE_ORG__IMPORT_ON_START="" \
RATE_LIMIT=0 \
RUST_LOG="${RUST_LOG:-warn}" \
    target/debug/molecule serve >"$work/host.log" 2>&1 &
host=$!

stop_host() {
    local status=$?
    if kill -0 "$host" 2>/dev/null; then
        kill -TERM "$host"
        wait "$host" || true
    fi
    if [[ "$status" -ne 0 ]]; then
        echo "fuzz-api: host log (last 40 lines of $work/host.log):"
        tail -n 40 "$work/host.log" || true
    fi
    if [[ "${FUZZ_KEEP:-}" != 1 && "$status" -eq 0 ]]; then
        rm -rf "$work"
    else
        echo "fuzz-api: kept $work"
    fi
    exit "$status"
}
trap stop_host EXIT

for _ in $(seq 1 120); do
    curl -fsS "$base/health" >/dev/null 2>&1 && break
    kill -0 "$host" 2>/dev/null || { echo "fuzz-api: the host exited during start" >&2; exit 1; }
    sleep 0.5
done
curl -fsS "$base/health" >/dev/null

# A little data, so path parameters hit real rows part of the time.
api() {
    curl -fsS -X "$1" "$base$2" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        ${3:+--data "$3"}
}
id_of() { python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }
parent="$(api POST /workspaces '{"name": "Fuzz parent", "role": "lead"}' | id_of)"
child="$(api POST /workspaces "{\"name\": \"Fuzz child\", \"parent_id\": \"$parent\"}" | id_of)"
external="$(api POST /workspaces '{"name": "Fuzz external", "external": true}' | id_of)"
api PUT /settings/secrets '{"key": "FUZZ_GLOBAL", "value": "x"}' >/dev/null
api POST "/workspaces/$child/secrets" '{"key": "FUZZ_KEY", "value": "y"}' >/dev/null

cat >"$work/schemathesis.toml" <<EOF
[dictionaries.workspaces]
values = ["$parent", "$child", "$external"]

# A description that refers to something it does not define, or an operation no example
# could reach, is a failure of the description, not a note.
[warnings]
fail-on = ["unresolvable_reference", "unused_openapi_auth", "missing_deserializer", "unsupported_regex"]

[parameters]
"path.id" = { dictionary = "workspaces", probability = 0.5 }
"path.workspace_id" = { dictionary = "workspaces", probability = 0.5 }
EOF

seed_args=()
[[ -n "${FUZZ_SEED:-}" ]] && seed_args=(--seed "$FUZZ_SEED")

# Streams never end (the SSE routes, /ws), so they are left to the e2e specs. The fuzzer may
# delete the seeded workspaces; later calls on them answer 410, which the description lists.
echo "fuzz-api: schemathesis against $base/openapi.json ($EXAMPLES examples per operation)"
"$VENV/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" \
    --phases examples,coverage,fuzzing \
    --exclude-path-regex '/stream$|^/ws$' \
    --request-timeout 30 \
    --workers 2 \
    --report junit --report-dir "target/fuzz-report" \
    "${seed_args[@]}"
