#!/usr/bin/env bash
# The benchmark harness: makes sure PostgreSQL and the S3-compatible server run, builds the
# plugins and the release binaries, then measures every figure of design.md §6 against its
# baseline in the same run, printing a table and writing bench/results/bench-<time>.csv.
#
#   bench/run.sh --quick      # a few minutes: 128 MiB over 4 sources, short criterion runs
#   bench/run.sh              # the full run: 1 GiB over 10 sources (about 15 minutes here)
#   bench/run.sh --only data,list --size-mib 256    # see bench/bench.py --help
#   bench/run.sh --only transfer,concurrency        # curl baselines; 16 concurrent uploads
#   bench/run.sh --only profile                     # perf profiles of an upload, packaging, a download
#   bench/run.sh --only records                     # Rust/Python/JS validators, artefact loads
#
# Each run also draws the table as bench/results/bench-<time>.svg (ratio against target).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-postgres.sh
scripts/ensure-s3.sh
scripts/build-plugins.sh >/dev/null 2>&1 || scripts/build-plugins.sh
cargo build --locked --release --bin export-service --example convert-file --example plugin-ratio --example archive-writer --example s3-client \
  --example record-validators >&2
exec python3 bench/bench.py "$@"
