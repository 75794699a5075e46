#!/usr/bin/env bash
# Exits 0 when something accepts TCP connections at the host and port of the PostgreSQL URL
# given as $1 (default: JUSTIN_TEST_DATABASE_URL, then the local server). Needs only bash.
set -euo pipefail
url="${1:-${JUSTIN_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
# postgres://[user[:password]@]host[:port][/database][?query]
authority="${url#*://}"
authority="${authority%%/*}"
authority="${authority%%\?*}"
hostport="${authority##*@}"
host="${hostport%%:*}"
port=5432
[[ "$hostport" == *:* ]] && port="${hostport##*:}"
timeout 3 bash -c "exec 3<>/dev/tcp/${host:-127.0.0.1}/${port}" 2>/dev/null
