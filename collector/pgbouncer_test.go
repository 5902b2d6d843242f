package collector

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/scrape"
)

// pgbouncerCompleteTarget is a PgBouncer 1.24 round with every series
// beyond the pool model: per-state counts, every SHOW STATS counter, SHOW
// LISTS and SHOW MEM; and a 1.18 database whose newer counters are absent.
func pgbouncerCompleteTarget() *scrape.Result {
	states := func(cl [4]float64, sv [7]float64) []scrape.StateCount {
		var out []scrape.StateCount
		for i, st := range []string{"active", "waiting", "active_cancel_req", "waiting_cancel_req"} {
			out = append(out, scrape.StateCount{Side: scrape.SideClient, State: st, Count: cl[i]})
		}
		for i, st := range []string{"active", "active_cancel", "being_canceled", "idle", "used", "tested", "login"} {
			out = append(out, scrape.StateCount{Side: scrape.SideServer, State: st, Count: sv[i]})
		}
		return out
	}
	return &scrape.Result{
		Target:   "bouncer-2",
		Kind:     "pgbouncer",
		Duration: 4 * time.Millisecond,
		Version:  "1.24.0",
		Pools: []scrape.Pool{
			{Name: "appdb/app", Database: "appdb", User: "app", Mode: "transaction",
				Max: scrape.Some(3), Open: 4, InUse: 3, Waiting: scrape.Some(2), MaxWaitSeconds: scrape.Some(0.5),
				States: states([4]float64{3, 2, 0, 1}, [7]float64{2, 1, 0, 1, 0, 0, 0})},
		},
		Stats: []scrape.DatabaseStats{
			{Database: "appdb", Transactions: 120, Queries: 360, ClientWaitSeconds: 3.5,
				TransactionSeconds: scrape.Some(12.25), QuerySeconds: scrape.Some(4.5), ReceivedBytes: scrape.Some(20480), SentBytes: scrape.Some(1.5e6),
				ServerAssignments: scrape.Some(130), ClientParses: scrape.Some(7), ServerParses: scrape.Some(3), Binds: scrape.Some(40)},
			{Database: "old", Transactions: 1, Queries: 1, ClientWaitSeconds: 0,
				TransactionSeconds: scrape.Some(0.01), QuerySeconds: scrape.Some(0.01), ReceivedBytes: scrape.Some(10), SentBytes: scrape.Some(20)},
		},
		Lists:        []scrape.ListCount{{List: "used_clients", Items: 6}, {List: "free_servers", Items: 46}, {List: "used_clients", Items: 99}},
		Memory:       []scrape.MemoryCache{{Name: "client_cache", ObjectBytes: scrape.Some(608), Used: scrape.Some(6), Free: scrape.Some(44), TotalBytes: scrape.Some(30400)}, {Name: "odd_cache", TotalBytes: scrape.Some(1)}},
		ScrapeErrors: map[string]float64{"show_mem": 0},
	}
}

func TestTargets_PgBouncerCompleteRoundMatchesGolden(t *testing.T) {
	compareGolden(t, NewTargets([]*scrape.Result{pgbouncerCompleteTarget()}), "pgbouncer_complete.prom")
}

func TestTargets_AbsentCountersAndStatesHaveNoSeries(t *testing.T) {
	c := NewTargets([]*scrape.Result{pgbouncerCompleteTarget()})
	n, err := testutil.GatherAndCount(registryOf(t, c), "poolwatch_pgbouncer_binds_total")
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the 1.24 database has binds")
	n, err = testutil.GatherAndCount(registryOf(t, c), "poolwatch_pgbouncer_memory_objects")
	require.NoError(t, err)
	require.Equal(t, 2, n, "odd_cache reports no used or free")
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP poolwatch_pgbouncer_list_items Items in one of PgBouncer's internal lists (SHOW LISTS): used_clients, free_servers, dns_names...
# TYPE poolwatch_pgbouncer_list_items gauge
poolwatch_pgbouncer_list_items{list="free_servers",target="bouncer-2"} 46
poolwatch_pgbouncer_list_items{list="used_clients",target="bouncer-2"} 6
`), "poolwatch_pgbouncer_list_items"), "a duplicate list row counts once, the first")
}

// registryOf registers c in a new pedantic registry.
func registryOf(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	return reg
}
