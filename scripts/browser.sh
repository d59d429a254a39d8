#!/usr/bin/env bash
# Install the system Chromium that the browser tests (tests/browser, Playwright's Python package with
# executable_path=/usr/bin/chromium) drive, from Debian's package, when it is missing. Idempotent.
# Playwright's own `playwright install` downloads a browser build and cannot work on these machines.
# As root it runs apt-get itself; otherwise through `sudo -n` when that needs no password. When it
# cannot install: in CI (CI=true) it fails, elsewhere it warns and the browser tests skip.
set -euo pipefail

CHROMIUM="${BROWSER_TEST_CHROMIUM:-/usr/bin/chromium}"
log() { echo "browser: $*" >&2; }

[ -x "$CHROMIUM" ] && exit 0

cannot_install() {
  if [ "${CI:-}" = "true" ]; then log "$1"; exit 1; fi
  log "$1; the browser tests will be skipped"
  exit 0
}

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    cannot_install "missing $CHROMIUM; install it (sudo apt-get install chromium) or run as root"
  fi
fi

# fonts-dejavu-core: pages and screenshots need at least one font; a bare image may have none.
packages=(chromium fonts-dejavu-core)
log "installing ${packages[*]} (apt-get)"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
  || cannot_install "apt-get update failed"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${packages[@]}" >&2 || cannot_install "apt-get install ${packages[*]} failed"
[ -x "$CHROMIUM" ] || cannot_install "apt-get installed chromium but $CHROMIUM is not there"
log "installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
