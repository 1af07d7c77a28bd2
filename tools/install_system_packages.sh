#!/usr/bin/env bash
# The system packages `make setup` needs before the Python ones: ffmpeg (audio decoding, MP3 writing),
# espeak-ng (the spoken questions of the tiny profile and the tests) and python3-venv (for .venv).
# Only the missing ones are installed, with apt-get: as it is when run as root (CI, containers),
# through sudo otherwise. Safe to run again. PYTHON: the Python that makes .venv (default python3).
set -euo pipefail
PYTHON=${PYTHON:-python3}

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null; then
  SUDO=(sudo)
else
  echo "install_system_packages.sh: ${missing[*]} missing, and installing them needs root: run this as root," \
       "install sudo, or install them yourself (apt-get install ${missing[*]})." >&2
  exit 1
fi
echo "Installing system packages: ${missing[*]} (apt-get)"
"${SUDO[@]}" apt-get update -qq
# `env`, not a bare VAR=value: without sudo in front bash would take the assignment for the command
# name, and sudo's env_reset would drop an exported DEBIAN_FRONTEND.
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
