#!/usr/bin/env bash
# make-venv.sh PYTHON DIR: create the project's virtual environment.
# Debian's system Python refuses `pip install` outside one (PEP 668, "externally managed"), and
# ships venv/ensurepip in a separate package: install python3-venv when the first try fails.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
  rm -rf "$venv"
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    minor=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    echo "$python cannot create a virtual environment; installing python3-venv" >&2
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-venv \
      || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "python${minor}-venv"
  fi
  "$python" -m venv "$venv"
fi
echo "created $venv ($("$venv/bin/python" --version))"
