package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/poolwatch/poolwatch/agent"
	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/server"
)

// BenchmarkMetricsHandler serves /metrics in process, the agent and the
// server as main wires them, in front of a PgBouncer with BENCH_POOLS
// (1,000) pools: one iteration is one sequential request as Prometheus
// sends it (gzip accepted). It is the profile's harness: run it with
// -cpuprofile or -memprofile (docs/performance.md).
func BenchmarkMetricsHandler(b *testing.B) {
	pools := envInt(b, "BENCH_POOLS", 1000)
	raiseOpenFiles(b)
	pg := testenv.StartPostgres(b, testenv.PostgresOptions{MaxConnections: pools + 100})
	pg.CreateRole(b, monUser, monPass, "LOGIN")
	pg.CreateRole(b, appUser, appPass, "LOGIN")
	pgb := bouncerWithPools(b, pg, pools)

	cfg, err := config.Parse("bench.yml", fmt.Appendf(nil, "targets:\n  - name: bouncer\n    kind: pgbouncer\n    dsn: %s\n    max_pools: %d\n", consoleDSN(pgb), pools+10))
	if err != nil {
		b.Fatal(err)
	}
	a := agent.New(nil, 0)
	if err := a.Apply(cfg); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close(context.Background()) })
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h, err := server.New(server.Options{Agent: a, Gatherer: reg, MetricsTargets: true})
	if err != nil {
		b.Fatal(err)
	}
	get := func() {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept", promAccept)
		req.Header.Set("Accept-Encoding", "gzip")
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
		_, _ = io.Copy(io.Discard, rec.Body)
	}
	for range 5 {
		get()
	}
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			get()
		}
	})
	// The storm, over a real HTTP server: BENCH_STORM_SCRAPERS (20)
	// scrapers with keep-alive connections, b.N requests in all.
	b.Run("storm", func(b *testing.B) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		s := newScraper()
		scrapers := envInt(b, "BENCH_STORM_SCRAPERS", 20)
		b.SetParallelism(max(1, scrapers/runtime.GOMAXPROCS(0)))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.get(b, srv.URL+"/metrics")
			}
		})
	})
}
