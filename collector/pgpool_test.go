package collector

import (
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/scrape"
)

// pgpoolTarget is a Pgpool-II round: every child busy (one idle in a
// transaction past the threshold), two backend nodes, the standby down.
func pgpoolTarget() *scrape.Result {
	return &scrape.Result{
		Target:   "pgpool-1",
		Kind:     "pgpool",
		Duration: 3 * time.Millisecond,
		Version:  "4.3.5",
		Pools: []scrape.Pool{
			{Name: "children", Max: scrape.Some(4), Open: 4, InUse: 4, Leaked: 1, OldestLeakSeconds: 301,
				States: []scrape.StateCount{{Side: scrape.SideClient, State: "execute_command", Count: 3}, {Side: scrape.SideClient, State: "idle_in_transaction", Count: 1}}},
			{Name: "node0", Max: scrape.Some(8), Open: 5, InUse: 4},
			{Name: "node1", Max: scrape.Some(8), Open: 0, InUse: 0},
		},
		Nodes: []scrape.BackendNode{
			{Name: "node0", Address: "db0:5432", Status: "up", Role: "primary", Up: true},
			{Name: "node1", Address: "db1:5432", Status: "down", Role: "standby"},
		},
		ScrapeErrors: map[string]float64{"show_pool_processes": 0, "activity": 0},
	}
}

func TestTargets_PgpoolRoundMatchesGolden(t *testing.T) {
	compareGolden(t, NewTargets([]*scrape.Result{pgpoolTarget()}), "pgpool.prom")
}
