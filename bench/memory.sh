#!/usr/bin/env bash
# Memory and throughput of the data path with a large generated payload:
#   1. a direct S3 PUT of the payload to the same S3 server (the baseline);
#   2. the same bytes uploaded through the internal API (streamed into S3);
#   3. packaging into a ZIP (streamed from S3 back into S3);
# while the service's peak RSS (VmHWM from /proc) is recorded.
#
# Usage: bench/memory.sh [--size-mib N] [--sources K]     (defaults: 1024 MiB over 4 sources)
# Writes bench/results/memory-<timestamp>.csv and prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=1024
sources=4
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib=$2; shift 2 ;;
    --sources) sources=$2; shift 2 ;;
    *) echo "usage: $0 [--size-mib N] [--sources K]" >&2; exit 2 ;;
  esac
done

scripts/ensure-postgres.sh
scripts/ensure-s3.sh
cargo build --locked --release --bin export-service >&2
binary=${CARGO_TARGET_DIR:-/var/tmp/export-service/target}/release/export-service

work=$(mktemp -d /var/tmp/exsvc-bench.XXXXXX)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
database=exsvc_bench_${stamp,,}
bucket=exsvc-bench-${stamp,,}
key=export-service-dev
secret=export-service-dev-secret
psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $database"
cleanup() {
  [ -n "${service_pid:-}" ] && kill "$service_pid" 2>/dev/null || true
  psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

per_source_mib=$(( size_mib / sources ))
echo "generating ${sources} × ${per_source_mib} MiB of CSV…" >&2
python3 - "$work/part.csv" "$per_source_mib" <<'PY'
import sys
path, mib = sys.argv[1], int(sys.argv[2])
target = mib * 1024 * 1024
with open(path, "w") as out:
    out.write("id,name,amount,comment\n")
    written, n = 0, 0
    while written < target:
        block = "".join(f"{i},name-{i},{i * 7 % 1000}.{i % 100:02d},\"a comment, with a comma\"\n" for i in range(n, n + 20000))
        n += 20000
        out.write(block)
        written += len(block)
PY
bytes_per_source=$(stat -c %s "$work/part.csv")
total_bytes=$(( bytes_per_source * sources ))

ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r public private metrics <<<"$ports"

DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database" \
PUBLIC_PORT=$public PRIVATE_PORT=$private METRICS_PORT=$metrics LISTEN_ADDRESS=127.0.0.1 \
S3_ENDPOINT=http://127.0.0.1:9099 AWS_ACCESS_KEY=$key AWS_SECRET_ACCESS_KEY=$secret \
EXPORT_SERVICE_BUCKET=$bucket S3_CREATE_BUCKET=true MAX_PAYLOAD_SIZE=$(( per_source_mib + 64 )) \
EXPORTS_PSKS='{"exampleApp": "bench-psk"}' PRIVATE_HTTP_SERVER_READ_TIMEOUT=60s LOG_LEVEL=warn \
  "$binary" serve 2>"$work/service.log" &
service_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null && break; sleep 0.1; done

now() { date +%s.%N; }
seconds() { python3 -c "print(f'{$2 - $1:.3f}')"; }

# 1. Baseline: direct PUTs of the same bytes to the same S3 server.
start=$(now)
for i in $(seq 1 "$sources"); do
  curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    -T "$work/part.csv" "http://127.0.0.1:9099/$bucket/baseline/part-$i.csv" >/dev/null
done
baseline_s=$(seconds "$start" "$(now)")

# 2. The same bytes through the internal API.
identity=$(printf '{"identity":{"org_id":"bench","type":"User","user":{"username":"bench"}}}' | base64 -w0)
request=$(python3 -c "import json; print(json.dumps({'name':'bench','format':'csv','sources':[{'application':'exampleApp','resource':'exampleResource'}]*$sources}))")
created=$(curl -sf -H "x-rh-identity: $identity" -X POST "http://127.0.0.1:$public/api/export/v1/exports" -d "$request")
export_id=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['id'])" "$created")
source_ids=$(python3 -c "import json,sys; print(' '.join(s['id'] for s in json.loads(sys.argv[1])['sources']))" "$created")
start=$(now)
for source_id in $source_ids; do
  curl -sf -H "x-rh-exports-psk: bench-psk" -H "content-type: text/csv" -T "$work/part.csv" \
    -X POST "http://127.0.0.1:$private/app/export/v1/$export_id/exampleApp/$source_id/upload" >/dev/null
done
ingest_s=$(seconds "$start" "$(now)")

# 3. Packaging (starts when the last upload lands).
start_package=$(now)
while :; do
  status=$(curl -sf -H "x-rh-identity: $identity" "http://127.0.0.1:$public/api/export/v1/exports/$export_id/status" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$status" = complete ] && break
  [ "$status" = failed ] && { echo "packaging failed" >&2; cat "$work/service.log" >&2; exit 1; }
  sleep 0.2
done
package_s=$(seconds "$start_package" "$(now)")
archive_bytes=$(curl -sf -H "x-rh-identity: $identity" -o /dev/null -w '%{size_download}' \
  "http://127.0.0.1:$public/api/export/v1/exports/$export_id")

peak_rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$service_pid/status")
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$service_pid/status")

mib() { python3 -c "print(f'{$1 / 1048576:.1f}')"; }
rate() { python3 -c "print(f'{$1 / 1048576 / $2:.1f}')"; }
ratio=$(python3 -c "print(f'{$baseline_s / $ingest_s:.2f}')")
result=bench/results/memory-$stamp.csv
{
  echo "metric,value,unit"
  echo "payload,$(mib "$total_bytes"),MiB"
  echo "sources,$sources,count"
  echo "direct_s3_put_throughput,$(rate "$total_bytes" "$baseline_s"),MiB/s"
  echo "ingest_throughput,$(rate "$total_bytes" "$ingest_s"),MiB/s"
  echo "ingest_vs_direct_put,$ratio,ratio"
  echo "packaging_seconds,$package_s,s"
  echo "packaging_throughput,$(rate "$total_bytes" "$package_s"),MiB/s"
  echo "archive,$(mib "$archive_bytes"),MiB"
  echo "peak_rss,$(python3 -c "print(f'{$peak_rss_kib / 1024:.1f}')"),MiB"
  echo "rss_after,$(python3 -c "print(f'{$rss_kib / 1024:.1f}')"),MiB"
} >"$result"
column -s, -t <"$result"
echo "(written to $result; machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(date -u +%F))"
