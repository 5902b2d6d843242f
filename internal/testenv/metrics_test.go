package testenv

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// exposition holds a counter, an untyped series and a gauge of two pools.
const exposition = `# TYPE poolwatch_target_scrapes_total counter
poolwatch_target_scrapes_total{target="pg"} 7
poolwatch_up 1
# TYPE poolwatch_pool_in_use_connections gauge
poolwatch_pool_in_use_connections{pool="server",target="pg"} 3
poolwatch_pool_in_use_connections{pool="appdb/app",target="bouncer"} 1
`

func TestMetrics_FindsSeriesByLabelPairsAndReadsGaugesCountersAndUntyped(t *testing.T) {
	m := ParseMetrics(t, exposition)
	require.Len(t, m.Find("poolwatch_pool_in_use_connections"), 2)
	require.Len(t, m.Find("poolwatch_pool_in_use_connections", "target", "pg", "pool", "server"), 1)
	require.Empty(t, m.Find("poolwatch_absent"))
	require.InDelta(t, 3.0, m.Must(t, "poolwatch_pool_in_use_connections", "target", "pg"), 0)
	require.InDelta(t, 7.0, m.Must(t, "poolwatch_target_scrapes_total", "target", "pg"), 0)
	require.InDelta(t, 1.0, m.Must(t, "poolwatch_up"), 0)
	_, ok := m.Get(t, "poolwatch_pool_in_use_connections", "target", "other")
	require.False(t, ok)
	require.Equal(t, 2, m.SeriesOf("pg"))
	require.Equal(t, []string{"bouncer", "pg"}, m.Targets())
	require.Equal(t, []string{"server", "appdb/app"}, m.Values("poolwatch_pool_in_use_connections", "pool"))
}
