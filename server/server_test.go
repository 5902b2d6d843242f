package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/agent"
	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/server"
)

const (
	monUser = "pwmon"
	monPass = "Server-S3cret-pw"
)

var shared = testenv.MonitoringShared(monUser, monPass)

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

type fixture struct {
	srv    *httptest.Server
	agent  *agent.Agent
	logs   *testenv.SyncBuffer
	reload func() error
}

// start serves an agent with the YAML config over httptest.
func start(t *testing.T, yaml string, metricsTargets bool, opts ...func(*server.Options)) *fixture {
	t.Helper()
	cfg, err := config.Parse("test.yml", []byte(yaml))
	require.NoError(t, err)
	logs := &testenv.SyncBuffer{}
	logger := log.NewLogfmtLogger(logs)
	a := agent.New(logger, 0)
	require.NoError(t, a.Apply(cfg))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	f := &fixture{agent: a, logs: logs}
	o := server.Options{
		Agent:               a,
		Gatherer:            reg,
		ScrapeTimeoutOffset: 500 * time.Millisecond,
		MetricsTargets:      metricsTargets,
		Reload:              func() error { return f.reload() },
		EnableLifecycle:     true,
		Ready:               func() bool { return true },
		Logger:              logger,
		Version:             "test",
	}
	for _, opt := range opts {
		opt(&o)
	}
	h, err := server.New(o)
	require.NoError(t, err)
	f.srv = httptest.NewServer(h)
	f.reload = func() error { return nil }
	t.Cleanup(func() {
		f.srv.Close()
		require.NoError(t, a.Close(context.Background()))
	})
	return f
}

func (f *fixture) get(t *testing.T, path string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func pgTarget(name, addr, app, extra string) string {
	return fmt.Sprintf(`
  - name: %s
    kind: postgres
    dsn: postgres://%s:%s@%s/postgres?sslmode=disable&application_name=%s
%s`, name, monUser, monPass, addr, app, extra)
}

func bouncerTarget(name, addr string) string {
	return fmt.Sprintf(`
  - name: %s
    kind: pgbouncer
    dsn: postgres://%s:%s@%s/pgbouncer?sslmode=disable
`, name, monUser, monPass, addr)
}

func TestProbe_ServesOnlyTheNamedTargetAndOpensNoOtherConnection(t *testing.T) {
	pg, pgb := shared.Get(t)
	f := start(t, "targets:"+pgTarget("pg-a", pg.Addr(), "pw_probe_a", "")+pgTarget("pg-b", pg.Addr(), "pw_probe_b", "")+bouncerTarget("bouncer", pgb.Addr()), false)

	code, body := f.get(t, "/probe?target=pg-a")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `poolwatch_target_up{target="pg-a"} 1`)
	require.Contains(t, body, `poolwatch_pool_in_use_connections{pool="server",target="pg-a"}`)
	require.Contains(t, body, `poolwatch_target_scrape_duration_seconds{target="pg-a"}`)
	require.NotContains(t, body, `target="pg-b"`)
	require.NotContains(t, body, `target="bouncer"`)
	require.NotContains(t, body, "go_goroutines", "self-metrics stay on the metrics path")

	// Only pg-a was asked about: only pg-a's pool holds a connection.
	pg.WaitBackends(t, "pw_probe_a", func(n int) bool { return n == 1 }, 10*time.Second)
	require.Equal(t, 0, pg.CountBackends(t, "pw_probe_b"))
	for _, p := range f.agent.ProbePools() {
		if p.Target != "pg-a" {
			require.Equal(t, 0, p.Stats.Open, p.Target)
		}
	}

	code, body = f.get(t, "/probe?target=bouncer")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `poolwatch_target_up{target="bouncer"} 1`)
	require.Contains(t, body, `poolwatch_pool_max_connections{pool="clients",target="bouncer"}`)
}

func TestProbe_RejectsAMissingOrUnknownTarget(t *testing.T) {
	pg, _ := shared.Get(t)
	f := start(t, "targets:"+pgTarget("pg", pg.Addr(), "pw_probe_bad", ""), false)
	code, body := f.get(t, "/probe")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, "the target parameter is missing")
	code, body = f.get(t, "/probe?target=nope")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, `unknown target "nope"`)
	require.Equal(t, 0, pg.CountBackends(t, "pw_probe_bad"))
}

func TestMetrics_WithoutTargetSeriesKeepsTheSelfMetrics(t *testing.T) {
	pg, _ := shared.Get(t)
	f := start(t, "targets:"+pgTarget("pg", pg.Addr(), "pw_nometrics", ""), false)
	code, body := f.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, body, "poolwatch_pool_")
	require.NotContains(t, body, "poolwatch_target_up")
	require.Contains(t, body, `poolwatch_probe_pool_max_connections{target="pg"} 2`)
	require.Contains(t, body, "go_goroutines")
	require.Equal(t, 0, pg.CountBackends(t, "pw_nometrics"), "the metrics path queried no target")
}

