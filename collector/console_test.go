package collector

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/scrape"
)

// odysseyTarget is an Odyssey round as the scrape package maps it from
// testdata/odyssey: per-state counts, no leak detection.
func odysseyTarget() *scrape.Result {
	return &scrape.Result{
		Target:   "odyssey-1",
		Kind:     "odyssey",
		Duration: 2 * time.Millisecond,
		Version:  "1.3",
		Pools: []scrape.Pool{
			{Name: "appdb/app", Database: "appdb", User: "app", Mode: "transaction", Max: scrape.Some(8), Open: 8, InUse: 8, Waiting: scrape.Some(4), NoLeakDetection: true,
				States: []scrape.StateCount{{Side: scrape.SideClient, State: "active", Count: 12}, {Side: scrape.SideClient, State: "waiting", Count: 4},
					{Side: scrape.SideServer, State: "active", Count: 8}, {Side: scrape.SideServer, State: "idle", Count: 0}}},
		},
		ScrapeErrors: map[string]float64{"show_pools": 0},
	}
}

func TestTargets_OdysseyRoundMatchesGolden(t *testing.T) {
	compareGolden(t, NewTargets([]*scrape.Result{odysseyTarget()}), "odyssey.prom")
}

func TestTargets_KindsThatCannotTellLeaksExportNoLeakSeries(t *testing.T) {
	c := NewTargets([]*scrape.Result{odysseyTarget()})
	for _, name := range []string{"poolwatch_pool_leaked_connections", "poolwatch_pool_oldest_leak_seconds"} {
		n, err := testutil.GatherAndCount(registryOf(t, c), name)
		require.NoError(t, err)
		require.Zero(t, n, "%s: absent, not 0", name)
	}
}
