package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

const applicationTargets = 50

// recordedExpositions are the real libraries' recorded outputs
// (scrape/testdata/expositions), with their Content-Type and the pool_label
// they need.
func recordedExpositions() []struct{ file, contentType, poolLabel string } {
	return []struct{ file, contentType, poolLabel string }{
		{"hikaricp-micrometer.prom", "text/plain; version=0.0.4", ""},
		{"hikaricp-prometheus-tracker.prom", "text/plain; version=0.0.4", ""},
		{"database-sql.prom", "text/plain; version=0.0.4", ""},
		{"pgxpool.prom", "text/plain; version=0.0.4", "db"},
		{"opentelemetry.prom", "text/plain", ""},
		{"opentelemetry-old-names.prom", "text/plain", ""},
		{"psycopg2-status.json", "application/json", ""},
		{"psycopg-pool-stats.json", "application/json", ""},
	}
}

// agentCounter reads one of the agent's own Go runtime counters from a
// /metrics body.
func agentCounter(b *testing.B, body, name string) float64 {
	b.Helper()
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		b.Fatalf("no %s in the agent's /metrics", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// BenchmarkMetricsEndpointApplications measures sequential /metrics
// requests to the real agent watching 50 application targets, each
// cross-checked against one PostgreSQL (seen_as): per request, 50 HTTP GETs
// and parses, one postgres round, 50 comparisons. The applications are the
// eight recorded real expositions (HikariCP, database/sql, pgxpool,
// OpenTelemetry, JSON) served by an HTTP server in this process, in turn.
// One request is one b.N iteration; reported: p50 and p99 latency, the
// agent's CPU per request (from /proc), and the agent's allocations per
// request (its go_memstats_mallocs_total and _alloc_bytes_total).
func BenchmarkMetricsEndpointApplications(b *testing.B) {
	pg := testenv.StartPostgres(b, testenv.PostgresOptions{})
	pg.CreateRole(b, monUser, monPass, "LOGIN", "IN ROLE pg_monitor")

	mux := http.NewServeMux()
	for _, e := range recordedExpositions() {
		body, err := os.ReadFile(filepath.Join("..", "scrape", "testdata", "expositions", e.file))
		if err != nil {
			b.Fatal(err)
		}
		ct := e.contentType
		mux.HandleFunc("/"+e.file, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", ct)
			_, _ = w.Write(body)
		})
	}
	apps := httptest.NewServer(mux)
	b.Cleanup(apps.Close)

	var cfg strings.Builder
	cfg.WriteString("targets:\n")
	fmt.Fprintf(&cfg, "  - name: pg\n    kind: postgres\n    dsn: %s\n", pg.DSN(monUser, monPass, "postgres"))
	exps := recordedExpositions()
	for i := range applicationTargets {
		e := exps[i%len(exps)]
		fmt.Fprintf(&cfg, "  - name: app-%02d\n    kind: application\n    url: %s/%s\n", i, apps.URL, e.file)
		if e.poolLabel != "" {
			fmt.Fprintf(&cfg, "    pool_label: %s\n", e.poolLabel)
		}
		fmt.Fprintf(&cfg, "    seen_as: [{target: pg, application_name: \"app-%02d*\"}]\n", i)
	}
	pw := testenv.StartPoolwatch(b, cfg.String())

	get := metricsGetter(b, pw)
	body := get()
	if n := strings.Count(body, "poolwatch_pool_unaccounted_connections{"); n != applicationTargets {
		b.Fatalf("want %d cross-checked application pools, got %d:\n%s", applicationTargets, n, body)
	}
	if up := strings.Count(body, `poolwatch_target_up{target="app-`); up != applicationTargets || strings.Contains(body, "} 0\npoolwatch_target_up") {
		b.Fatalf("want %d application targets up", applicationTargets)
	}
	series := strings.Count(body, "\npoolwatch_")
	for range 10 {
		get()
	}
	before := get()
	timeScrapes(b, pw.PID(), get)
	after := get()
	// The counters are read by a request of their own on each side: n+1
	// requests lie between them.
	per := func(name string) float64 {
		return (agentCounter(b, after, name) - agentCounter(b, before, name)) / float64(b.N+1)
	}
	b.ReportMetric(per("go_memstats_mallocs_total"), "agent-allocs/scrape")
	b.ReportMetric(per("go_memstats_alloc_bytes_total")/1024, "agent-KiB/scrape")
	b.ReportMetric(float64(rssKB(b, pw.PID()))/1024, "rss-MB")
	b.ReportMetric(float64(series), "series")
}
