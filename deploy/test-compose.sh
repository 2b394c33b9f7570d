#!/usr/bin/env bash
# The container tests (CI runs them): builds the image (deploy/build-image.sh), then, against containers of that
# image under podman (deploy/container_tests.py has the steps and what each checks):
#   compose      deploy/compose.yaml unchanged, through podman-compose: kill, restart and cut off containers;
#   compose-tls  the same with deploy/compose.tls.yaml and certificates mounted from files;
#   k8s          the StatefulSet's pods (command, environment, security context, volumes, probes) as containers.
# Everything started is removed at the end, also on failure.
#
# Usage: deploy/test-compose.sh [--archive FILE --binary PATH] [compose] [compose-tls] [k8s]   (default: all three)
#   --archive FILE --binary PATH   test this image archive and its static binary instead of building them
#
# Needs root and podman working (Debian: `apt-get install podman runc`; .ci/run also configures it), Chromium for
# the dashboard step, and what deploy/build-image.sh needs. podman-compose, Playwright and PyYAML come from PyPI
# into a venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PODMAN_COMPOSE_VERSION=1.6.0
PLAYWRIGHT_VERSION=1.65.2
PYYAML_VERSION=6.0.4
archive="" binary="" tests=()
while [ $# -gt 0 ]; do
  case "$1" in
    --archive) archive="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    compose|compose-tls|k8s) tests+=("$1"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "test-compose.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#tests[@]} -gt 0 ] || tests=(compose compose-tls k8s)
if { [ -n "$archive" ] && [ -z "$binary" ]; } || { [ -z "$archive" ] && [ -n "$binary" ]; }; then
  echo "test-compose.sh: --archive and --binary go together" >&2
  exit 2
fi

# Rootful podman: the tests give files to the image's user (uid 10001) and reach containers at their addresses.
if [ "$(id -u)" != 0 ]; then
  echo "test-compose.sh: run as root (the tests need rootful podman: file ownership for uid 10001, container addresses)" >&2
  exit 1
fi
if ! podman info >/dev/null 2>&1; then
  echo "test-compose.sh: podman does not work here:" >&2
  podman info 2>&1 | tail -3 >&2 || true
  echo "(install it with apt-get install podman runc; see .ci/run for the configuration this machine needs)" >&2
  exit 1
fi

tools=${RAFTKV_TOOLS_DIR:-$HOME/.cache/raftkv-tools}
venv="$tools/containers-venv"
# PyYAML: the k8s test reads the manifests.
want="podman-compose==$PODMAN_COMPOSE_VERSION playwright==$PLAYWRIGHT_VERSION pyyaml==$PYYAML_VERSION"
if [ "$(cat "$venv/.installed" 2>/dev/null || true)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want
  echo "$want" > "$venv/.installed"
fi

if [ -z "$archive" ]; then
  archive="target/container/raftkv-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml).tar"
  bash deploy/build-image.sh --archive "$archive" >/dev/null
  binary="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/image/raftkv"
fi

for test in "${tests[@]}"; do
  echo "=== container test: $test"
  case "$test" in
    compose) flags=(compose) ;;
    compose-tls) flags=(compose --tls) ;;
    k8s) flags=(k8s) ;;
  esac
  "$venv/bin/python" deploy/container_tests.py "${flags[@]}" --raftkv "$binary" --archive "$archive" \
    --podman-compose "$venv/bin/podman-compose"
done
echo "container tests passed: ${tests[*]}"
