// Package ops_test runs the real poolwatch binary against real PostgreSQL
// and PgBouncer servers and checks how it behaves in production: config
// reload, least privilege, TLS to targets, web security and shutdown.
package ops_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// Passwords used by the tests' roles. They are distinctive so that a test
// can assert that none of them ever shows up in the agent's log.
const (
	monPassword  = "Mon-S3cret-8c1f"
	appPassword  = "App-S3cret-77ad"
	statPassword = "Stat-S3cret-2e90"
)

// metrics is one parsed /metrics answer.
type metrics map[string]*dto.MetricFamily

// parseMetrics parses the text exposition format.
func parseMetrics(t *testing.T, body string) metrics {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return metrics(mfs)
}

// scrape GETs /metrics of a plain-HTTP agent and parses it; a status other
// than 200 fails the test.
func scrape(t *testing.T, pw *testenv.Poolwatch) metrics {
	t.Helper()
	code, body := pw.Get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d\n%s", code, body)
	}
	return parseMetrics(t, body)
}

// get returns the value of the series of family name whose labels include
// every pair of kv ("target", "pg", "pool", "server"...). ok is false when
// no series matches; more than one match fails the test.
func (m metrics) get(t *testing.T, name string, kv ...string) (v float64, ok bool) {
	t.Helper()
	ms := m.find(name, kv...)
	switch len(ms) {
	case 0:
		return 0, false
	case 1:
	default:
		t.Fatalf("%s%v: %d series match, want at most 1", name, kv, len(ms))
	}
	switch {
	case ms[0].GetGauge() != nil:
		return ms[0].GetGauge().GetValue(), true
	case ms[0].GetCounter() != nil:
		return ms[0].GetCounter().GetValue(), true
	case ms[0].GetUntyped() != nil:
		return ms[0].GetUntyped().GetValue(), true
	}
	t.Fatalf("%s%v: not a gauge, counter or untyped series", name, kv)
	return 0, false
}

// must is get, failing the test when the series is absent.
func (m metrics) must(t *testing.T, name string, kv ...string) float64 {
	t.Helper()
	v, ok := m.get(t, name, kv...)
	if !ok {
		t.Fatalf("series %s%v is absent", name, kv)
	}
	return v
}

func (m metrics) find(name string, kv ...string) []*dto.Metric {
	mf, ok := m[name]
	if !ok {
		return nil
	}
	var out []*dto.Metric
	for _, s := range mf.GetMetric() {
		if hasLabels(s, kv) {
			out = append(out, s)
		}
	}
	return out
}

func hasLabels(s *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, lp := range s.GetLabel() {
			if lp.GetName() == kv[i] && lp.GetValue() == kv[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// targets returns the sorted set of values of the target label over every
// series of every family.
func (m metrics) targets() []string {
	set := map[string]bool{}
	for _, mf := range m {
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == "target" {
					set[lp.GetValue()] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// seriesOf counts the series that carry target=name.
func (m metrics) seriesOf(name string) int {
	n := 0
	for _, mf := range m {
		n += len(m.find(mf.GetName(), "target", name))
	}
	return n
}

// eventually is testenv.Eventually every 50 ms, naming what it waits for.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testenv.Eventually(t, timeout, 50*time.Millisecond, func() (bool, string) {
		ok, last := cond()
		return ok, what + ": last: " + last
	})
}

// replaceFile replaces a file (the agent's config, a certificate...)
// atomically: write a temp file next to it, then rename, so a reader never
// sees it half-written.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("rename %s into place: %v", tmp, err)
	}
}

// request sends method to url and returns the status and body. It is safe
// to call from any goroutine: errors are returned, not reported.
func request(c *http.Client, method, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, string(b), nil
}

// lifecycle is the flag that serves POST /-/reload; agents whose test
// reloads over HTTP are started with it.
const lifecycle = "--web.enable-lifecycle"

// reload POSTs /-/reload and returns the status and body.
func reload(t *testing.T, pw *testenv.Poolwatch) (int, string) {
	t.Helper()
	code, body, err := request(http.DefaultClient, http.MethodPost, pw.URL+"/-/reload")
	if err != nil {
		t.Fatalf("POST /-/reload: %v", err)
	}
	return code, body
}

// backendPIDs returns the sorted pids of the client backends with this
// application_name.
func backendPIDs(t *testing.T, pg *testenv.Postgres, app string) []int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := pg.AdminConn(t)
	rows, err := c.Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND application_name = $1 ORDER BY pid`, app)
	if err != nil {
		t.Fatalf("list backends of %q: %v", app, err)
	}
	defer rows.Close()
	var pids []int32
	for rows.Next() {
		var pid int32
		if err := rows.Scan(&pid); err != nil {
			t.Fatalf("scan pid: %v", err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("list backends of %q: %v", app, err)
	}
	return pids
}

// TestMain stops a -race build of the agent from sleeping 1 s at exit (the
// race runtime's atexit_sleep_ms), so that shutdown timings measure the
// agent and every test does not pay a second. Race reports are still
// printed, and a race still makes the agent exit with status 66, which
// stopAndCheck catches.
func TestMain(m *testing.M) {
	if err := os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")); err != nil {
		fmt.Fprintln(os.Stderr, "set GORACE:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// stopAndCheck stops the agent (SIGTERM; a no-op if it already exited) and
// fails the test unless it exited with status 0 and its whole log shows no
// data race and none of the secrets.
func stopAndCheck(t *testing.T, pw *testenv.Poolwatch, secrets ...string) {
	t.Helper()
	pw.Stop(t)
	if err := pw.ExitErr(); err != nil {
		t.Errorf("the agent exited with %v, want status 0", err)
	}
	logs := pw.Logs()
	if strings.Contains(logs, "DATA RACE") {
		t.Errorf("the agent reported a data race:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the agent's log contains a password (%d bytes)", len(s))
		}
	}
}

// monRole creates the least-privileged monitoring role: LOGIN and
// pg_monitor, nothing else.
func monRole(t *testing.T, pg *testenv.Postgres) {
	t.Helper()
	pg.CreateRole(t, "mon", monPassword, "LOGIN", "IN ROLE pg_monitor")
}

// pgTarget renders one postgres target entry with its own application_name,
// so that its backends can be told apart in pg_stat_activity.
func pgTarget(name string, pg *testenv.Postgres, app string, extra string) string {
	return fmt.Sprintf(`  - name: %s
    kind: postgres
    dsn: %s&application_name=%s
%s`, name, pg.DSN("mon", monPassword, "postgres"), app, extra)
}
