#!/usr/bin/env bash
# Makes sure an S3-compatible server answers on 127.0.0.1:9099 for development and CI.
# The server is s3s-fs (crates.io, Apache-2.0) over a local directory; installed into
# ~/.cargo/bin on first use (about 6 minutes on 2 cores), then started in a moment. Idempotent.
# Credentials: S3_DEV_ACCESS_KEY / S3_DEV_SECRET_KEY (defaults below, development only).
set -euo pipefail

version=0.14.1
address=127.0.0.1:9099
state_dir=${EXPORT_SERVICE_STATE_DIR:-/var/tmp/export-service}
data_dir=$state_dir/s3-data
access_key=${S3_DEV_ACCESS_KEY:-export-service-dev}
secret_key=${S3_DEV_SECRET_KEY:-export-service-dev-secret}
export PATH="$HOME/.cargo/bin:$PATH"

listening() { (exec 3<>"/dev/tcp/${address%:*}/${address#*:}") 2>/dev/null; }

if ! s3s-fs --version 2>/dev/null | grep -q "$version"; then
  echo "ensure-s3: installing s3s-fs $version (first run only; takes a few minutes)" >&2
  cargo install --quiet --locked "s3s-fs@$version" --features binary
fi

if listening; then
  exit 0
fi

mkdir -p "$data_dir" "$state_dir/s3"
echo "ensure-s3: starting s3s-fs on $address (data in $data_dir)" >&2
nohup s3s-fs --host "${address%:*}" --port "${address#*:}" \
  --access-key "$access_key" --secret-key "$secret_key" "$data_dir" \
  >"$state_dir/s3/server.log" 2>&1 &

for _ in $(seq 1 100); do
  if listening; then exit 0; fi
  sleep 0.1
done
echo "ensure-s3: the S3 server did not start; see $state_dir/s3/server.log" >&2
exit 1
