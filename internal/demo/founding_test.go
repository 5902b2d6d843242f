package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ordersExposition is what poolwatch serves for orders-api while its retry
// loop leaks: the app counts 8 in use, the server sees 3 of them.
const ordersExposition = `# TYPE poolwatch_pool_in_use_connections gauge
poolwatch_pool_in_use_connections{pool="default",target="orders-api"} 8
poolwatch_pool_in_use_connections{pool="orders-api",target="pg"} 3
# TYPE poolwatch_pool_unaccounted_connections gauge
poolwatch_pool_unaccounted_connections{pool="default",target="orders-api"} 5
`

func serve(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

func TestOrdersGauges_ReadsTheAppsInUseAndUnaccountedNotTheServersPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	inUse, unaccounted, err := ordersGauges(ctx, http.DefaultClient, serve(t, ordersExposition))
	require.NoError(t, err)
	require.Equal(t, 8.0, inUse)
	require.Equal(t, 5.0, unaccounted)
}

func TestOrdersGauges_FailsUntilTheCrossCheckIsExported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := ordersGauges(ctx, http.DefaultClient, serve(t, "# TYPE poolwatch_pool_in_use_connections gauge\npoolwatch_pool_in_use_connections{pool=\"default\",target=\"orders-api\"} 8\n"))
	require.ErrorContains(t, err, "no orders-api series yet")
	_, _, err = ordersGauges(ctx, http.DefaultClient, serve(t, "poolwatch_pool_in_use_connections{pool=\"default\" 8\n"))
	require.ErrorContains(t, err, "parse metrics")
}
