#!/usr/bin/env bash
# What tests/test_browser.py needs besides the Python packages of `.[test]`: a Chromium for that
# environment's Playwright to drive. Debian's chromium is used as it is (the test passes its path to
# Playwright), so no `playwright install` download is needed there. apt-get runs as it is when this
# runs as root (CI, containers), through sudo otherwise. Safe to run again.
# VENV: the Python environment that holds playwright (default .venv, which `make setup` makes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python

# Playwright is one of the project's own packages: a copy pip-installed here would be a version the
# rest of the environment was never resolved or tested with.
if ! "$PY" -c "import playwright" 2>/dev/null; then
  echo "install_browser.sh: $PY cannot import playwright, which comes with the project's Python" \
       "environment: run \`make setup\` first, then this again." >&2
  exit 1
fi

if [ -n "${VOXTRAL_CHROMIUM:-}" ]; then
  if [ ! -x "$VOXTRAL_CHROMIUM" ]; then
    echo "install_browser.sh: VOXTRAL_CHROMIUM=$VOXTRAL_CHROMIUM is not an executable file: point it at a" \
         "Chromium binary, or unset it to have the distribution's chromium installed." >&2
    exit 1
  fi
  chromium=$VOXTRAL_CHROMIUM
else
  chromium=$(command -v chromium || command -v chromium-browser || true)
fi

if [ -z "$chromium" ]; then
  SUDO=()
  [ "$(id -u)" = 0 ] || SUDO=(sudo)
  echo "Installing Chromium (apt-get, about 110 packages and 350 MB on Debian 12)"
  # `env`, not a bare VAR=value: without sudo in front bash would take the assignment for the command
  # name, and sudo's env_reset would drop an exported DEBIAN_FRONTEND.
  if "${SUDO[@]}" apt-get update -qq &&
     "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium &&
     chromium=$(command -v chromium); then
    :
  # Ubuntu ships chromium as a snap, which containers cannot run: take Playwright's own build.
  elif echo "apt-get could not install chromium; trying Playwright's own build instead" &&
       "$PY" -m playwright install --with-deps chromium; then
    chromium="Playwright's Chromium"
  else
    cat >&2 <<EOF
install_browser.sh: no Chromium could be installed.
  - \`apt-get install chromium\` failed (on Ubuntu chromium is a snap, which containers cannot run),
  - and so did \`$PY -m playwright install --with-deps chromium\` (Playwright's download server may be out of reach).
Fix: install a Chromium from your distribution (on Debian: sudo apt-get install chromium),
or set VOXTRAL_CHROMIUM to the path of a Chromium binary; then run \`make browser\` again.
EOF
    exit 1
  fi
fi
echo "Browser test tools: $chromium, playwright $("$PY" -c 'from importlib.metadata import version; print(version("playwright"))')"
