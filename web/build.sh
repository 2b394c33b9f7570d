#!/usr/bin/env bash
# Builds the dashboard into web/dist (release: size-optimized wasm), installing what it needs first, once:
# the wasm32 target, trunk, wasm-bindgen-cli of exactly the version in Cargo.lock, and wasm-opt from npm's binaryen
# (Debian's binaryen 108 produces modules Chromium rejects). Nothing is downloaded by trunk itself (--offline).
# Usage: bash web/build.sh [extra trunk build args]
set -euo pipefail
cd "$(dirname "$0")"
TRUNK_VERSION=0.21.14
BINARYEN_VERSION=132.0.0
WASM_BINDGEN_VERSION=$(grep -A1 '^name = "wasm-bindgen"$' ../Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
tools=${RAFTKV_TOOLS_DIR:-$HOME/.cache/raftkv-tools}

# Is `$1` on PATH and does `$1 --version` mention `$2`?
have() { command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -qF "$2"; }

rustup target add wasm32-unknown-unknown >/dev/null
have trunk "$TRUNK_VERSION" || cargo install --locked trunk --version "$TRUNK_VERSION"
# Not --locked: one of wasm-bindgen-cli's locked dependency versions is no longer in the registry.
have wasm-bindgen "$WASM_BINDGEN_VERSION" || cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
export PATH="$tools/binaryen/node_modules/.bin:$PATH"
if ! have wasm-opt "version ${BINARYEN_VERSION%%.*}"; then
  npm install --silent --no-audit --no-fund --prefix "$tools/binaryen" "binaryen@$BINARYEN_VERSION"
fi

trunk build --release --offline "$@"
wasm=$(ls dist/*.wasm)
echo "dashboard built in $(pwd)/dist: $(wc -c <"$wasm") bytes of wasm, $(gzip -9c "$wasm" | wc -c) gzipped"
