#!/usr/bin/env bash
# What tests/test_browser.py needs besides the Python packages of `.[test]`: a Chromium, and
# Playwright's Python package to drive it. Debian's chromium is used as it is (the test passes
# its path to Playwright), so no `playwright install` download is needed. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  echo "Installing Chromium (apt-get, about 110 packages and 350 MB on Debian 12)"
  $SUDO apt-get update -qq
  if ! $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; then
    # Ubuntu ships chromium as a snap, which containers cannot run: take Playwright's own build.
    .venv/bin/python -m pip install -q playwright
    .venv/bin/python -m playwright install --with-deps chromium
  fi
fi
.venv/bin/python -c "import playwright" 2>/dev/null || .venv/bin/python -m pip install -q playwright
echo "Browser test tools: $(command -v chromium || command -v chromium-browser || echo 'Playwright Chromium'), playwright $(.venv/bin/python -c 'from importlib.metadata import version; print(version("playwright"))')"
