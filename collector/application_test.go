package collector

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	promconfig "github.com/prometheus/common/config"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/scrape"
)

// applicationRound scrapes a recorded real exposition (scrape/testdata/
// expositions), served over HTTP, as the application target orders-api
// with the static label env=prod, and completes the round as the agent
// does.
func applicationRound(t *testing.T, file, contentType, poolLabel string) *scrape.Result {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("..", "scrape", "testdata", "expositions", file))
	require.NoError(t, err)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	tg := config.Target{
		Name: "orders-api", Kind: config.KindApplication, URL: srv.URL + "/metrics", Format: config.FormatAuto,
		PoolLabel: poolLabel, HTTPClient: promconfig.DefaultHTTPClientConfig, ScrapeTimeout: 5 * time.Second,
		MaxPools: 1000, BodySizeLimit: 10 << 20, Labels: map[string]string{"env": "prod"},
	}
	s, err := scrape.New(tg)
	require.NoError(t, err)
	defer s.(scrape.SelfContained).Close()
	ctx, cancel := context.WithTimeout(context.Background(), tg.ScrapeTimeout)
	defer cancel()
	res := s.Scrape(ctx, nil)
	require.Empty(t, res.Errors)
	res.Duration = 4 * time.Millisecond
	res.ScrapeErrors = map[string]float64{}
	for _, q := range scrape.Queries(config.KindApplication) {
		res.ScrapeErrors[q] = 0
	}
	return res
}

// TestTargets_EachApplicationDialectMatchesGolden: one golden file per
// dialect, from the libraries' own recorded output.
func TestTargets_EachApplicationDialectMatchesGolden(t *testing.T) {
	for _, tc := range []struct{ file, contentType, poolLabel string }{
		{"database-sql.prom", "text/plain; version=0.0.4", ""},
		{"pgxpool.prom", "text/plain; version=0.0.4", "db"},
		{"opentelemetry.prom", "text/plain", ""},
		{"opentelemetry-old-names.prom", "text/plain", ""},
		{"hikaricp-micrometer.prom", "text/plain; version=0.0.4", ""},
		{"hikaricp-prometheus-tracker.prom", "text/plain; version=0.0.4", ""},
		{"psycopg2-status.json", "application/json", ""},
		{"psycopg-pool-stats.json", "application/json", ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			golden := "application-" + strings.TrimSuffix(strings.TrimSuffix(tc.file, ".prom"), ".json") + ".prom"
			compareGolden(t, NewTargets([]*scrape.Result{applicationRound(t, tc.file, tc.contentType, tc.poolLabel)}), golden)
		})
	}
}

// TestTargets_CrossCheckMatchesGolden: the cross-check's series, per pool,
// for an application round the agent completed.
func TestTargets_CrossCheckMatchesGolden(t *testing.T) {
	res := applicationRound(t, "psycopg2-status.json", "application/json", "")
	res.Unaccounted = []scrape.Unaccounted{{Pool: "default", Value: 3}}
	c := NewTargets([]*scrape.Result{res})
	compareGolden(t, c, "application-crosscheck.prom")
	require.Equal(t, 1, testutil.CollectAndCount(c, "poolwatch_pool_unaccounted_connections"))
}

func TestTargets_NoAcquireTimeoutsWhereTheDialectHasNone(t *testing.T) {
	c := NewTargets([]*scrape.Result{applicationRound(t, "database-sql.prom", "text/plain", "")})
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_acquire_timeouts_total"), "database/sql reports none: absent, not 0")
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_waiting_clients"), "DBStatsCollector has no waiting gauge")
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_min_connections"))
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_unaccounted_connections"), "no seen_as: absent")
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_leaked_connections"), "the application reports no leaks, and poolwatch sees none there: absent")
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_oldest_leak_seconds"))
}
