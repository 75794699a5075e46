#!/usr/bin/env bash
# `make clients`: what a study server's team generates from docs/openapi.json, and a study run
# through it (docs/clients.md).
#
# 1. Installs the pinned tools: openapi-python-client (clients/requirements.txt) into the
#    virtual environment .venv-clients/, and openapi-typescript, typescript and @redocly/cli
#    (clients/package.json, clients/package-lock.json) into clients/node_modules/ with `npm ci`.
#    Each is reinstalled when its pins change.
# 2. Builds the debug binaries (the same cargo command as `make test`, so CI builds nothing
#    again) and checks that docs/openapi.json is what `justin openapi` prints (`make openapi`).
# 3. Lints the document with the pinned Redocly CLI (clients/redocly.yaml: the recommended
#    rules, every one an error; the reasoned exceptions in clients/.redocly.lint-ignore.yaml).
# 4. Generates the TypeScript types into target/clients/typescript/justin.ts and type-checks
#    clients/example.ts, every request of the README, with `tsc --strict --noEmit`.
# 5. Generates the Python client into target/clients/python/justin_client (failing on any
#    warning of the generator).
# 6. Starts two `justin serve` on fresh SQLite files in a temporary directory, on free ports:
#    one without keys, one with an API key (JUSTIN_AUTH__API_KEYS). Runs clients/study_flow.py
#    through the generated Python client against them: a whole study with its update callback,
#    and the 400, 404, 409 and 401 answers as typed errors. Then stops both and fails on a
#    panic in their logs.
#
# Fails on any failed step. Generated code is not committed: it lives under target/clients/.
# Variables: CARGO, CLIENTS_KEEP (a directory to keep the servers' files in; by default they go
# with the temporary directory).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
CARGO="${CARGO:-cargo}"
VENV=.venv-clients
REQUIREMENTS=clients/requirements.txt
NODE_DIR=clients
OUT=target/clients
API_KEY="clients-key-0123456789abcdef"
# The servers run on this machine; no proxy stands between them and the clients.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

