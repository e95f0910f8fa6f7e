#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs the whole suite.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/redis-server ]; then
  # Debian's chromium drives the browser tests (Playwright with executable_path; never `playwright install`);
  # Debian's redis-server backs the Redis / Celery / live-fills tests (each test starts its own on a free port).
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium redis-server >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"

python3 -m pytest -q -p no:cacheprovider "$@"
