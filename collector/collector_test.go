package collector

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/pool"
	"github.com/poolwatch/poolwatch/scrape"
)

var update = flag.Bool("update", false, "rewrite the golden .prom files")

// pgbouncerTarget is a PgBouncer round as the scrape package returns it:
// an exhausted transaction pool, the clients pool, a database-wide cap, a
// paused database and a leak.
func pgbouncerTarget() *scrape.Result {
	return &scrape.Result{
		Target:   "bouncer-1",
		Kind:     "pgbouncer",
		Labels:   map[string]string{"env": "prod"},
		Upstream: "orders-db",
		Duration: 12 * time.Millisecond,
		Version:  "1.18.0",
		Pools: []scrape.Pool{
			{Name: "appdb/app", Database: "appdb", User: "app", Mode: "transaction",
				Min: scrape.Some(1), Max: scrape.Some(3), Reserve: scrape.Some(0),
				Open: 3, InUse: 3, Waiting: scrape.Some(2), MaxWaitSeconds: scrape.Some(1.170892),
				Leaked: 1, OldestLeakSeconds: 42},
			{Name: "appdb/*", Database: "appdb", Max: scrape.Some(10), Open: 3, InUse: 3},
			{Name: "clients", Max: scrape.Some(100), Open: 6, InUse: 6},
		},
		Databases:    []scrape.DatabaseState{{Name: "appdb"}, {Name: "reports", Paused: true}},
		Stats:        []scrape.DatabaseStats{{Database: "appdb", Transactions: 120, Queries: 360, ClientWaitSeconds: 3.5}},
		ScrapeErrors: map[string]float64{"show_clients": 0, "show_pools": 2},
	}
}

// postgresTarget is a PostgreSQL round whose server pool and one
// application pool are read, and whose application pools have no declared
// min (absent series), by a role without pg_monitor.
func postgresTarget() *scrape.Result {
	return &scrape.Result{
		Target:            "orders-db",
		Kind:              "postgres",
		Upstream:          "orders-db",
		LimitedVisibility: true,
		Duration:          3 * time.Millisecond,
		Version:           "15.18",
		Pools: []scrape.Pool{
			{Name: "orders-api", Max: scrape.Some(20), Open: 7, InUse: 2, Leaked: 1, OldestLeakSeconds: 310},
			{Name: "server", Max: scrape.Some(97), Reserve: scrape.Some(3), Open: 9, InUse: 9, Leaked: 1, OldestLeakSeconds: 310},
		},
		ScrapeErrors: map[string]float64{"activity": 0, "connect": 1},
	}
}

// downTarget is a round that could not connect: up 0 and no pool series.
func downTarget() *scrape.Result {
	return &scrape.Result{
		Target:       "down-db",
		Kind:         "postgres",
		Upstream:     "down-db",
		Duration:     2 * time.Second,
		Errors:       []scrape.QueryError{{Query: "connect", Err: errors.New("connection refused")}},
		ScrapeErrors: map[string]float64{"activity": 0, "connect": 7},
	}
}

// refusedTarget is a round whose connect PostgreSQL refused for lack of
// slots: up 0, no pool series, and the refusal by its reason.
func refusedTarget() *scrape.Result {
	return &scrape.Result{
		Target:   "full-db",
		Kind:     "postgres",
		Duration: 40 * time.Millisecond,
		Errors: []scrape.QueryError{{Query: "connect", Err: fmt.Errorf("probe pool \"full-db\": acquire: %w",
			&pgconn.PgError{Severity: "FATAL", Code: "53300", Message: "remaining connection slots are reserved for non-replication superuser connections"})}},
		ScrapeErrors: map[string]float64{"activity": 0, "connect": 1, "round": 0},
	}
}

func compareGolden(t *testing.T, c prometheus.Collector, name string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		mfs, err := reg.Gather()
		require.NoError(t, err)
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			require.NoError(t, enc.Encode(mf))
		}
		require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	}
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, testutil.CollectAndCompare(c, f))
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems, "metric lint problems")
}

func TestTargets_PgBouncerRoundMatchesGolden(t *testing.T) {
	compareGolden(t, NewTargets([]*scrape.Result{pgbouncerTarget()}), "pgbouncer.prom")
}

func TestTargets_PostgresRoundMatchesGolden(t *testing.T) {
	compareGolden(t, NewTargets([]*scrape.Result{postgresTarget()}), "postgres.prom")
}

func TestTargets_DownTargetHasUpZeroAndNoPoolSeries(t *testing.T) {
	c := NewTargets([]*scrape.Result{downTarget()})
	compareGolden(t, c, "down.prom")
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_open_connections"))
}

