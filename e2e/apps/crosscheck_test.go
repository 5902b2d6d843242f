// Package apps_test runs poolwatch, as built, against real applications
// that report their own connection pools, and the real PostgreSQL that
// sees their connections.
package apps_test

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

const (
	monUser = "mon"
	monPass = "Mon-S3cret-pw"
	appUser = "app"
	appPass = "App-S3cret-pw"
)

// metricValue polls /metrics until the series (a full name with labels as
// poolwatch writes them, sorted) has a value that satisfies cond, and
// returns it.
func metricValue(t *testing.T, pw *testenv.Poolwatch, series string, cond func(float64) bool, what string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	var v float64
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		code, body := pw.Get(t, "/metrics")
		require.Equal(t, 200, code)
		m := re.FindStringSubmatch(body)
		if m == nil {
			return false, fmt.Sprintf("%s: no %s in /metrics:\n%s", what, series, body)
		}
		var err error
		v, err = strconv.ParseFloat(m[1], 64)
		require.NoError(t, err)
		return cond(v), fmt.Sprintf("%s: %s is %v", what, series, v)
	})
	return v
}

type poolStatus struct {
	InUse float64 `json:"in_use"`
	Idle  float64 `json:"idle"`
}

// TestCrossCheck_RetryLoopLeakOfDeadConnectionsIsUnaccounted runs the
// founding bug for real: two psycopg2 ThreadedConnectionPool applications
// with the same retry loop (check a connection out, health-check it with
// SELECT 1, try again on failure), orders-leaky losing the failed
// connection and orders-fixed closing it. Every backend of both is killed
// with pg_terminate_backend while their pools hold idle connections; then
// each checks one connection out. The leaky pool meets its two dead idle
// connections first and loses both: it counts 3 in use, the server sees 1,
// and poolwatch_pool_unaccounted_connections reads 2. The fixed pool
// counts 1, the server sees 1: 0. Before the kill both read 0, although
// both hold connections: those the server sees are accounted for.
func TestCrossCheck_RetryLoopLeakOfDeadConnectionsIsUnaccounted(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, monUser, monPass, "LOGIN", "IN ROLE pg_monitor")
	pg.CreateRole(t, appUser, appPass, "LOGIN")
	dsn := pg.DSN(appUser, appPass, "postgres")
	start := func(name, mode string) *testenv.Daemon {
		return testenv.StartApp(t, testenv.AppOptions{App: testenv.AppPsycopg2, DSN: dsn, ApplicationName: name,
			Args: []string{"--minconn", "2", "--maxconn", "10", "--mode", mode}})
	}
	leaky, fixed := start("orders-leaky", "leaky"), start("orders-fixed", "fixed")

	pw := testenv.StartPoolwatch(t, fmt.Sprintf(`
targets:
  - name: pg
    kind: postgres
    dsn: %s
  - name: orders-leaky
    kind: application
    url: %s/status
    seen_as:
      - {target: pg, application_name: orders-leaky}
  - name: orders-fixed
    kind: application
    url: %s/status
    seen_as:
      - {target: pg, application_name: orders-fixed}
`, pg.DSN(monUser, monPass, "postgres"), leaky.URL, fixed.URL))
	series := func(metric, target string) string {
		return fmt.Sprintf(`%s{pool="default",target="%s"}`, metric, target)
	}
	unaccounted := func(target string) string { return series("poolwatch_pool_unaccounted_connections", target) }
	is := func(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

	// Both hold a live connection: accounted for.
	for _, app := range []*testenv.Daemon{leaky, fixed} {
		testenv.AppCall(t, app, "POST", "/hold?n=1", nil)
	}
	metricValue(t, pw, series("poolwatch_pool_in_use_connections", "orders-leaky"), is(1), "leaky holds 1")
	metricValue(t, pw, unaccounted("orders-leaky"), is(0), "live connections are seen by the server")
	metricValue(t, pw, unaccounted("orders-fixed"), is(0), "live connections are seen by the server")

	// Back to the pools: 2 idle connections each. Then every backend dies.
	for _, app := range []*testenv.Daemon{leaky, fixed} {
		testenv.AppCall(t, app, "POST", "/release", nil)
		var st poolStatus
		testenv.AppCall(t, app, "GET", "/status", &st)
		require.Equal(t, poolStatus{InUse: 0, Idle: 2}, st)
	}
	killed := pg.TerminateBackends(t, "orders-leaky") + pg.TerminateBackends(t, "orders-fixed")
	require.Equal(t, 4, killed)
	for _, name := range []string{"orders-leaky", "orders-fixed"} {
		pg.WaitBackends(t, name, func(n int) bool { return n == 0 }, 10*time.Second)
	}
	metricValue(t, pw, unaccounted("orders-leaky"), is(0), "nothing in use, nothing unaccounted, dead idle connections or not")

	for _, app := range []*testenv.Daemon{leaky, fixed} {
		testenv.AppCall(t, app, "POST", "/hold?n=1", nil)
	}
	var leakySt, fixedSt poolStatus
	testenv.AppCall(t, leaky, "GET", "/status", &leakySt)
	testenv.AppCall(t, fixed, "GET", "/status", &fixedSt)
	require.Equal(t, poolStatus{InUse: 3, Idle: 0}, leakySt, "the leaky pool lost its 2 dead connections and counts them in use")
	require.Equal(t, poolStatus{InUse: 1, Idle: 0}, fixedSt, "the fixed pool closed its dead connections")

	metricValue(t, pw, series("poolwatch_pool_in_use_connections", "orders-leaky"), is(3), "poolwatch reads the leaky pool's count")
	got := metricValue(t, pw, unaccounted("orders-leaky"), func(v float64) bool { return v >= 1 }, "the leak is unaccounted")
	require.Equal(t, 2.0, got, "3 counted in use, 1 seen by the server")
	metricValue(t, pw, unaccounted("orders-fixed"), is(0), "the fixed pool is accounted for")
	require.Equal(t, 1, pg.CountBackends(t, "orders-leaky"))
}
