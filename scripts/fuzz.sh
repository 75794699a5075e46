#!/usr/bin/env bash
# `make fuzz`: runs schemathesis against a throwaway release server and fails on any finding.
#
# 1. Creates (or refreshes) the virtual environment .venv-fuzz/ with the pinned packages of
#    scripts/fuzz-requirements.txt.
# 2. Builds the release `justin` binary and starts it on a free loopback port with a fresh
#    SQLite database in a temporary directory (FUZZ_DATABASE_URL names another database, e.g. a
#    PostgreSQL one, which is then used as it is and left behind).
# 3. Runs schemathesis on the served /api/v1/openapi.json: every phase, at most
#    FUZZ_MAX_EXAMPLES cases per operation and phase, seeded by FUZZ_SEED, with the checks in
#    CHECKS below. Any 5xx, any status the document does not list, any answer that is not JSON
#    or breaks its schema, and any undocumented method not answered 405 with an `Allow` header
#    is a finding. (schemathesis leaves out the document's own operation.)
# 4. Stops the server; a panic in its log is a finding too. Exits non-zero on any finding.
#
# Callbacks may only go to 127.0.0.1, so the run never POSTs to a host the fuzzer made up;
# scripts/fuzz_hooks.py points acceptable generated callback URLs at a local receiver.
# Variables: CARGO, FUZZ_MAX_EXAMPLES (100), FUZZ_SEED (1), FUZZ_WORKERS (2), FUZZ_API_KEY
# (the server's one API key, sent as the bearer key; at least 16 characters), FUZZ_DATABASE_URL, FUZZ_CHECKS (replaces CHECKS), FUZZ_EXTRA_ARGS
# (more schemathesis options, e.g. "--report har --report-dir /tmp/fuzz-report").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARGO="${CARGO:-cargo}"
FUZZ_MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
FUZZ_SEED="${FUZZ_SEED:-1}"
FUZZ_WORKERS="${FUZZ_WORKERS:-2}"
FUZZ_API_KEY="${FUZZ_API_KEY:-fuzz-key-0123456789abcdef}"
VENV=.venv-fuzz
REQUIREMENTS=scripts/fuzz-requirements.txt
CHECKS="${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,unsupported_method,allow_header_conformance,ignored_auth}"

say() { echo "fuzz: $*" >&2; }

# 1. The virtual environment, rebuilt when the requirements change.
stamp="$VENV/.requirements.sha256"
wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/schemathesis" || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    say "installing $REQUIREMENTS into $VENV/"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$wanted" >"$stamp"
fi

# 2. The server.
"$CARGO" build --release -p justin-http --bin justin
bin="$("$CARGO" metadata --format-version 1 --no-deps |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/justin"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/justin-fuzz.XXXXXX")"
server=""
cleanup() {
    if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

log="$scratch/server.log"
(
    # In the scratch directory no config.toml is read: the defaults and these variables hold.
    cd "$scratch"
    unset JUSTIN_CONFIG DATABASE_URL
    export JUSTIN_SERVER__HOST=127.0.0.1
    export JUSTIN_SERVER__PORT=0
    export JUSTIN_SERVER__WORKERS=2
    export JUSTIN_DATABASE__URL="${FUZZ_DATABASE_URL:-sqlite://$scratch/fuzz.db}"
    export JUSTIN_BACKUP__DIR="$scratch/backups"
    export JUSTIN_LOGGING__DIR="$scratch/logs"
    export JUSTIN_LOGGING__STDOUT=true
    export JUSTIN_LOGGING__LEVEL=warn,justin_http::startup=info
    export JUSTIN_UPDATE__CALLBACK_ALLOWED_HOSTS='["127.0.0.1"]'
    # The API requires the key schemathesis sends; its ignored_auth check tries without it.
    export JUSTIN_AUTH__API_KEYS="[{name=\"fuzz\",key=\"$FUZZ_API_KEY\"}]"
    export JUSTIN_UPDATE__CALLBACK_ATTEMPTS=1
    export JUSTIN_UPDATE__CALLBACK_TIMEOUT_SECS=1
    exec "$bin" serve
) >"$log" 2>&1 &
server=$!

# The server logs "listening on http://ADDR" once it accepts connections.
base=""
for _ in $(seq 1 300); do
    base="$(grep -o 'listening on http://[^ ]*' "$log" | head -n1 | sed 's/^listening on //')" || true
    [[ -n "$base" ]] && break
    if ! kill -0 "$server" 2>/dev/null; then
        say "the server did not start:"
        cat "$log" >&2
        exit 1
    fi
    sleep 0.2
done
if [[ -z "$base" ]]; then
    say "the server did not say where it listens within 60 s:"
    cat "$log" >&2
    exit 1
fi
say "server at $base; $FUZZ_MAX_EXAMPLES cases per operation and phase, seed $FUZZ_SEED"

# 3. The run.
started=$SECONDS
status=0
hooks="$PWD/scripts/fuzz_hooks.py"
schemathesis="$PWD/$VENV/bin/schemathesis"
# From the scratch directory, so schemathesis's caches go with it; no example database either:
# a run depends on its seed alone.
# shellcheck disable=SC2086 # FUZZ_EXTRA_ARGS is a list of options.
(cd "$scratch" && SCHEMATHESIS_HOOKS="$hooks" "$schemathesis" run "$base/api/v1/openapi.json" \
    --url "$base" \
    --generation-database none \
    --checks "$CHECKS" \
    --max-examples "$FUZZ_MAX_EXAMPLES" \
    --seed "$FUZZ_SEED" \
    --workers "$FUZZ_WORKERS" \
    --header "Authorization: Bearer $FUZZ_API_KEY" \
    --request-timeout 30 \
    --no-color \
    ${FUZZ_EXTRA_ARGS:-}) || status=$?
say "schemathesis finished in $((SECONDS - started)) s with exit status $status"

# 4. The server's own account.
if grep -n 'panicked' "$log" >&2; then
    say "the server panicked (lines above)"
    status=1
fi
if ! kill -0 "$server" 2>/dev/null; then
    say "the server died during the run:"
    tail -n 50 "$log" >&2
    status=1
fi
exit "$status"
