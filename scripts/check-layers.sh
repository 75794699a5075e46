#!/usr/bin/env bash
# Checks the hexagon: the core, the numerics and the algorithms must not reach the adapters'
# libraries.
#
# - justin-core must not reach diesel, r2d2, actix-web, ureq or fern (through any path), and
#   its direct normal dependencies must be on the allowed list below.
# - justin-numeric, which algorithm crates outside the workspace depend on, must not reach any
#   of those either, and has no dependencies at all.
# - justin-algos must not reach diesel or actix-web.
# - justin-simulate, a client of the service's HTTP API, must not reach the server: actix-web,
#   diesel, r2d2, the stores or justin-http.
# - justin-testkit is dev-only: the shipped binaries (justin-http's justin, justin-bench) must
#   not reach it through their normal dependencies.
#
# `cargo tree -p PKG -e normal -i CRATE` prints how PKG reaches CRATE and exits 0 when it
# does. When CRATE is not in PKG's graph at all, it exits non-zero with "package ID
# specification `CRATE` did not match any packages"; when CRATE is in the graph only through
# dev-dependencies, which `-e normal` leaves out, it exits 0 with "warning: nothing to print."
# and no path. Those two, and only those, count as "not reached". Any other failure of cargo
# stops the check (it never passes by not looking).
#
# Dependencies are resolved with all features and for all targets, so an optional or
# platform-specific dependency cannot slip through. Run from anywhere; CARGO overrides cargo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARGO="${CARGO:-cargo}"
TREE_FLAGS=(-e normal --all-features --target all)

# The only direct normal dependencies justin-core may have.
CORE_ALLOWED=(serde serde_json uuid chrono chrono-tz rand_pcg rand_core thiserror log)
CORE_FORBIDDEN=(diesel r2d2 actix-web ureq fern)
# The only direct normal dependencies justin-numeric may have: none.
NUMERIC_ALLOWED=()
ALGOS_FORBIDDEN=(diesel actix-web)
SIMULATE_FORBIDDEN=(actix-web diesel r2d2 justin-store justin-store-sqlite justin-http)

failures=0

fail() {
    echo "check-layers: FAIL: $*" >&2
    failures=$((failures + 1))
}

# forbid PKG CRATE...: fails for every CRATE that PKG reaches, printing the path.
forbid() {
    local pkg="$1"
    shift
    local crate out
    for crate in "$@"; do
        if out="$("$CARGO" tree -p "$pkg" "${TREE_FLAGS[@]}" -i "$crate" 2>&1)" &&
            ! grep -qx "warning: nothing to print." <<<"$out"; then
            fail "$pkg reaches $crate, which it must not depend on. Path (inverted, from $crate up to $pkg):"
            printf '%s\n' "$out" | sed 's/^/    /' >&2
        elif grep -q "package ID specification \`$crate\` did not match any packages" <<<"$out" ||
            grep -qx "warning: nothing to print." <<<"$out"; then
            echo "check-layers: ok: $pkg does not reach $crate"
        else
            echo "check-layers: ERROR: cannot tell whether $pkg reaches $crate; cargo tree said:" >&2
            printf '%s\n' "$out" | sed 's/^/    /' >&2
            exit 1
        fi
    done
}

# allow_only PKG ALLOWED...: fails for every direct normal dependency of PKG not listed.
allow_only() {
    local pkg="$1"
    shift
    local out name
    if ! out="$("$CARGO" tree -p "$pkg" "${TREE_FLAGS[@]}" --depth 1 --prefix none --format '{p}' 2>&1)"; then
        echo "check-layers: ERROR: cannot list the dependencies of $pkg; cargo tree said:" >&2
        printf '%s\n' "$out" | sed 's/^/    /' >&2
        exit 1
    fi
    # The first line is PKG itself; each other line is "name vX.Y.Z [...]".
    while read -r name _; do
        [[ -z "$name" || "$name" == "$pkg" ]] && continue
        if [[ " $* " == *" $name "* ]]; then
            echo "check-layers: ok: $pkg may depend on $name"
        else
            fail "$pkg depends directly on $name; it may depend only on: $*"
        fi
    done <<<"$out"
}

forbid justin-core "${CORE_FORBIDDEN[@]}"
allow_only justin-core "${CORE_ALLOWED[@]}"
forbid justin-numeric "${CORE_FORBIDDEN[@]}"
allow_only justin-numeric "${NUMERIC_ALLOWED[@]}"
forbid justin-algos "${ALGOS_FORBIDDEN[@]}"
forbid justin-simulate "${SIMULATE_FORBIDDEN[@]}"
forbid justin-http justin-testkit
forbid justin-bench justin-testkit

if ((failures > 0)); then
    echo "check-layers: $failures violation(s) of the layering rules (docs/architecture.md)." >&2
    exit 1
fi
echo "check-layers: the hexagon holds."
