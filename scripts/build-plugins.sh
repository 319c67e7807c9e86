#!/usr/bin/env bash
# Builds the plugins workspace (guest SDK, reference plugins) for wasm32-wasip2 and copies the
# components to plugins/dist/, where the service's tests and `export-service plugin` find them.
set -euo pipefail
cd "$(dirname "$0")/../plugins"

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --locked --release --target wasm32-wasip2 --workspace
target=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
mkdir -p dist
for wasm in "$target"/wasm32-wasip2/release/*.wasm; do
  cp "$wasm" dist/
done
ls -la dist/ >&2
