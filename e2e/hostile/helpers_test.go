// Package hostile_test attacks the real poolwatch binary the way a hostile
// neighbour or a bad day would, against real PostgreSQL 15, PgBouncer 1.18
// and Prometheus: a password file that blocks, junk auto-databases, hostile
// scrape-timeout headers, floods of idle HTTP connections, secrets in a
// culprit's query, a server with no slot left, and thousands of targets.
// Each test reproduces one attack and checks what the user sees, that the
// agent recovers, and that nothing leaks.
//
// Lengths and counts that make an attack expensive are parameters: the
// defaults keep `make test` short; POOLWATCH_E2E_FULL=1 runs every attack
// at the size of the issue that reported it.
package hostile_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// Passwords of the tests' roles: distinctive, so that a test can assert
// that none of them ever shows up in the agent's log.
const (
	monPassword  = "Mon-H0stile-51c2"
	appPassword  = "App-H0stile-7d3e"
	statPassword = "Stat-H0stile-90ab"
)

// TestMain stops a -race build of the agent from sleeping 1 s at exit, so
// that shutdown timings measure the agent.
func TestMain(m *testing.M) {
	if err := os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")); err != nil {
		fmt.Fprintln(os.Stderr, "set GORACE:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// full reports whether POOLWATCH_E2E_FULL asks for the full-size attacks.
func full() bool {
	v, _ := strconv.ParseBool(os.Getenv("POOLWATCH_E2E_FULL"))
	return v
}

// size returns small, or big under POOLWATCH_E2E_FULL.
func size[T any](small, big T) T {
	if full() {
		return big
	}
	return small
}

// metrics is one parsed /metrics answer.
type metrics map[string]*dto.MetricFamily

func parseMetrics(t *testing.T, body string) metrics {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return metrics(mfs)
}

// scrape GETs /metrics with optional header pairs and parses it.
func scrape(t *testing.T, pw *testenv.Poolwatch, header ...string) metrics {
	t.Helper()
	code, body := pw.Get(t, "/metrics", header...)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d\n%s", code, body)
	}
	return parseMetrics(t, body)
}

// get returns the value of the one series of family name whose labels
// include every pair of kv; ok is false when none matches.
func (m metrics) get(t *testing.T, name string, kv ...string) (float64, bool) {
	t.Helper()
	var found []*dto.Metric
	if mf, ok := m[name]; ok {
		for _, s := range mf.GetMetric() {
			if hasLabels(s, kv) {
				found = append(found, s)
			}
		}
	}
	switch len(found) {
	case 0:
		return 0, false
	case 1:
	default:
		t.Fatalf("%s%v: %d series match, want at most 1", name, kv, len(found))
	}
	s := found[0]
	switch {
	case s.GetGauge() != nil:
		return s.GetGauge().GetValue(), true
	case s.GetCounter() != nil:
		return s.GetCounter().GetValue(), true
	}
	return s.GetUntyped().GetValue(), true
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

// seriesOf counts the series that carry target=name.
func (m metrics) seriesOf(name string) int {
	n := 0
	for _, mf := range m {
		for _, s := range mf.GetMetric() {
			if hasLabels(s, []string{"target", name}) {
				n++
			}
		}
	}
	return n
}

// values returns the values of label in family name's series.
func (m metrics) values(name, label string) []string {
	var out []string
	for _, s := range m[name].GetMetric() {
		for _, lp := range s.GetLabel() {
			if lp.GetName() == label {
				out = append(out, lp.GetValue())
			}
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

// request sends a GET with header pairs and returns the status and body;
// safe from any goroutine (errors are returned, not reported).
func request(c *http.Client, url string, header ...string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// eventually is testenv.Eventually every 50 ms, naming what it waits for.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testenv.Eventually(t, timeout, 50*time.Millisecond, func() (bool, string) {
		ok, last := cond()
		return ok, what + ": last: " + last
	})
}

// stopAndCheck stops the agent and fails the test unless it exited with
// status 0 and its log shows no data race and none of the secrets.
func stopAndCheck(t *testing.T, pw *testenv.Poolwatch, secrets ...string) {
	t.Helper()
	pw.Stop(t)
	if err := pw.ExitErr(); err != nil {
		t.Errorf("the agent exited with %v, want status 0", err)
	}
	logs := pw.Logs()
	if strings.Contains(logs, "DATA RACE") {
		t.Errorf("the agent reported a data race")
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the agent's log contains a password (%d bytes)", len(s))
		}
	}
}

// openFDs counts the open file descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("list the agent's descriptors: %v", err)
	}
	return len(entries)
}

// rssBytes reads the resident set size of process pid from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the agent's status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// httpClient is the client of requests whose result a test ignores.
var httpClient = &http.Client{Timeout: 30 * time.Second}
