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
#   compare.md  - poolwatch side by side with prometheus-community/pgbouncer_exporter
#                 v0.12.1 on the same PgBouncer 1.18 at 20, 200 and 1,000 pools:
#                 alternating blocks of scrapes (gzip accepted, as Prometheus
#                 scrapes), CPU per scrape of both processes from /proc, latency
#                 percentiles, series and bytes, RSS and peak RSS, the floor (one
#                 console round on a held connection + client_golang's gather and
#                 encoding of the same series), and 20 concurrent scrapers.
#                 BENCH_POOLS, BENCH_RUNS, BENCH_BLOCK, BENCH_STORM_SCRAPERS and
#                 BENCH_STORM_REQUESTS change the defaults (20,200,1000; 5; 50; 20; 25).
#   BENCH=compare runs only the comparison.
# docs/performance.md quotes these numbers; a profile at 1,000 pools comes from
#   go test -run '^$' -bench MetricsHandler -benchtime 200x -cpuprofile cpu.out ./bench/
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3
mkdir -p bench/out
if [ "${BENCH:-}" != compare ]; then
go test -run '^$' -bench . -benchmem -count 5 ./collector/ ./scrape/ | tee bench/out/micro.txt
go test -run '^$' -bench BenchmarkMetricsEndpoint -benchtime "${REQUESTS:-500}x" -count 3 ./bench/ | tee bench/out/metrics.txt
fi
# The comparison takes several minutes: it starts PgBouncer with up to 1,000
# databases and builds pgbouncer_exporter once (kept in the user cache).
(cd bench && go test -run '^$' -bench VersusPgbouncerExporter -benchtime 1x -timeout 60m .) | tee bench/out/compare.txt
