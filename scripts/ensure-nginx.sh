#!/usr/bin/env bash
# The load-balanced end-to-end test runs JustIn behind nginx, which it starts itself with a
# configuration of its own. This makes sure an nginx binary is there: the one JUSTIN_TEST_NGINX
# names, or one on the PATH, or else Debian's package, installed when this runs as root with
# apt-get (as on a fresh development machine or in CI). Otherwise it says how to install one.
set -euo pipefail

if [[ -n "${JUSTIN_TEST_NGINX:-}" ]]; then
    exec "$JUSTIN_TEST_NGINX" -v
fi
if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
    exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-nginx: nginx is not installed; installing Debian's package for the load-balanced test"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
    exit 0
fi
echo "ensure-nginx: the load-balanced test needs nginx: install it (sudo apt-get install -y nginx)" \
    "or set JUSTIN_TEST_NGINX to an nginx binary" >&2
exit 1
