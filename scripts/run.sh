#!/usr/bin/env bash
# Runs the service locally: makes sure PostgreSQL, the Kafka-protocol broker and the
# S3-compatible server are up (installing them on first use), creates the `export_service` database
# if needed, builds the release binary and starts `export-service serve` (migrations are applied
# at start-up). Settings come from the environment (see the README's configuration table).
set -euo pipefail
cd "$(dirname "$0")/.."

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
# Development keys of the internal API: one per example application.
export EXPORTS_PSKS=${EXPORTS_PSKS:-'{"exampleApp": "dev-psk-exampleApp"}'}
export CLEANER_INTERVAL=${CLEANER_INTERVAL:-1h}

cargo build --locked --release --bin export-service
exec "${CARGO_TARGET_DIR:-/var/tmp/export-service/target}/release/export-service" serve "$@"
