package main

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// exposition is a trimmed /metrics of the demo's agent: a PgBouncer pool
// with a queue and a leak, the client-side pool (no queue, no min) and a
// PostgreSQL application pool.
const exposition = `# HELP poolwatch_pool_in_use_connections Connections working for a client.
# TYPE poolwatch_pool_in_use_connections gauge
poolwatch_pool_in_use_connections{pool="shop/app",target="bouncer"} 3
poolwatch_pool_in_use_connections{pool="clients",target="bouncer"} 8
poolwatch_pool_in_use_connections{pool="shop-web",target="pg"} 1
# TYPE poolwatch_pool_max_connections gauge
poolwatch_pool_max_connections{pool="shop/app",target="bouncer"} 3
poolwatch_pool_max_connections{pool="clients",target="bouncer"} 50
poolwatch_pool_max_connections{pool="shop-web",target="pg"} 10
# TYPE poolwatch_pool_min_connections gauge
poolwatch_pool_min_connections{pool="shop/app",target="bouncer"} 1
# TYPE poolwatch_pool_waiting_clients gauge
poolwatch_pool_waiting_clients{pool="shop/app",target="bouncer"} 3
# TYPE poolwatch_pool_max_wait_seconds gauge
poolwatch_pool_max_wait_seconds{pool="shop/app",target="bouncer"} 1.25
# TYPE poolwatch_pool_leaked_connections gauge
poolwatch_pool_leaked_connections{pool="shop/app",target="bouncer"} 1
poolwatch_pool_leaked_connections{pool="clients",target="bouncer"} 0
poolwatch_pool_leaked_connections{pool="shop-web",target="pg"} 0
# TYPE poolwatch_pool_open_connections gauge
poolwatch_pool_open_connections{pool="shop/app",target="bouncer"} 3
# TYPE poolwatch_target_up gauge
poolwatch_target_up{target="bouncer"} 1
`

func TestParsePools_ReadsEveryPoolSortedAndLeavesUnexportedValuesNaN(t *testing.T) {
	pools, err := parsePools(strings.NewReader(exposition))
	require.NoError(t, err)
	require.Len(t, pools, 3)
	require.Equal(t, [][2]string{{"bouncer", "clients"}, {"bouncer", "shop/app"}, {"pg", "shop-web"}},
		[][2]string{{pools[0].Target, pools[0].Pool}, {pools[1].Target, pools[1].Pool}, {pools[2].Target, pools[2].Pool}})

	shop := pools[1]
	require.Equal(t, poolStat{Target: "bouncer", Pool: "shop/app", InUse: 3, Min: 1, Max: 3, Waiting: 3, MaxWait: 1.25, Leaked: 1}, shop)
	require.InDelta(t, 1.0, shop.Utilization(), 1e-9)

	clients := pools[0]
	require.True(t, math.IsNaN(clients.Waiting), "the clients pool has no queue")
	require.True(t, math.IsNaN(clients.Min))
}

func TestParsePools_SkipsAPoolWithoutAnInUseGauge(t *testing.T) {
	pools, err := parsePools(strings.NewReader("# TYPE poolwatch_pool_max_connections gauge\npoolwatch_pool_max_connections{pool=\"a\",target=\"t\"} 3\n"))
	require.NoError(t, err)
	require.Empty(t, pools)
}

func TestParsePools_RejectsAMalformedExposition(t *testing.T) {
	_, err := parsePools(strings.NewReader("poolwatch_pool_in_use_connections{pool=\"a\" 3\n"))
	require.ErrorContains(t, err, "parse metrics")
}

func TestFormatPool_ShowsUtilizationQueueAndLeakOnOneLine(t *testing.T) {
	line := formatPool(poolStat{Target: "bouncer", Pool: "shop/app", InUse: 3, Min: 1, Max: 3, Waiting: 3, MaxWait: 1.25, Leaked: 1})
	require.Equal(t, "bouncer  shop/app     [##########]   3/3   100%  min 1  waiting 3  max wait  1.2s  leaked 1  <- leak", line)
	require.NotContains(t, line, "\n")
}

func TestFormatPool_ShowsADashForWhatThePoolDoesNotExport(t *testing.T) {
	nan := math.NaN()
	line := formatPool(poolStat{Target: "pg", Pool: "server", InUse: 4, Min: nan, Max: nan, Waiting: nan, MaxWait: nan, Leaked: 0})
	require.Equal(t, "pg       server       [          ]   4/-      -  min -  waiting -  max wait     -  leaked 0", line)
}

func TestBar_ClampsUtilizationToTheBarWidth(t *testing.T) {
	require.Equal(t, "..........", bar(0))
	require.Equal(t, "#####.....", bar(0.5))
	require.Equal(t, "##########", bar(1.7), "in use can exceed max by the reserve")
	require.Equal(t, "..........", bar(-1))
}

func TestFetchPools_FailsOnANon200Answer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "scrape failed", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := fetchPools(ctx, srv.Client(), srv.URL+"/metrics")
	require.ErrorContains(t, err, "503")
}
