#!/usr/bin/env bash
# Runs poolwatch's benchmarks and writes their output to bench/out/.
#   micro.txt   - Go benchmarks: collecting 1,000 pools, mapping 5,000 SHOW CLIENTS rows,
#                 live rounds: PgBouncer with 2,000 clients and with 30 pools (with and
#                 without SHOW MEM), Pgpool-II with 32 children and two nodes
#   micro.txt also maps each recorded application exposition (scrape/)
#   metrics.txt - /metrics latency (p50, p99), CPU per scrape and RSS of the real
#                 agent in front of 4 PgBouncers (125 pools) and PostgreSQL,
#                 and the connections it holds on each PgBouncer; then the
#                 same over 50 application targets cross-checked against
#                 PostgreSQL, with the agent's allocations per scrape
# docs/performance.md quotes these numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3
mkdir -p bench/out
go test -run '^$' -bench . -benchmem -count 5 ./collector/ ./scrape/ | tee bench/out/micro.txt
go test -run '^$' -bench BenchmarkMetricsEndpoint -benchtime "${REQUESTS:-500}x" -count 3 ./bench/ | tee bench/out/metrics.txt
