#!/usr/bin/env bash
# The browser test (tests/e2e/browser.rs) loads the dashboard in headless Chromium through
# ChromeDriver: Debian's packages `chromium` and `chromium-driver` (/usr/bin/chromium,
# /usr/bin/chromedriver; JUSTIN_TEST_CHROMIUM and JUSTIN_TEST_CHROMEDRIVER name others).
#
#   ensure-chromium.sh           exit 0 when both are there; else say how to install them, exit 1
#   ensure-chromium.sh --install install Debian's packages when missing and this runs as root
#                                with apt-get (as CI does on a fresh machine), then check again
set -euo pipefail

CHROMIUM="${JUSTIN_TEST_CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER="${JUSTIN_TEST_CHROMEDRIVER:-/usr/bin/chromedriver}"
INSTALL="apt-get install chromium chromium-driver"

present() {
    [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]
}

if present; then
    exit 0
fi
if [[ "${1:-}" == "--install" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: installing Debian's chromium and chromium-driver for the browser test"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null
    present && exit 0
fi
echo "ensure-chromium: $CHROMIUM or $CHROMEDRIVER not found: install with \`$INSTALL\`" >&2
exit 1
