#!/usr/bin/env bash
# The test command: starts what the tests need, then runs every test (unit, integration
# against the real PostgreSQL, CLI). Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-postgres.sh
scripts/ensure-kafka.sh
scripts/ensure-s3.sh
scripts/build-plugins.sh >/dev/null

# Each test creates its own database; drop those a previous run left behind.
admin=(psql -X -q -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1)
"${admin[@]}" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'exsvc\_test\_%'" |
  while read -r name; do
    "${admin[@]}" -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null
  done

cargo test --locked --workspace --all-targets "$@"