// The upstream link is configuration: it is there while the target is
// down, which is when a leak alert on another view may still fire. The
// visibility flag is there only when the round read pg_stat_activity.
func TestTargets_UpstreamAlwaysVisibilityOnlyWhenKnown(t *testing.T) {
	down := NewTargets([]*scrape.Result{downTarget()})
	require.Equal(t, 1, testutil.CollectAndCount(down, "poolwatch_target_upstream_info"))
	require.Equal(t, 0, testutil.CollectAndCount(down, "poolwatch_target_limited_visibility"), "no activity read: absent")
	bouncer := NewTargets([]*scrape.Result{pgbouncerTarget()})
	require.Equal(t, 0, testutil.CollectAndCount(bouncer, "poolwatch_target_limited_visibility"), "pgbouncer: absent")
	seesAll := postgresTarget()
	seesAll.LimitedVisibility = false
	require.NoError(t, testutil.CollectAndCompare(NewTargets([]*scrape.Result{seesAll}), strings.NewReader(`
# HELP poolwatch_target_limited_visibility 1 when the agent's role cannot see other roles' connections (no pg_monitor), so every count is too low; postgres only, absent when the round could not tell.
# TYPE poolwatch_target_limited_visibility gauge
poolwatch_target_limited_visibility{target="orders-db"} 0
`), "poolwatch_target_limited_visibility"))
	lone := pgbouncerTarget()
	lone.Upstream = ""
	require.Equal(t, 0, testutil.CollectAndCount(NewTargets([]*scrape.Result{lone}), "poolwatch_target_upstream_info"), "no upstream configured: absent")
}

func TestTargets_RefusedConnectReadsOneWithItsReasonAndNoPoolSeries(t *testing.T) {
	c := NewTargets([]*scrape.Result{refusedTarget()})
	compareGolden(t, c, "refused.prom")
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_in_use_connections"), "never an invented in-use count")
}

func TestTargets_SeveralTargetsWithDifferentStaticLabels(t *testing.T) {
	c := NewTargets([]*scrape.Result{pgbouncerTarget(), postgresTarget(), downTarget()})
	require.Equal(t, 3, testutil.CollectAndCount(c, "poolwatch_target_up"))
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}

func TestTargets_AbsentOptionalsAreNotZero(t *testing.T) {
	c := NewTargets([]*scrape.Result{postgresTarget()})
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_min_connections"), "no declared min: absent")
	require.Equal(t, 0, testutil.CollectAndCount(c, "poolwatch_pool_waiting_clients"), "postgres has no queue: absent")
	require.Equal(t, 2, testutil.CollectAndCount(c, "poolwatch_pool_max_connections"))
}

func TestProbePools_MatchGolden(t *testing.T) {
	c := NewProbePools([]scrape.ProbePool{
		{Target: "bouncer-1", Labels: map[string]string{"env": "prod"}, Stats: pool.Stats{Min: 0, Max: 2, Open: 1, Idle: 1,
			AcquireRetries: 3, AcquireErrors: 1, HealthCheckFailures: 3, NewConnections: 4}},
		{Target: "orders-db", Stats: pool.Stats{Min: 1, Max: 2, Open: 2, InUse: 1, Idle: 1, Leaked: 1, NewConnections: 2}},
	})
	compareGolden(t, c, "probe_pools.prom")
}

func TestCollectors_DescribeNothing(t *testing.T) {
	for _, c := range []prometheus.Collector{NewTargets(nil), NewProbePools(nil)} {
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		close(ch)
		require.Empty(t, ch)
	}
}

func TestTargets_RoundThatReadNothingStillReportsUpAndErrors(t *testing.T) {
	c := NewTargets([]*scrape.Result{{Target: "x", Kind: "postgres", ScrapeErrors: map[string]float64{"round": 1},
		Errors: []scrape.QueryError{{Query: "round", Err: errors.New("cut short")}}}})
	out, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, "poolwatch_target_up", "poolwatch_target_scrape_errors_total")
	require.NoError(t, err)
	require.True(t, strings.Contains(string(out), `poolwatch_target_up{target="x"} 0`), string(out))
	require.Contains(t, string(out), `poolwatch_target_scrape_errors_total{query="round",target="x"} 1`)
}

func TestTargets_TargetsWithTheSameStaticLabelsShareDescriptorsAndKeepTheirLabels(t *testing.T) {
	round := func(name string, labels map[string]string) *scrape.Result {
		return &scrape.Result{Target: name, Kind: "postgres", Labels: labels, ScrapeErrors: map[string]float64{"connect": 0}}
	}
	c := NewTargets([]*scrape.Result{
		round("a", map[string]string{"env": "prod"}),
		round("b", map[string]string{"env": "prod"}),
		round("c", map[string]string{"env": "dev"}),
		round("d", nil),
	})
	require.Same(t, c.descs[0], c.descs[1])
	require.NotSame(t, c.descs[0], c.descs[2])
	out, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, "poolwatch_target_up")
	require.NoError(t, err)
	for _, want := range []string{
		`poolwatch_target_up{env="prod",target="a"} 1`,
		`poolwatch_target_up{env="prod",target="b"} 1`,
		`poolwatch_target_up{env="dev",target="c"} 1`,
		`poolwatch_target_up{target="d"} 1`,
	} {
		require.Contains(t, string(out), want)
	}
}

func TestAddressProbes_MatchGolden(t *testing.T) {
	c := NewAddressProbes(scrape.AddressProbes{Pools: 3, MaxPools: 100,
		Refused: map[string]uint64{"not_allowed": 2, "invalid": 0, "max_targets": 5}})
	compareGolden(t, c, "address_probes.prom")
}
