// Package bench measures the agent as a user runs it: the real binary in
// front of real PgBouncers and PostgreSQL. Run it with `make bench`, which
// writes the results to bench/out/; docs/performance.md quotes them.
package bench

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

const (
	bouncers      = 4
	dbsPerBouncer = 30
	monUser       = "mon"
	monPass       = "Bench-S3cret-mon"
	appUser       = "app"
	appPass       = "Bench-S3cret-app"
	probeMaxConns = 2
)

// cpuTicks reads a process's user+system CPU time in clock ticks (1/100 s).
func cpuTicks(b *testing.B, pid int) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func rssKB(b *testing.B, pid int) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(raw)
	v, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return v
}

// seriesIn counts the samples of a text exposition: its lines that are not
// comments.
// metricsGetter returns a function that GETs pw's /metrics and returns
// the body, failing b on a status other than 200.
func metricsGetter(b *testing.B, pw *testenv.Poolwatch) func() string {
	return func() string {
		code, body := pw.Get(b, "/metrics")
		if code != 200 {
			b.Fatalf("status %d", code)
		}
		return body
	}
}

// timeScrapes resets the timer, calls get b.N times and stops the timer,
// then reports the latency of one call (p50-ms, p99-ms) and the CPU time
// process pid spent per call (cpu-ms/scrape, from /proc at 100 ticks a
// second).
func timeScrapes(b *testing.B, pid int, get func() string) {
	b.Helper()
	cpu0 := cpuTicks(b, pid)
	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		get()
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	cpu := cpuTicks(b, pid) - cpu0
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	pct := func(p float64) float64 {
		return float64(durations[int(p*float64(len(durations)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(cpu)*10/float64(b.N), "cpu-ms/scrape")
}

func seriesIn(body string) int {
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return n
}

// BenchmarkMetricsEndpoint measures sequential /metrics requests against an
// agent watching 4 PgBouncers with 30 pools each (plus their clients pools)
// and one PostgreSQL. One request is one b.N iteration; p50 and p99 are
// reported alongside ns/op.
func BenchmarkMetricsEndpoint(b *testing.B) {
	pg := testenv.StartPostgres(b, testenv.PostgresOptions{MaxConnections: 200})
	pg.CreateRole(b, monUser, monPass, "LOGIN", "IN ROLE pg_monitor")
	pg.CreateRole(b, appUser, appPass, "LOGIN")
	var cfg strings.Builder
	cfg.WriteString("targets:\n")
	fmt.Fprintf(&cfg, "  - name: pg\n    kind: postgres\n    dsn: %s\n", pg.DSN(monUser, monPass, "postgres"))
	ctx := context.Background()
	var pgbs []*testenv.PgBouncer
	for i := range bouncers {
		dbs := map[string]string{}
		for d := range dbsPerBouncer {
			dbs[fmt.Sprintf("db%02d", d)] = "dbname=postgres pool_size=2"
		}
		pgb := testenv.StartPgBouncer(b, pg, testenv.PgBouncerOptions{
			Users:      map[string]string{monUser: monPass, appUser: appPass},
			StatsUsers: []string{monUser},
			Databases:  dbs,
		})
		pgbs = append(pgbs, pgb)
		// A pool is listed once a client has used it.
		for d := range dbsPerBouncer {
			conn, err := pgx.Connect(ctx, pgb.DSN(appUser, appPass, fmt.Sprintf("db%02d", d)))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
				b.Fatal(err)
			}
			_ = conn.Close(ctx)
		}
		fmt.Fprintf(&cfg, "  - name: bouncer-%d\n    kind: pgbouncer\n    dsn: %s\n", i, pgb.DSN(monUser, monPass, "pgbouncer"))
	}
	pw := testenv.StartPoolwatch(b, cfg.String())

	get := metricsGetter(b, pw)
	body := get()
	pools := strings.Count(body, "poolwatch_pool_open_connections{")
	if want := bouncers*(dbsPerBouncer+1) + 1; pools < want {
		b.Fatalf("want at least %d pools, got %d", want, pools)
	}
	for range 10 {
		get()
	}
	newConns := func(body string) string {
		return strings.Join(regexp.MustCompile(`poolwatch_probe_pool_new_connections_total\{target="[^"]+"\} \d+`).FindAllString(body, -1), ", ")
	}
	before := newConns(get())
	timeScrapes(b, pw.PID(), get)
	after := get()
	if newConns(after) != before {
		b.Fatalf("the agent opened connections during the run:\nbefore %s\nafter  %s", before, newConns(after))
	}
	b.ReportMetric(float64(rssKB(b, pw.PID()))/1024, "rss-MB")
	b.ReportMetric(float64(pools), "pools")
	b.ReportMetric(float64(seriesIn(after)), "series")

	// Connections the agent holds on each PgBouncer: bounded by the probe
	// pool's max, not one per scrape.
	for i, pgb := range pgbs {
		held := 0
		for _, r := range pgb.Show(b, "SHOW CLIENTS").Records() {
			if r["application_name"] == "poolwatch" {
				held++
			}
		}
		if held > probeMaxConns {
			b.Fatalf("bouncer-%d: the agent holds %d connections, more than the probe pool's max %d", i, held, probeMaxConns)
		}
		b.ReportMetric(float64(held), fmt.Sprintf("conns-bouncer-%d", i))
	}
}
