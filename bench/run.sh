#!/usr/bin/env bash
# The side-by-side benchmark in one invocation: ingest + query latency against
# Prometheus 2.42 and VictoriaMetrics 1.79 (bench/run.py), then query latency over days
# of data beside Prometheus (bench/query.py). `--quick` for the CI smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 bench/run.py "$@"
python3 bench/query.py "$@"
