#!/usr/bin/env bash
# Debian's chromium and chromium-driver for rag_app's browser tests (tests/test_app_browser.py), with
# apt-get when either is missing (idempotent: nothing happens when both are there). Fails with a clear
# message when they cannot be installed; the browser tests then fail too (they are never skipped).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
fail() {
  echo "install_browser.sh: cannot install chromium and chromium-driver ($1); install them as root with" \
    "'apt-get install -y chromium chromium-driver', or the browser tests (tests/test_app_browser.py) fail" >&2
  exit 1
}
command -v apt-get >/dev/null || fail "no apt-get on this system"
SUDO=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null && sudo -n true 2>/dev/null || fail "not root and no password-less sudo"
  SUDO=(sudo -n)
fi
echo "install_browser.sh: installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null || fail "apt-get update failed"
"${SUDO[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null || fail "apt-get install failed"
command -v chromium >/dev/null && command -v chromedriver >/dev/null || fail "installed, but not on PATH"
