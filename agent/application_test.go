package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/scrape"
)

// serveRecorded serves a recorded real exposition (scrape/testdata/
// expositions) with Content-Type ct, and counts the requests.
func serveRecorded(t *testing.T, file, ct string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("..", "scrape", "testdata", "expositions", file))
	require.NoError(t, err)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func appTargetYAML(name, url, extra string) string {
	return fmt.Sprintf(`
  - name: %s
    kind: application
    url: %s
%s`, name, url, extra)
}

func byName(rs []*scrape.Result) map[string]*scrape.Result {
	m := map[string]*scrape.Result{}
	for _, r := range rs {
		m[r.Target] = r
	}
	return m
}

// TestScrape_HungApplicationCostsItsOwnTimeoutOnly: a hung endpoint fails
// its own round at its scrape_timeout; the other application target of the
// same request is read in full, and a hung round is not started twice.
func TestScrape_HungApplicationCostsItsOwnTimeoutOnly(t *testing.T) {
	checkGoroutines(t)
	release := make(chan struct{})
	var hungRequests atomic.Int64
	hung := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		hungRequests.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hung.Close()
	defer close(release)
	healthy, _ := serveRecorded(t, "hikaricp-micrometer.prom", "text/plain; version=0.0.4")
	a := newAgent(t, "targets:"+
		appTargetYAML("hung", hung.URL+"/metrics", "    scrape_timeout: 700ms")+
		appTargetYAML("healthy", healthy.URL+"/metrics", "    scrape_timeout: 5s"), nil)

	require.Empty(t, a.ProbePools(), "application targets have no probe pool")
	start := time.Now()
	out := byName(a.Scrape(context.Background(), []string{"hung", "healthy"}))
	took := time.Since(start)

	require.True(t, out["healthy"].Up(), "%v", out["healthy"].Errors)
	require.Len(t, out["healthy"].Pools, 1)
	assert.Equal(t, 3.0, out["healthy"].Pools[0].InUse)
	assert.Less(t, out["healthy"].Duration, 700*time.Millisecond, "the healthy target did not wait for the hung one")

	require.False(t, out["hung"].Up())
	require.Len(t, out["hung"].Errors, 1)
	assert.Equal(t, scrape.QueryHTTP, out["hung"].Errors[0].Query)
	assert.Contains(t, out["hung"].Errors[0].Error(), `target "hung"`)
	assert.Contains(t, out["hung"].Errors[0].Error(), "context deadline exceeded")
	assert.GreaterOrEqual(t, took, 700*time.Millisecond, "the request waited for the hung round's deadline")
	assert.Equal(t, int64(1), hungRequests.Load())
	assert.Equal(t, 1.0, out["hung"].ScrapeErrors[scrape.QueryHTTP])
	assert.Equal(t, 0.0, out["hung"].ScrapeErrors[scrape.QueryParse], "every query name starts at 0")
}

// TestApply_ChangedApplicationTargetGetsANewClient: a reload that changes
// an application target's URL reads the new URL at once; the old client is
// closed.
func TestApply_ChangedApplicationTargetGetsANewClient(t *testing.T) {
	checkGoroutines(t)
	first, firstHits := serveRecorded(t, "psycopg2-status.json", "application/json")
	second, secondHits := serveRecorded(t, "psycopg-pool-stats.json", "application/json")
	a := newAgent(t, "targets:"+appTargetYAML("app", first.URL, ""), nil)
	res := a.Scrape(context.Background(), []string{"app"})
	require.True(t, res[0].Up())
	require.Equal(t, scrape.DefaultPoolName, res[0].Pools[0].Name)

	cfg, err := config.Parse("test.yml", []byte("targets:"+appTargetYAML("app", second.URL, "")))
	require.NoError(t, err)
	require.NoError(t, a.Apply(cfg))
	res = a.Scrape(context.Background(), []string{"app"})
	require.True(t, res[0].Up())
	require.Equal(t, "orders", res[0].Pools[0].Name)
	a.WaitClosing()
	assert.Equal(t, int64(1), firstHits.Load())
	assert.Equal(t, int64(1), secondHits.Load())
}

// TestScrape_CrossCheckJoinsTheServersRound: an application target whose
// seen_as names a postgres target. The application (a recorded real
// psycopg2 status document) counts 4 connections in use; 2 real
// connections named orders-api are open on the real PostgreSQL: 2 are
// unaccounted. Asking for the application alone runs the server's round
// too; asking for both shares the request's own server round.
func TestScrape_CrossCheckJoinsTheServersRound(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	app, _ := serveRecorded(t, "psycopg2-status.json", "application/json")
	a := newAgent(t, "targets:"+
		postgresTarget("pg", pg.Addr(), "poolwatch-agent-test", "")+
		appTargetYAML("orders-api", app.URL+"/status", `    seen_as:
      - target: pg
        application_name: "orders-api*"`), nil)

	h := testenv.HoldTransactions(t, pg.DSN(monUser, monPass, "postgres"), 2, "orders-api-1")
	h.WaitHeld(t, 2, 10*time.Second)

	var res *scrape.Result
	testenv.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		res = a.Scrape(context.Background(), []string{"orders-api"})[0]
		return len(res.Unaccounted) == 1 && res.Unaccounted[0].Value == 2, fmt.Sprintf("unaccounted %v, errors %v", res.Unaccounted, res.Errors)
	})
	assert.Equal(t, []scrape.Unaccounted{{Pool: scrape.DefaultPoolName, Value: 2}}, res.Unaccounted)

	out := byName(a.Scrape(context.Background(), []string{"pg", "orders-api"}))
	require.Equal(t, []scrape.Unaccounted{{Pool: scrape.DefaultPoolName, Value: 2}}, out["orders-api"].Unaccounted)
	require.Len(t, out["pg"].Applications, 1)
	assert.Equal(t, 2.0, out["pg"].Applications[0].Total)

	// The server down: the comparison is unknown, not 4.
	h.Release()
	cfg, err := config.Parse("test.yml", []byte("targets:"+
		postgresTarget("pg", "127.0.0.1:1", "poolwatch-agent-test", "    scrape_timeout: 1s")+
		appTargetYAML("orders-api", app.URL+"/status", `    seen_as:
      - target: pg
        application_name: "orders-api*"`)))
	require.NoError(t, err)
	require.NoError(t, a.Apply(cfg))
	out = byName(a.Scrape(context.Background(), []string{"pg", "orders-api"}))
	require.False(t, out["pg"].Up())
	require.True(t, out["orders-api"].Up(), "the application's own round does not fail with its server")
	require.Nil(t, out["orders-api"].Unaccounted)
}
