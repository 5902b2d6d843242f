package scrape

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// TestApplication_Live_EachDialectReadsWhatTheLibraryReports runs each real
// pool library (internal/launch/apps) against a real PostgreSQL, checks
// connections out, and compares what poolwatch reads from the library's
// exposition or document with what the library itself says at the same
// moment: its own numbers are read before and after poolwatch's round, and
// must not have moved in between.
//
// HikariCP's exposition is written by the test program from the pool's
// MXBeans (HikariCP 2.7.9 ships no Prometheus or Micrometer tracker, see
// internal/launch/apps/HikariApp.java); every other exposition is the
// library's own.
func TestApplication_Live_EachDialectReadsWhatTheLibraryReports(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "app", appPassword, "LOGIN")
	dsn := pg.DSN("app", appPassword, "postgres")

	type check struct {
		path, poolLabel string
		// scenario brings the pool to a state; want maps the library's own
		// numbers (state's JSON) to the pool poolwatch must read.
		scenario func(t *testing.T, app *testenv.Daemon)
		state    string
		want     func(t *testing.T, s map[string]float64, raw map[string]any) Pool
	}
	hold := func(n int) func(t *testing.T, app *testenv.Daemon) {
		return func(t *testing.T, app *testenv.Daemon) {
			testenv.AppCall(t, app, "POST", fmt.Sprintf("/hold?n=%d", n), nil)
		}
	}
	exhaustAndTimeOut := func(size int) func(t *testing.T, app *testenv.Daemon) {
		return func(t *testing.T, app *testenv.Daemon) {
			testenv.AppCall(t, app, "POST", fmt.Sprintf("/hold?n=%d", size), nil)
			testenv.AppCall(t, app, "POST", "/timeout", nil)
			testenv.AppCall(t, app, "POST", "/release", nil)
			testenv.AppCall(t, app, "POST", "/hold?n=2", nil)
		}
	}
	hikari := func(_ *testing.T, s map[string]float64, raw map[string]any) Pool {
		return Pool{Name: raw["pool"].(string), Min: Some(s["min"]), Max: Some(s["max"]), Open: s["total"],
			InUse: s["active"], Waiting: Some(s["pending"]), AcquireTimeouts: Some(s["timeouts"])}
	}
	for _, tc := range []struct {
		app    testenv.App
		checks []check
	}{
		{testenv.AppDatabaseSQL, []check{{path: "/metrics", scenario: hold(3), state: "/state",
			want: func(t *testing.T, s map[string]float64, _ map[string]any) Pool {
				require.Equal(t, 3.0, s["InUse"])
				return Pool{Name: "orders", Max: Some(s["MaxOpenConnections"]), Open: s["OpenConnections"], InUse: s["InUse"]}
			}}}},
		{testenv.AppPgxpool, []check{{path: "/metrics", poolLabel: "db", scenario: hold(3), state: "/state",
			want: func(t *testing.T, s map[string]float64, _ map[string]any) Pool {
				require.Equal(t, 3.0, s["AcquiredConns"])
				return Pool{Name: "orders", Max: Some(s["MaxConns"]), Open: s["TotalConns"], InUse: s["AcquiredConns"],
					AcquireTimeouts: Some(s["CanceledAcquireCount"])}
			}}}},
		{testenv.AppOpenTelemetry, []check{{path: "/metrics", scenario: hold(3), state: "/state",
			want: func(t *testing.T, s map[string]float64, _ map[string]any) Pool {
				require.Equal(t, 3.0, s["totalCount"]-s["idleCount"])
				return Pool{Name: "127.0.0.1:" + fmt.Sprint(pg.Port) + "/postgres", Open: s["totalCount"],
					InUse: s["totalCount"] - s["idleCount"], Waiting: Some(s["waitingCount"])}
			}}}},
		{testenv.AppHikariCP, []check{
			{path: "/metrics", scenario: exhaustAndTimeOut(5), state: "/state", want: func(t *testing.T, s map[string]float64, raw map[string]any) Pool {
				require.Equal(t, 1.0, s["timeouts"])
				require.Equal(t, 2.0, s["active"])
				return hikari(t, s, raw)
			}},
			{path: "/metrics/tracker", state: "/state", want: hikari},
		}},
		{testenv.AppPsycopg2, []check{{path: "/status", scenario: hold(3), state: "/status",
			want: func(t *testing.T, s map[string]float64, _ map[string]any) Pool {
				require.Equal(t, 3.0, s["in_use"])
				return Pool{Name: DefaultPoolName, Min: Some(s["minconn"]), Max: Some(s["maxconn"]), Open: s["in_use"] + s["idle"],
					InUse: s["in_use"], AcquireTimeouts: Some(s["timeouts"])}
			}}}},
		{testenv.AppPsycopgPool, []check{{path: "/status", scenario: exhaustAndTimeOut(5), state: "/status",
			want: func(t *testing.T, s map[string]float64, raw map[string]any) Pool {
				require.Equal(t, 1.0, s["requests_errors"])
				require.Equal(t, 2.0, s["pool_size"]-s["pool_available"])
				return Pool{Name: raw["name"].(string), Min: Some(s["pool_min"]), Max: Some(s["pool_max"]), Open: s["pool_size"],
					InUse: s["pool_size"] - s["pool_available"], Waiting: Some(s["requests_waiting"]), AcquireTimeouts: Some(s["requests_errors"])}
			}}}},
	} {
		t.Run(strings.ReplaceAll(string(tc.app), "/", "-"), func(t *testing.T) {
			args := []string(nil)
			if tc.app == testenv.AppPsycopgPool {
				args = []string{"--max-size", "5"}
			}
			app := testenv.StartApp(t, testenv.AppOptions{App: tc.app, DSN: dsn, ApplicationName: "orders-live", Args: args})
			for _, c := range tc.checks {
				if c.scenario != nil {
					c.scenario(t, app)
				}
				tg := appTarget(app.URL + c.path)
				tg.PoolLabel = c.poolLabel
				s, err := New(tg)
				require.NoError(t, err)
				defer s.(SelfContained).Close()

				// The library's numbers can lag the checkout by an event
				// (OpenTelemetry counts on pool events): poll until
				// poolwatch's round and the library agree and the library's
				// numbers held still around the round.
				var last string
				testenv.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
					before, raw := appState(t, app, c.state)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					res := s.Scrape(ctx, nil)
					cancel()
					after, _ := appState(t, app, c.state)
					if !res.Up() || fmt.Sprint(before) != fmt.Sprint(after) {
						last = fmt.Sprintf("errors %v; state %v then %v", res.Errors, before, after)
						return false, last
					}
					want := c.want(t, before, raw)
					want.NoLeakDetection = true
					last = fmt.Sprintf("poolwatch read %v, the library reports %v", res.Pools, want)
					return len(res.Pools) == 1 && reflect.DeepEqual(res.Pools[0], want), last
				})
				t.Logf("%s %s: %s", tc.app, c.path, last)
			}
		})
	}
}

// appState reads the app's own numbers: its numeric fields, and the raw
// document.
func appState(t *testing.T, app *testenv.Daemon, path string) (map[string]float64, map[string]any) {
	t.Helper()
	var raw map[string]any
	testenv.AppCall(t, app, "GET", path, &raw)
	nums := map[string]float64{}
	for k, v := range raw {
		if f, ok := v.(float64); ok {
			nums[k] = f
		}
	}
	return nums, raw
}
