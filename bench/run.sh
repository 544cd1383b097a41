#!/usr/bin/env bash
# The side-by-side benchmark in one invocation: ingest + queries over a 2-hour head,
# fresh blocks and the bucket against Prometheus 2.42 and VictoriaMetrics 1.79
# (bench/run.py), then query latency over days
# of data beside Prometheus and 30 days raw vs downsampled (bench/query.py). `--quick`
# for the CI smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 bench/run.py "$@"
python3 bench/query.py "$@"
