#!/usr/bin/env bash
# `make lifejacket`: a simulated thompson study from the service to lifejacket's estimate.
#
# 1. Creates (or refreshes) the virtual environment .venv-analysis/ with the pinned packages of
#    analysis/requirements.txt (lifejacket 2.0.0 and everything it needs), and runs the tests
#    of the converter and of thompson's JAX functions (analysis/tests).
# 2. Builds the debug binaries (the same cargo command as `make test`, so CI builds nothing
#    again) and starts `justin serve` on a fresh SQLite file in a temporary directory, with
#    thompson (one feature, temperature) and a schedule of one decision a day at 08:00 UTC.
# 3. Runs `justin simulate`: LJ_PARTICIPANTS participants x LJ_TIMES daily decision times, an
#    update every LJ_UPDATE_EVERY decisions, with unavailable decisions, missing outcomes, late
#    uploads and decision times without a call. Then stops the server.
# 4. `justin replay --updates` (every update recomputed from the rows it read), then
#    `justin export --for lifejacket`, the conversion (analysis/justin_lifejacket), a check that
#    the study holds what it must (an unavailable decision, a missing outcome, a late upload, a
#    time without a call, LJ_MIN_POLICIES policies), and lifejacket: its input checks and its
#    analysis with the diagnostic suite, without prompts.
#
# Fails on any failed step or check. lifejacket's diagnostic verdict is printed as it is: a
# verdict other than certified is not a failure (a small simulated study is rarely certified).
# Variables: CARGO, LJ_PARTICIPANTS (40), LJ_TIMES (30), LJ_UPDATE_EVERY (200), LJ_SEED (1),
# LJ_DIAGNOSTICS (1; 0 skips the diagnostic suite), LJ_UNAVAILABLE_PROB (recorded; or a
# placeholder in (0, 1), see docs/analysis.md), LJ_KEEP (a directory to keep the study's files
# in; by default they go with the temporary directory).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
CARGO="${CARGO:-cargo}"
LJ_PARTICIPANTS="${LJ_PARTICIPANTS:-40}"
LJ_TIMES="${LJ_TIMES:-30}"
LJ_UPDATE_EVERY="${LJ_UPDATE_EVERY:-200}"
LJ_SEED="${LJ_SEED:-1}"
LJ_DIAGNOSTICS="${LJ_DIAGNOSTICS:-1}"
LJ_UNAVAILABLE_PROB="${LJ_UNAVAILABLE_PROB:-recorded}"
LJ_MIN_POLICIES="${LJ_MIN_POLICIES:-6}"
VENV=.venv-analysis
REQUIREMENTS=analysis/requirements.txt
API_KEY="lifejacket-key-0123456789abcdef"

say() { echo "lifejacket: $*" >&2; }
started=$SECONDS
step_started=$SECONDS
step() {
    say "$1 ($((SECONDS - step_started)) s for the step before; $((SECONDS - started)) s in all)"
    step_started=$SECONDS
}

# 1. The virtual environment, rebuilt when the requirements change, and the Python tests.
stamp="$VENV/.requirements.sha256"
wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    say "installing $REQUIREMENTS into $VENV/"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$wanted" >"$stamp"
fi
PY="$ROOT/$VENV/bin/python"
# Python's output in order with the rest of the log.
export PYTHONUNBUFFERED=1
step "the tests of the converter and of the JAX functions"
(cd analysis && "$PY" -m unittest discover -s tests)

# 2. The binaries and the server.
step "building"
"$CARGO" build --workspace --bins
bin="$("$CARGO" metadata --format-version 1 --no-deps |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/justin"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/justin-lifejacket.XXXXXX")"
server=""
cleanup() {
    if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [[ -n "${LJ_KEEP:-}" ]]; then
        mkdir -p "$LJ_KEEP"
        cp -r "$scratch"/. "$LJ_KEEP"/ 2>/dev/null || true
        say "the study's files are in $LJ_KEEP"
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

# In the scratch directory only this config.toml is read.
cat >"$scratch/config.toml" <<EOF
[server]
host = "127.0.0.1"
port = 0
workers = 2

[database]
url = "sqlite://$scratch/study.db"

[auth]
api_keys = [{ name = "lifejacket", key = "$API_KEY" }]

[algorithm]
name = "thompson"
seed = 7

[algorithm.options]
features = ["temperature"]

[algorithm.priors]
variance = 10.0
noise_variance = 1.0

[backup]
dir = "$scratch/backups"

[logging]
dir = "$scratch/logs"
stdout = true
level = "warn,justin_http::startup=info"

[update]
callback_allowed_hosts = ["127.0.0.1"]

[schedule]
place_by = "time"
time_zone = "UTC"
times = [{ decision_type = "default", at = "08:00" }]
EOF

step "starting the server"
log="$scratch/server.log"
(
    cd "$scratch"
    unset JUSTIN_CONFIG DATABASE_URL
    exec "$bin" serve
) >"$log" 2>&1 &
server=$!
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

# 3. The study: one decision a day from 2026-01-05 08:00 UTC, everyone in study for LJ_TIMES days.
step "simulating at $base"
(cd "$scratch" && JUSTIN_API_KEY="$API_KEY" "$bin" simulate --url "$base" \
    --participants "$LJ_PARTICIPANTS" --decision-times "$LJ_TIMES" \
    --update-every "$LJ_UPDATE_EVERY" --seed "$LJ_SEED" \
    --start 2026-01-05T08:00:00Z --decision-time-secs 86400 --study-length "$LJ_TIMES" \
    --features temperature:25:5 \
    --reward-intercept 1 --reward-coef temperature=0.05 \
    --reward-action 0.4 --reward-action-coef temperature=-0.01 --noise-sd 1 \
    --unavailable-share 0.05 --missing-outcome-share 0.05 --late-upload-share 0.05 \
    --missed-call-share 0.02 \
    --out "$scratch/simulation.csv")
kill "$server"
wait "$server" 2>/dev/null || true
server=""
if grep -n 'panicked' "$log" >&2; then
    say "the server panicked (lines above)"
    exit 1
fi

# 4. Replay, export, conversion and lifejacket.
step "replaying every update"
(cd "$scratch" && "$bin" replay --updates)
step "exporting"
(cd "$scratch" && "$bin" export --for lifejacket "$scratch/export")
step "converting"
(cd analysis && "$PY" -m justin_lifejacket.convert "$scratch/export" "$scratch/lifejacket" \
    --unavailable-prob "$LJ_UNAVAILABLE_PROB")
(cd analysis && "$PY" -m justin_lifejacket.study_check "$scratch/export" \
    --min-policies "$LJ_MIN_POLICIES")
step "running lifejacket"
diagnostics=()
if [[ "$LJ_DIAGNOSTICS" == 0 ]]; then
    diagnostics=(--no-diagnostics)
fi
(cd analysis && "$PY" -m justin_lifejacket.run "$scratch/lifejacket" "${diagnostics[@]}")
step "done"
