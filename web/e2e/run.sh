#!/usr/bin/env bash
# Runs the dashboard's end-to-end browser test: Playwright (from PyPI, in a venv) drives Debian's headless
# Chromium against a real `raftkv cluster`. Needs `chromium` (apt) and a built dashboard (web/build.sh).
# Screenshots of each step go to .ci/artifacts/dashboard/ (override with --out DIR).
# Usage: bash web/e2e/run.sh [--raftkv PATH] [--out DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools=${RAFTKV_TOOLS_DIR:-$HOME/.cache/raftkv-tools}
venv="$tools/e2e-venv"
if ! "$venv/bin/python" -c "import playwright" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
command -v chromium >/dev/null || { echo "chromium is not installed (apt-get install chromium)" >&2; exit 1; }
exec "$venv/bin/python" "$here/dashboard_test.py" "$@"
