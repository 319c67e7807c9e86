#!/usr/bin/env bash
# Makes sure a Kafka-protocol broker answers on 127.0.0.1:9092 for development and CI.
# The broker is tansu (crates.io, Apache-2.0), kept in-memory; installed into ~/.cargo/bin on
# first use (about 15 minutes on 2 cores), then started in a second. Idempotent.
# This is the one place the broker choice lives.
set -euo pipefail

version=0.6.0
address=127.0.0.1:9092
log_dir=${EXPORT_SERVICE_STATE_DIR:-/var/tmp/export-service}/kafka
export PATH="$HOME/.cargo/bin:$PATH"

listening() { (exec 3<>"/dev/tcp/${address%:*}/${address#*:}") 2>/dev/null; }

if ! tansu --version 2>/dev/null | grep -q "$version"; then
  echo "ensure-kafka: installing tansu $version (first run only; takes a while)" >&2
  if ! dpkg -s zlib1g-dev >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zlib1g-dev >/dev/null
  fi
  cargo install --quiet --locked "tansu@$version" --features dynostore
fi

if listening; then
  exit 0
fi

mkdir -p "$log_dir"
echo "ensure-kafka: starting tansu on $address" >&2
nohup tansu broker \
  --listener-url "tcp://$address" \
  --advertised-listener-url "tcp://$address" \
  --storage-engine memory://tansu/ >"$log_dir/broker.log" 2>&1 &

for _ in $(seq 1 100); do
  if listening; then exit 0; fi
  sleep 0.1
done
echo "ensure-kafka: the broker did not start; see $log_dir/broker.log" >&2
exit 1