say() { echo "clients: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}
started=$SECONDS
step_started=$SECONDS
step() {
    say "$1 ($((SECONDS - step_started)) s for the step before; $((SECONDS - started)) s in all)"
    step_started=$SECONDS
}

for tool in python3 node npm; do
    command -v "$tool" >/dev/null 2>&1 ||
        fail "$tool is not installed; make clients needs Python 3, Node.js and npm"
done

# 1. The pinned tools, reinstalled when their pins change.
step "the pinned tools"
stamp="$VENV/.requirements.sha256"
wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    say "installing $REQUIREMENTS into $VENV/"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$wanted" >"$stamp"
fi
PY="$ROOT/$VENV/bin/python"
# The generator runs ruff (in the venv) on what it writes.
export PATH="$ROOT/$VENV/bin:$PATH"
node_stamp="$NODE_DIR/node_modules/.package-lock.sha256"
node_wanted="$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)"
if [[ "$(cat "$node_stamp" 2>/dev/null)" != "$node_wanted" ]]; then
    say "installing $NODE_DIR/package-lock.json into $NODE_DIR/node_modules/"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$node_wanted" >"$node_stamp"
fi
BIN="$ROOT/$NODE_DIR/node_modules/.bin"
installed() { node -p "require('./$NODE_DIR/node_modules/$1/package.json').version"; }
say "openapi-python-client $("$VENV/bin/openapi-python-client" --version | grep -o '[0-9][0-9.]*'), openapi-typescript $(installed openapi-typescript), typescript $(installed typescript), @redocly/cli $(installed @redocly/cli)"
# Redocly's CLI neither reports usage nor looks for updates: it is pinned, and CI reaches no
# other host than the package registries.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
# Python's output in order with the rest of the log.
export PYTHONUNBUFFERED=1

# 2. The binaries, and the committed document against the code's.
step "building"
"$CARGO" build --workspace --bins
bin="$("$CARGO" metadata --format-version 1 --no-deps |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/justin"
"$bin" openapi | cmp -s - docs/openapi.json ||
    fail "docs/openapi.json is not the document the code describes: run \`make openapi\` and commit it"

# 3. The lint.
step "linting docs/openapi.json (@redocly/cli, clients/redocly.yaml)"
"$BIN/redocly" lint --config clients/redocly.yaml docs/openapi.json ||
    fail "docs/openapi.json does not lint clean (above)"

# 4. TypeScript.
step "generating TypeScript types into $OUT/typescript/ and type-checking clients/example.ts"
rm -rf "$OUT"
mkdir -p "$OUT/typescript" "$OUT/python"
"$BIN/openapi-typescript" docs/openapi.json -o "$OUT/typescript/justin.ts" ||
    fail "openapi-typescript could not generate the types"
"$BIN/tsc" -p clients/tsconfig.json --strict --noEmit ||
    fail "clients/example.ts does not type-check against the generated types (above)"

# 5. Python.
step "generating the Python client into $OUT/python/justin_client"
"$VENV/bin/openapi-python-client" generate --path docs/openapi.json \
    --output-path "$OUT/python/justin_client" --meta none --fail-on-warning ||
    fail "openapi-python-client could not generate the client without a warning (above)"

# 6. Two services and the study.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/justin-clients.XXXXXX")"
servers=()
cleanup() {
    for pid in "${servers[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n "${CLIENTS_KEEP:-}" ]]; then
        mkdir -p "$CLIENTS_KEEP"
        cp -r "$scratch"/. "$CLIENTS_KEEP"/ 2>/dev/null || true
        say "the servers' files are in $CLIENTS_KEEP"
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

# Starts `justin serve` in $scratch/$1 with the environment after it; sets $base to its URL.
base=""
serve() {
    local dir="$scratch/$1"
    shift
    mkdir -p "$dir"
    # In that directory only this config.toml is read: the tests' settings, on a free port.
    cat >"$dir/config.toml" <<EOF
[server]
host = "127.0.0.1"
port = 0
workers = 2

[database]
url = "sqlite://$dir/study.db"

[backup]
dir = "$dir/backups"

[logging]
dir = "$dir/logs"
stdout = true
level = "warn,justin_http::startup=info"

[update]
callback_allowed_hosts = ["127.0.0.1"]
callback_attempts = 3
callback_backoff_ms = 100
EOF
    (
        cd "$dir"
        unset JUSTIN_CONFIG DATABASE_URL
        exec env "$@" "$bin" serve
    ) >"$dir/server.log" 2>&1 &
    servers+=($!)
    local pid=$!
    base=""
    for _ in $(seq 1 300); do
        base="$(grep -o 'listening on http://[^ ]*' "$dir/server.log" | head -n1 | sed 's/^listening on //')" || true
        [[ -n "$base" ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$dir/server.log" >&2
            fail "the server in $dir did not start (log above)"
        fi
        sleep 0.2
    done
    cat "$dir/server.log" >&2
    fail "the server in $dir did not say where it listens within 60 s (log above)"
}

step "starting a service without keys and one with a key"
serve open
open_url="$base"
serve keyed "JUSTIN_AUTH__API_KEYS=[{name=\"clients\",key=\"$API_KEY\"}]"
keyed_url="$base"
say "without keys at $open_url, with a key at $keyed_url"

step "running clients/study_flow.py through the generated Python client"
PYTHONPATH="$ROOT/$OUT/python" "$PY" clients/study_flow.py \
    --url "$open_url" --keyed-url "$keyed_url" --key "$API_KEY" ||
    fail "the study through the generated Python client failed (above)"

for pid in "${servers[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
servers=()
if grep -n 'panicked' "$scratch"/*/server.log >&2; then
    fail "a server panicked (lines above)"
fi
step "done: the document lints clean, the TypeScript example type-checks, the Python study passed"
