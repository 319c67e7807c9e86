#!/usr/bin/env bash
# Runs the service locally and shows the whole flow working:
#   1. makes sure PostgreSQL, the Kafka-protocol broker and the S3-compatible server are up
#      (installing them on first use), creates the `export_service` database if needed;
#   2. builds the reference plugins and the release binaries (the service and the demo);
#   3. starts `export-service serve` with exampleApp's uploads bound to the csv-json plugin, and
#      the demo source application (`export-demo source`), which answers the requests it reads
#      from Kafka by uploading CSV through the internal API;
#   4. as a tenant, creates a JSON export over HTTP, shows its progress, downloads the archive
#      and prints its manifest (`export-demo export`);
#   5. keeps the service and the demo source running until Ctrl-C.
# `scripts/run.sh --serve-only` skips the demo and runs the service in the foreground.
# Settings come from the environment (see the README's configuration table).
set -euo pipefail
cd "$(dirname "$0")/.."

demo=true
case "${1:-}" in
  --serve-only) demo=false; shift ;;
  "") ;;
  *) echo "usage: $0 [--serve-only]" >&2; exit 2 ;;
esac

scripts/ensure-postgres.sh
scripts/ensure-kafka.sh
scripts/ensure-s3.sh

if [ -z "${DATABASE_URL:-}" ]; then
  database=export_service
  exists=$(psql -X -h 127.0.0.1 -U postgres -d postgres -Atc \
    "SELECT 1 FROM pg_database WHERE datname = '$database'")
  if [ "$exists" != 1 ]; then
    psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $database"
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database"
fi
export DEBUG=${DEBUG:-true}
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
export KAFKA_CREATE_TOPIC_PARTITIONS=${KAFKA_CREATE_TOPIC_PARTITIONS:-3}
# The local S3-compatible server of scripts/ensure-s3.sh (development credentials).
export S3_ENDPOINT=${S3_ENDPOINT:-http://127.0.0.1:9099}
export AWS_ACCESS_KEY=${AWS_ACCESS_KEY:-export-service-dev}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-export-service-dev-secret}
export S3_CREATE_BUCKET=${S3_CREATE_BUCKET:-true}
# Development key of the internal API for the example application.
export EXPORTS_PSKS=${EXPORTS_PSKS:-'{"exampleApp": "dev-psk-exampleApp"}'}
export CLEANER_INTERVAL=${CLEANER_INTERVAL:-1h}

target=${CARGO_TARGET_DIR:-/var/tmp/export-service/target}
binary=$target/release/export-service
# The demo is its own crate (crates/export-demo) and binary.
demo_binary=$target/release/export-demo
echo "run.sh: building the plugins and the release binaries (the first build takes several minutes)" >&2
scripts/build-plugins.sh >/dev/null 2>&1 || scripts/build-plugins.sh
cargo build --locked --release --workspace --bins

# exampleApp's uploads go through the csv-json plugin (PLUGINS_DIR bindings).
if [ -z "${PLUGINS_DIR:-}" ]; then
  export PLUGINS_DIR=/var/tmp/export-service/demo-bindings
  mkdir -p "$PLUGINS_DIR"
  cp plugins/dist/csv_json.wasm "$PLUGINS_DIR/exampleApp.wasm.tmp"
  mv "$PLUGINS_DIR/exampleApp.wasm.tmp" "$PLUGINS_DIR/exampleApp.wasm"
fi

if [ "$demo" = false ]; then
  exec "$binary" serve
fi

logs=/var/tmp/export-service/logs
mkdir -p "$logs"
pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM

"$binary" serve >"$logs/service.log" 2>&1 &
pids+=($!)
public=http://127.0.0.1:${PUBLIC_PORT:-8000}
internal=http://127.0.0.1:${PRIVATE_PORT:-10000}
metrics=http://127.0.0.1:${METRICS_PORT:-9000}
for _ in $(seq 1 150); do
  curl -sf "$metrics/readyz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "run.sh: the service stopped; its log:" >&2; tail -n 40 "$logs/service.log" >&2; exit 1; }
  sleep 0.2
done
curl -sf "$metrics/readyz" >/dev/null || { echo "run.sh: the service is not ready; see $logs/service.log" >&2; exit 1; }
echo "run.sh: service ready — public $public, internal $internal, metrics $metrics (log: $logs/service.log)" >&2

LOG_LEVEL=${DEMO_LOG_LEVEL:-info} "$demo_binary" source --brokers "$KAFKA_BROKERS" \
  --internal-url "$internal" --application exampleApp \
  --psk "$(python3 -c 'import json,os; print(json.loads(os.environ["EXPORTS_PSKS"])["exampleApp"])')" \
  >"$logs/demo-source.log" 2>&1 &
pids+=($!)
echo "run.sh: demo source application consuming platform.export.requests (log: $logs/demo-source.log)" >&2

echo "run.sh: requesting a JSON export of exampleApp's two resources as org1/alice…" >&2
if ! "$demo_binary" export --url "$public" --output export.zip --timeout 120; then
  echo "run.sh: the demo export did not finish; last lines of the logs:" >&2
  tail -n 20 "$logs/service.log" "$logs/demo-source.log" >&2
  exit 1
fi
echo >&2
echo "run.sh: the archive is ./export.zip. The service keeps running (Ctrl-C stops it); try the README's curl commands." >&2
wait "${pids[0]}"
