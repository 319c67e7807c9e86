#!/usr/bin/env bash
# Builds the plugins workspace (guest SDK, reference plugins) for wasm32-wasip2, the Python
# plugins of plugins/python/ (with componentize-py from PyPI, installed in a venv of the
# project's own) and the JavaScript ones of plugins/js/ (with componentize-js from npm, pinned
# by plugins/js/package-lock.json), and copies the components to plugins/dist/, where the
# service's tests and `export-service plugin` find them.
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

# Python plugins (record mode). componentize-py is pinned; a plugin is rebuilt only when its
# sources, the contract or the tool's version changed (a build takes about 15 s).
componentize_py_version=0.25.0
tools=${EXPORT_SERVICE_TOOLS:-/var/tmp/export-service/tools}
componentize_py=$tools/py/bin/componentize-py
if ! "$componentize_py" --version 2>/dev/null | grep -qx "componentize-py $componentize_py_version"; then
  python3 -m venv "$tools/py"
  "$tools/py/bin/pip" install -q --disable-pip-version-check "componentize-py==$componentize_py_version"
fi
# Whether dist/$1.wasm was built from the files $2… (a stamp of their contents beside it).
up_to_date() {
  local name=$1
  shift
  stamp=$(cat "$@" | sha256sum | cut -c1-64)
  [ -f "dist/$name.wasm" ] && [ "$(cat "dist/$name.stamp" 2>/dev/null)" = "$stamp" ]
}
for app in python/*/app.py; do
  app=$(dirname "$app")/
  name=$(basename "$app" | tr - _)_py
  up_to_date "$name" "$app"*.py ../wit/*.wit <(echo "$componentize_py_version") && continue
  (cd "$app" && "$componentize_py" -d ../../../wit -w record-plugin componentize app \
    -o "../../dist/$name.wasm" >/dev/null)
  echo "$stamp" >"dist/$name.stamp"
  ls -la "dist/$name.wasm" >&2
done

# JavaScript plugins (record mode). Without `http` and `fetch-event` the component imports
# nothing the host does not grant.
if ! (cd js && npm ls --depth=0 >/dev/null 2>&1); then
  (cd js && npm ci --no-audit --no-fund --loglevel=error)
fi
for app in js/*/app.js; do
  app=$(dirname "$app")/
  name=$(basename "$app" | tr - _)_js
  up_to_date "$name" "$app"*.js ../wit/*.wit js/package-lock.json && continue
  js/node_modules/.bin/componentize-js "${app}app.js" --wit ../wit -n record-plugin \
    -d http fetch-event -o "dist/$name.wasm" >/dev/null
  echo "$stamp" >"dist/$name.stamp"
  ls -la "dist/$name.wasm" >&2
done