func TestMetrics_StoppedDatabaseGivesUpZeroThenRecovers(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, monUser, monPass, "LOGIN", "IN ROLE pg_monitor")
	f := start(t, "targets:"+pgTarget("db", pg.Addr(), "pw_stop", "    probe_pool: {retry_backoff: 10ms}"), true)
	_, body := f.get(t, "/metrics")
	require.Contains(t, body, `poolwatch_target_up{target="db"} 1`)

	pg.Stop(t)
	for i := 1; i <= 3; i++ {
		code, body := f.get(t, "/metrics")
		require.Equal(t, http.StatusOK, code, "the metrics path still answers")
		require.Contains(t, body, `poolwatch_target_up{target="db"} 0`)
		// Every round fails its connect, the first one after the stop
		// included: the connection that succeeded within the last second
		// is not handed out once its socket shows the server left
		// (docs/connections.md).
		require.Equal(t, i, errorCount(t, body, "connect"), "one failed connect per scrape")
		require.Zero(t, errorCount(t, body, "activity"))
		require.NotContains(t, body, "poolwatch_pool_open_connections", "no stale pool series")
		require.Contains(t, body, `poolwatch_probe_pool_in_use_connections{target="db"} 0`)
		// One line for the way of failing (rate-limited per target), not
		// one per scrape.
		require.Equal(t, 1, strings.Count(f.logs.String(), `msg="target scrape failed"`), "one warning per way of failing")
	}
	logs := f.logs.String()
	require.Contains(t, logs, "connect: ")
	require.Contains(t, logs, "connection refused")
	require.NotContains(t, logs, monPass)

	pg.Start(t)
	_, body = f.get(t, "/metrics")
	require.Contains(t, body, `poolwatch_target_up{target="db"} 1`, "back up by itself")
	require.Contains(t, body, `poolwatch_probe_pool_in_use_connections{target="db"} 0`, "the round released its connection")
}

func TestMetrics_PrometheusTimeoutHeaderBoundsTheScrape(t *testing.T) {
	pg, _ := shared.Get(t)
	p := testenv.StartProxy(t, pg.Addr())
	p.Blackhole(true)
	f := start(t, "targets:"+pgTarget("dead", p.Addr, "pw_hdr", "    scrape_timeout: 10s")+pgTarget("ok", pg.Addr(), "pw_hdr_ok", ""), true)
	start := time.Now()
	code, body := f.get(t, "/metrics", "X-Prometheus-Scrape-Timeout-Seconds", "1.5")
	elapsed := time.Since(start)
	require.Equal(t, http.StatusOK, code)
	require.Less(t, elapsed, 3*time.Second, "1.5 s budget minus 0.5 s offset, not the target's 10 s")
	require.GreaterOrEqual(t, elapsed, 900*time.Millisecond)
	require.Contains(t, body, `poolwatch_target_up{target="dead"} 0`)
	require.Contains(t, body, `poolwatch_target_up{target="ok"} 1`)
}

func TestHealthReadyAndReload(t *testing.T) {
	pg, _ := shared.Get(t)
	f := start(t, "targets:"+pgTarget("pg", pg.Addr(), "pw_health", ""), true)
	code, body := f.get(t, "/-/healthy")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "Healthy\n", body)
	code, _ = f.get(t, "/-/ready")
	require.Equal(t, http.StatusOK, code)
	code, body = f.get(t, "/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "poolwatch")

	code, _ = f.get(t, "/-/reload")
	require.Equal(t, http.StatusMethodNotAllowed, code)
	var calls int
	var mu sync.Mutex
	f.reload = func() error { mu.Lock(); defer mu.Unlock(); calls++; return nil }
	resp, err := http.Post(f.srv.URL+"/-/reload", "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 1, calls)
	f.reload = func() error { return fmt.Errorf("x.yml:3: targets: at least one target is required") }
	resp, err = http.Post(f.srv.URL+"/-/reload", "", nil)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	require.Contains(t, string(b), "x.yml:3: targets: at least one target is required")
}

// errorCount returns poolwatch_target_scrape_errors_total of target db for
// query q in a /metrics body.
func errorCount(t *testing.T, body, q string) int {
	t.Helper()
	re := regexp.MustCompile(`poolwatch_target_scrape_errors_total\{query="` + q + `",target="db"\} (\d+)`)
	m := re.FindStringSubmatch(body)
	require.NotNil(t, m, "no error counter for query %s", q)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}
