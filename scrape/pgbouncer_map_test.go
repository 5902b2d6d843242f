package scrape

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
)

// own118 is the agent's row in the recorded 1.18 SHOW CLIENTS.
var own118 = ownClient{addr: "127.0.0.1", port: 52992}

func poolByName(tb testing.TB, res *Result, name string) Pool {
	tb.Helper()
	for _, p := range res.Pools {
		if p.Name == name {
			return p
		}
	}
	tb.Fatalf("no pool %q in %v", name, poolNames(res))
	return Pool{}
}

func poolNames(res *Result) []string {
	var out []string
	for _, p := range res.Pools {
		out = append(out, p.Name)
	}
	return out
}

// bouncerStates are the per-state counts of a SHOW POOLS row of 1.18 and
// later: cl_active, cl_waiting, cl_active_cancel_req,
// cl_waiting_cancel_req; sv_active, sv_active_cancel, sv_being_canceled,
// sv_idle, sv_used, sv_tested, sv_login.
func bouncerStates(cl [4]float64, sv [7]float64) []StateCount {
	var out []StateCount
	for i, st := range []string{"active", "waiting", "active_cancel_req", "waiting_cancel_req"} {
		out = append(out, StateCount{Side: SideClient, State: st, Count: cl[i]})
	}
	for i, st := range []string{"active", "active_cancel", "being_canceled", "idle", "used", "tested", "login"} {
		out = append(out, StateCount{Side: SideServer, State: st, Count: sv[i]})
	}
	return out
}

// expected118 is the recorded 1.18 exhaustion scenario mapped with a 2 s
// leak threshold.
func expected118() *Result {
	return &Result{
		Kind:    config.KindPgBouncer,
		Version: "1.18.0",
		Pools: []Pool{
			{
				Name: "app/app", Database: "app", User: "app", Mode: "transaction",
				Min: Some(1), Max: Some(3), Reserve: Some(0),
				Open: 3, InUse: 3,
				Waiting: Some(2), MaxWaitSeconds: Some(3.006475),
				Leaked: 3, OldestLeakSeconds: 3,
				States: bouncerStates([4]float64{3, 2, 0, 0}, [7]float64{3, 0, 0, 0, 0, 0, 0}),
			},
			{Name: "big/*", Database: "big", Mode: "transaction", Max: Some(4)},
			{Name: "clients", Max: Some(50), Open: 7, InUse: 7},
			{
				Name: "sess/app", Database: "sess", User: "app", Mode: "session",
				Min: Some(1), Max: Some(5), Reserve: Some(2),
				Open: 1, InUse: 1,
				Waiting: Some(0), MaxWaitSeconds: Some(0),
				States: bouncerStates([4]float64{1, 0, 0, 0}, [7]float64{1, 0, 0, 0, 0, 0, 0}),
			},
		},
		Databases: []DatabaseState{{Name: "app"}, {Name: "big"}, {Name: "sess"}},
		Stats: []DatabaseStats{
			{
				Database: "app", Transactions: 5, Queries: 8, ClientWaitSeconds: 14.11682,
				TransactionSeconds: Some(0), QuerySeconds: Some(0.019085), ReceivedBytes: Some(75), SentBytes: Some(384),
			},
			{
				Database: "sess", Transactions: 1, Queries: 1, ClientWaitSeconds: 0.003319,
				TransactionSeconds: Some(0), QuerySeconds: Some(0), ReceivedBytes: Some(25), SentBytes: Some(45),
			},
		},
		Lists: []ListCount{
			{"databases", 4}, {"users", 5}, {"pools", 3}, {"free_clients", 43}, {"used_clients", 7},
			{"login_clients", 0}, {"free_servers", 46}, {"used_servers", 4}, {"dns_names", 0},
			{"dns_zones", 0}, {"dns_queries", 0}, {"dns_pending", 0},
		},
		Memory: recordedMem(),
		Leaks: []Leak{
			{
				ID: "0x55a34f162e60@2026-11-26 05:05:46 UTC@2026-11-26 05:06:01 UTC", Pool: "app/app",
				ApplicationName: "leaky-0", User: "app", Database: "app", ClientAddr: "127.0.0.1:52994",
				PID: 8324, Age: 3 * time.Second,
			},
			{
				ID: "0x55a34f1630c0@2026-11-26 05:06:01 UTC@2026-11-26 05:06:01 UTC", Pool: "app/app",
				ApplicationName: "leaky-1", User: "app", Database: "app", ClientAddr: "127.0.0.1:38854",
				PID: 8323, Age: 3 * time.Second,
			},
			{
				ID: "0x55a34f163320@2026-11-26 05:06:01 UTC@2026-11-26 05:06:01 UTC", Pool: "app/app",
				ApplicationName: "leaky-2", User: "app", Database: "app", ClientAddr: "127.0.0.1:38858",
				PID: 8326, Age: 3 * time.Second,
			},
		},
	}
}

// recordedMem is testdata's SHOW MEM.
func recordedMem() []MemoryCache {
	row := func(name string, size, used, free, total float64) MemoryCache {
		return MemoryCache{Name: name, ObjectBytes: Some(size), Used: Some(used), Free: Some(free), TotalBytes: Some(total)}
	}
	return []MemoryCache{
		row("user_cache", 2312, 4, 46, 115600), row("db_cache", 208, 2, 76, 16224), row("pool_cache", 552, 1, 49, 27600),
		row("server_cache", 608, 0, 0, 0), row("client_cache", 608, 1, 49, 30400), row("iobuf_cache", 4112, 1, 49, 205600),
	}
}

func assertResult(t *testing.T, want, got *Result) {
	t.Helper()
	// Compare floats with a tolerance: maxwait and stats are sums of parts.
	require.Equal(t, poolNames(want), poolNames(got))
	for i := range want.Pools {
		w, g := want.Pools[i], got.Pools[i]
		assert.InDelta(t, w.MaxWaitSeconds.Value, g.MaxWaitSeconds.Value, 1e-9, "pool %s max wait", w.Name)
		w.MaxWaitSeconds.Value, g.MaxWaitSeconds.Value = 0, 0
		assert.Equal(t, w, g, "pool %s", w.Name)
	}
	require.Len(t, got.Stats, len(want.Stats))
	for i := range want.Stats {
		w, g := want.Stats[i], got.Stats[i]
		for _, f := range []func(*DatabaseStats) *float64{
			func(s *DatabaseStats) *float64 { return &s.ClientWaitSeconds },
			func(s *DatabaseStats) *float64 { return &s.TransactionSeconds.Value },
			func(s *DatabaseStats) *float64 { return &s.QuerySeconds.Value },
		} {
			assert.InDelta(t, *f(&w), *f(&g), 1e-9, "stats of %s", w.Database)
			*f(&w), *f(&g) = 0, 0
		}
		assert.Equal(t, w, g)
	}
	if want.Lists != nil {
		assert.Equal(t, want.Lists, got.Lists)
	}
	if want.Memory != nil {
		assert.Equal(t, want.Memory, got.Memory)
	}
	assert.Equal(t, want.Kind, got.Kind)
	assert.Equal(t, want.Version, got.Version)
	assert.Equal(t, want.Databases, got.Databases)
	assert.Equal(t, want.Leaks, got.Leaks)
	assert.Equal(t, want.PoolsDropped, got.PoolsDropped)
	assert.Equal(t, want.Errors, got.Errors)
}

func TestPgBouncerRound_MapsRecorded118Exhaustion(t *testing.T) {
	var sent []string
	res, r := fixtureRound(config.Target{LeakThreshold: 2 * time.Second}, "1.18.0", own118,
		fixtureConsole(t, "pgbouncer-1.18", nil, &sent))
	assertResult(t, expected118(), res)
	assert.True(t, res.Up())
	assert.True(t, r.clientsRan)
	// SHOW USERS has no pool_size before 1.23: not sent.
	assert.Equal(t, []string{"show_pools", "show_databases", "show_config", "show_lists", "show_stats", "show_mem", "show_clients", "show_servers"}, sent)
}

// withIDs sets the leak IDs of the 1.24+ fixtures (the id column) and
// their order: at equal age, by ID.
func withIDs(want *Result) {
	want.Leaks[0].ID = "id:102@2026-11-26 05:06:01 UTC" // leaky-0
	want.Leaks[1].ID = "id:101@2026-11-26 05:06:01 UTC" // leaky-1
	want.Leaks[2].ID = "id:103@2026-11-26 05:06:01 UTC" // leaky-2
	want.Leaks[0], want.Leaks[1] = want.Leaks[1], want.Leaks[0]
}

func TestPgBouncerRound_MapsDocumented124ColumnSet(t *testing.T) {
	want := expected118()
	want.Version = "1.24.0"
	// User app overrides pool_size (SHOW USERS), for both of its pools;
	// the reserve comes from reserve_pool_size.
	want.Pools[0].Max = Some(4)
	want.Pools[3].Max = Some(4)
	want.Databases[1].Paused = true
	withIDs(want)
	// 1.21+ and 1.23+ counters (made-up values in the fixture for app).
	want.Stats[0].ServerAssignments, want.Stats[0].ClientParses, want.Stats[0].ServerParses, want.Stats[0].Binds = Some(7), Some(2), Some(1), Some(4)
	want.Stats[1].ServerAssignments, want.Stats[1].ClientParses, want.Stats[1].ServerParses, want.Stats[1].Binds = Some(0), Some(0), Some(0), Some(0)
	want.Lists = nil
	var sent []string
	res, _ := fixtureRound(config.Target{LeakThreshold: 2 * time.Second}, "1.24.0", own118,
		fixtureConsole(t, "pgbouncer-1.24", nil, &sent))
	assertResult(t, want, res)
	assert.Contains(t, sent, "show_users")
}

func TestPgBouncerRound_MapsDocumented125ColumnSet(t *testing.T) {
	want := expected118()
	want.Version = "1.25.1"
	// User app overrides pool_size and reserve_pool_size.
	want.Pools[0].Max, want.Pools[0].Reserve = Some(4), Some(1)
	want.Pools[3].Max, want.Pools[3].Reserve = Some(4), Some(1)
	// The idle client (state "idle", new in 1.25) counts against
	// max_client_conn and is no leak.
	want.Pools[2].Open, want.Pools[2].InUse = 8, 8
	want.Databases[1].Paused = true
	withIDs(want)
	for i := range want.Stats {
		want.Stats[i].ServerAssignments, want.Stats[i].ClientParses, want.Stats[i].ServerParses, want.Stats[i].Binds = Some(0), Some(0), Some(0), Some(0)
	}
	want.Lists = nil
	res, _ := fixtureRound(config.Target{LeakThreshold: 2 * time.Second}, "1.25.1", own118,
		fixtureConsole(t, "pgbouncer-1.25", nil, nil))
	assertResult(t, want, res)
}

func TestPgBouncerRound_LeakNeedsAgeStrictlyAboveThreshold(t *testing.T) {
	res, r := fixtureRound(config.Target{LeakThreshold: 3 * time.Second}, "1.18.0", own118,
		fixtureConsole(t, "pgbouncer-1.18", nil, nil))
	assert.Empty(t, res.Leaks)
	assert.Zero(t, poolByName(t, res, "app/app").Leaked)
	assert.Zero(t, poolByName(t, res, "app/app").OldestLeakSeconds)
	assert.True(t, r.clientsRan)
	assert.Nil(t, r.servers, "SHOW SERVERS is sent only when there is a leak to attribute")
}

func TestPgBouncerRound_QueryInFlightIsNotALeakEvenInSessionModeLeaks(t *testing.T) {
	// The sleeper (session pool, pg_sleep running: wait 3 s) is linked and
	// old, but has a query in flight.
	res, _ := fixtureRound(config.Target{LeakThreshold: 2 * time.Second, SessionModeLeaks: true}, "1.18.0", own118,
		fixtureConsole(t, "pgbouncer-1.18", nil, nil))
	assert.Zero(t, poolByName(t, res, "sess/app").Leaked)
	assert.Equal(t, 3.0, poolByName(t, res, "app/app").Leaked)
}

const sessionIdleClients = `type | user | database | state | addr | port | connect_time | request_time | wait | wait_us | ptr | link | application_name
C | app | sess | active | 10.0.0.7 | 40000 | 2026-11-26 05:00:00 UTC | 2026-11-26 05:01:00 UTC | 0 | 0 | 0xa1 | 0xb1 | worker
C | admin | pgbouncer | active | 127.0.0.1 | 52992 | 2026-11-26 05:00:00 UTC | 2026-11-26 05:06:04 UTC | 0 | 0 | 0xa2 |  | poolwatch`

func TestPgBouncerRound_SessionPoolHolderCountsOnlyWithSessionModeLeaks(t *testing.T) {
	base := fixtureConsole(t, "pgbouncer-1.18", nil, nil)
	cons := overrideConsole(base, map[string]string{"show_clients": sessionIdleClients})

	res, _ := fixtureRound(config.Target{LeakThreshold: time.Minute}, "1.18.0", own118, cons)
	assert.Zero(t, poolByName(t, res, "sess/app").Leaked)
	assert.Empty(t, res.Leaks)

	res, _ = fixtureRound(config.Target{LeakThreshold: time.Minute, SessionModeLeaks: true}, "1.18.0", own118, cons)
	p := poolByName(t, res, "sess/app")
	assert.Equal(t, 1.0, p.Leaked)
	assert.Equal(t, 304.0, p.OldestLeakSeconds)
	require.Len(t, res.Leaks, 1)
	assert.Equal(t, Leak{
		ID: "0xa1@2026-11-26 05:00:00 UTC@2026-11-26 05:01:00 UTC", Pool: "sess/app",
		ApplicationName: "worker", User: "app", Database: "sess", ClientAddr: "10.0.0.7:40000",
		PID: 0, Age: 304 * time.Second,
	}, res.Leaks[0])
	// SHOW SERVERS has no row for link 0xb1: the client's pool is used.
}

func TestScanClients_UsesLatestRequestTimeWhenOwnRowIsHidden(t *testing.T) {
	modes := newModeResolver(nil, nil, map[string]string{"pool_mode": "transaction"}, false)
	withOwn, err := scanClients(readFixture(t, "pgbouncer-1.18", "show_clients"), own118, modes)
	require.NoError(t, err)
	assert.True(t, withOwn.ownFound)

	// Behind NAT the agent's port is not the one PgBouncer sees.
	natted, err := scanClients(readFixture(t, "pgbouncer-1.18", "show_clients"), ownClient{addr: "10.1.1.1", port: 61000}, modes)
	require.NoError(t, err)
	assert.False(t, natted.ownFound)
	assert.True(t, natted.nowOK)
	assert.Equal(t, withOwn.now, natted.now)
	assert.Equal(t, 7, natted.rows)
	assert.Len(t, natted.candidates, 3)
}

func TestScanClients_OwnRowWinsOverLaterRows(t *testing.T) {
	// A row later than the agent's own (impossible live, possible in a
	// doctored fixture) does not move PgBouncer's now.
	text := `database | user | state | addr | port | request_time | wait | wait_us | ptr | link
pgbouncer | admin | active | 127.0.0.1 | 5000 | 2026-11-26 05:00:10 UTC | 0 | 0 | 0x1 |
app | app | active | 127.0.0.1 | 5001 | 2026-11-26 05:00:00 UTC | 0 | 0 | 0x2 | 0x3
app | app | active | 127.0.0.1 | 5002 | 2026-11-26 05:00:30 UTC | 1 | 0 | 0x4 | 0x5`
	modes := newModeResolver(nil, nil, map[string]string{"pool_mode": "transaction"}, false)
	scan, err := scanClients(parseTable(text), ownClient{addr: "127.0.0.1", port: 5000}, modes)
	require.NoError(t, err)
	require.True(t, scan.ownFound)
	leaks := leaksOf(scan, 5*time.Second)
	require.Len(t, leaks, 1)
	assert.Equal(t, 10.0, leaks[0].age)
}

func TestPgBouncerRound_SkipsShowClientsWhenNoServerIsLinked(t *testing.T) {
	pools := `database | user | cl_active | cl_waiting | sv_active | sv_idle | maxwait | maxwait_us | pool_mode
app | app | 4000 | 0 | 0 | 3 | 0 | 0 | transaction
sess | app | 1000 | 0 | 5 | 0 | 0 | 0 | session
pgbouncer | pgbouncer | 1 | 0 | 0 | 0 | 0 | 0 | statement`
	var sent []string
	cons := overrideConsole(fixtureConsole(t, "pgbouncer-1.18", nil, &sent), map[string]string{"show_pools": pools})
	res, r := fixtureRound(config.Target{LeakThreshold: time.Second}, "1.18.0", own118, cons)
	assert.False(t, r.clientsRan, "the session pool's active servers cannot leak without session_mode_leaks")
	assert.NotContains(t, sent, "show_clients")
	assert.True(t, res.Up())
	assert.Equal(t, 3.0, poolByName(t, res, "app/app").Open)

	_, r = fixtureRound(config.Target{LeakThreshold: time.Second, SessionModeLeaks: true}, "1.18.0", own118, cons)
	assert.True(t, r.clientsRan)
}

func TestPgBouncerRound_FailedQueriesLeaveTheRestAndAreRecorded(t *testing.T) {
	fail := map[string]bool{"show_databases": true, "show_lists": true, "show_servers": true}
	res, _ := fixtureRound(config.Target{LeakThreshold: 2 * time.Second}, "1.18.0", own118,
		fixtureConsole(t, "pgbouncer-1.18", fail, nil))
	require.False(t, res.Up())
	var names []string
	for _, e := range res.Errors {
		names = append(names, e.Query)
		assert.True(t, errors.Is(e, errInjected))
	}
	assert.Equal(t, []string{"show_databases", "show_lists", "show_servers"}, names)

	// No SHOW DATABASES: sizes are absent, not guessed from the defaults;
	// no db/* pool and no database states.
	app := poolByName(t, res, "app/app")
	assert.False(t, app.Max.Valid)
	assert.False(t, app.Min.Valid)
	assert.False(t, app.Reserve.Valid)
	assert.Equal(t, 3.0, app.InUse)
	assert.Equal(t, Some(2), app.Waiting)
	assert.Empty(t, res.Databases)
	assert.Equal(t, []string{"app/app", "clients", "sess/app"}, poolNames(res))
	// No SHOW LISTS: the clients pool counts cl_* over every pool, the
	// admin console's included.
	assert.Equal(t, Pool{Name: "clients", Max: Some(50), Open: 7, InUse: 7}, poolByName(t, res, "clients"))
	// No SHOW SERVERS: leaks still counted, in the client's pool, pid unknown.
	assert.Equal(t, 3.0, app.Leaked)
	require.Len(t, res.Leaks, 3)
	assert.Zero(t, res.Leaks[0].PID)
	assert.Len(t, res.Stats, 2)
}

func TestPgBouncerRound_FailedShowPoolsStillSendsShowClients(t *testing.T) {
	var sent []string
	res, r := fixtureRound(config.Target{LeakThreshold: 2 * time.Second}, "1.18.0", own118,
		fixtureConsole(t, "pgbouncer-1.18", map[string]bool{"show_pools": true}, &sent))
	assert.True(t, r.clientsRan)
	// No pool rows, but the clients pool (SHOW LISTS) and db/* remain.
	assert.Equal(t, []string{"big/*", "clients"}, poolNames(res))
	// Leaks are still found (modes from SHOW CONFIG: transaction) and logged.
	assert.Len(t, res.Leaks, 3)
}

func TestMapPools_MissingColumnsAreAbsentNotZero(t *testing.T) {
	// An old or future PgBouncer without cl_waiting, maxwait_us and some
	// sv_* states.
	text := `database | user | sv_active | sv_idle | maxwait | pool_mode | brand_new_column
app | app | 2 | 1 | 7 | transaction | whatever`
	pools, err := mapPools(parseTable(text))
	require.NoError(t, err)
	require.Len(t, pools, 1)
	p := pools[0]
	assert.Equal(t, 3.0, p.open)
	assert.Equal(t, 2.0, p.inUse)
	assert.False(t, p.waiting.Valid)
	assert.Equal(t, Some(7), p.maxWait, "maxwait alone, in whole seconds")
	assert.False(t, p.clients.Valid)

	_, err = mapPools(parseTable("user | sv_active\napp | 1"))
	require.ErrorIs(t, err, errMissingColumn)
	assert.Contains(t, err.Error(), `"database"`)
}

func TestMapPools_GarbageAndNullValuesAreAbsent(t *testing.T) {
	text := `database | user | cl_waiting | sv_active | sv_idle | maxwait | maxwait_us
app | app | lots | 2 | NaN | \N | 5
app2 | app | -3 | Inf | 1e2 | 1 | x
\N | app | 1 | 1 | 1 | 1 | 1`
	pools, err := mapPools(parseTable(text))
	require.NoError(t, err)
	require.Len(t, pools, 2, "a row without its database is skipped")
	assert.False(t, pools[0].waiting.Valid)
	assert.Equal(t, 2.0, pools[0].open)
	assert.False(t, pools[0].maxWait.Valid, "maxwait NULL: absent even with maxwait_us")
	assert.False(t, pools[1].waiting.Valid, "a negative count is absent")
	assert.Equal(t, 100.0, pools[1].open)
	assert.Zero(t, pools[1].inUse)
	assert.Equal(t, Some(1), pools[1].maxWait)
}

func TestMapDatabases_ReadsReservePoolUnderBothNames(t *testing.T) {
	old := "name | pool_size | reserve_pool\na | 5 | 2"
	dbs, err := mapDatabases(parseTable(old))
	require.NoError(t, err)
	assert.Equal(t, Some(2), dbs[0].reserve)
	newer := "name | pool_size | reserve_pool_size\na | 5 | 3"
	dbs, err = mapDatabases(parseTable(newer))
	require.NoError(t, err)
	assert.Equal(t, Some(3), dbs[0].reserve)
	neither := "name | pool_size\na | 5"
	dbs, err = mapDatabases(parseTable(neither))
	require.NoError(t, err)
	assert.False(t, dbs[0].reserve.Valid)
	assert.False(t, dbs[0].paused)
}

func TestMapUsers_ReadsPaddedOverridesAndIgnoresEmptyOnes(t *testing.T) {
	// Built by hand: parseTable would trim the padding PgBouncer prints.
	tbl := &table{
		cols: []string{"name", "pool_size", "reserve_pool_size", "pool_mode"},
		rows: [][][]byte{
			{[]byte("app"), []byte("        4"), []byte(""), nil},
			{[]byte("other"), []byte(""), []byte(""), nil},
			{[]byte("neg"), []byte("-1"), nil, nil},
		},
	}
	users, err := mapUsers(tbl)
	require.NoError(t, err)
	assert.Equal(t, map[string]userRow{"app": {poolSize: Some(4)}}, users)
}

func TestMapStats_LeavesOutRowsWithAMissingCounter(t *testing.T) {
	text := `database | total_xact_count | total_query_count | total_wait_time
a | 1 | 2 | 3000000
b | 1 | x | 0
pgbouncer | 9 | 9 | 9
c | 12345678901234567890 | 2.5 | 1`
	stats, err := mapStats(parseTable(text))
	require.NoError(t, err)
	assert.Equal(t, []DatabaseStats{
		{Database: "a", Transactions: 1, Queries: 2, ClientWaitSeconds: 3},
		{Database: "c", Transactions: 12345678901234567890, Queries: 2.5, ClientWaitSeconds: 1e-6},
	}, stats)
}

// TestMapStats_NewerCountersAreAbsentWhereTheVersionLacksThem: 1.18 has
// neither the prepared-statement counters (1.21) nor
// total_server_assignment_count (1.23). Tested on recorded and documented
// rows only: Debian ships 1.18.
func TestMapStats_NewerCountersAreAbsentWhereTheVersionLacksThem(t *testing.T) {
	for name, tc := range map[string]struct {
		text                string
		parses, assignments bool
	}{
		"1.18": {text: "database|total_xact_count|total_query_count|total_received|total_sent|total_xact_time|total_query_time|total_wait_time\na|2|3|10|20|1500000|250000|0"},
		"1.21": {text: "database|total_xact_count|total_query_count|total_received|total_sent|total_xact_time|total_query_time|total_wait_time|total_client_parse_count|total_server_parse_count|total_bind_count\na|2|3|10|20|1500000|250000|0|5|6|7", parses: true},
		"1.23": {text: "database|total_server_assignment_count|total_xact_count|total_query_count|total_received|total_sent|total_xact_time|total_query_time|total_wait_time|total_client_parse_count|total_server_parse_count|total_bind_count\na|9|2|3|10|20|1500000|250000|0|5|6|7", parses: true, assignments: true},
	} {
		t.Run(name, func(t *testing.T) {
			stats, err := mapStats(parseTable(tc.text))
			require.NoError(t, err)
			require.Len(t, stats, 1)
			want := DatabaseStats{Database: "a", Transactions: 2, Queries: 3, TransactionSeconds: Some(1.5), QuerySeconds: Some(0.25), ReceivedBytes: Some(10), SentBytes: Some(20)}
			if tc.parses {
				want.ClientParses, want.ServerParses, want.Binds = Some(5), Some(6), Some(7)
			}
			if tc.assignments {
				want.ServerAssignments = Some(9)
			}
			assert.Equal(t, want, stats[0])
		})
	}
}

func TestMapPools_StatesAreTheClAndSvColumnsThisVersionHas(t *testing.T) {
	pools, err := mapPools(parseTable("database|user|cl_active|cl_waiting|cl_idle|sv_active|sv_idle|sv_login|maxwait\nd|u|1|x|4|2|\\N|0|0"))
	require.NoError(t, err)
	require.Len(t, pools, 1)
	assert.Equal(t, []StateCount{
		{SideClient, "active", 1}, {SideClient, "idle", 4},
		{SideServer, "active", 2}, {SideServer, "login", 0},
	}, pools[0].states, "garbage and NULL are absent; an unknown state (cl_idle) is taken as it is")
}

func TestMapMem_ReadsEveryCache(t *testing.T) {
	mem, err := mapMem(readFixture(t, "pgbouncer-1.18", "show_mem"))
	require.NoError(t, err)
	assert.Equal(t, recordedMem(), mem)
	mem, err = mapMem(parseTable("name|size|memtotal\nc|x|10"))
	require.NoError(t, err)
	assert.Equal(t, []MemoryCache{{Name: "c", TotalBytes: Some(10)}}, mem)
	_, err = mapMem(parseTable("size\n1"))
	require.ErrorIs(t, err, errMissingColumn)
}

func TestPgBouncerRound_DBPoolOnlyWhereMaxDBConnectionsIsSet(t *testing.T) {
	dbs := `name | pool_size | max_connections | current_connections | pool_mode
a | 5 | 0 | 3 | \N
b | 5 | 7 | 2 | session
c | 5 | 7 | \N | \N
pgbouncer | 2 | 7 | 0 | statement`
	cons := overrideConsole(fixtureConsole(t, "pgbouncer-1.18", nil, nil), map[string]string{"show_databases": dbs})
	res, _ := fixtureRound(config.Target{LeakThreshold: time.Hour}, "1.18.0", own118, cons)
	assert.Equal(t, Pool{Name: "b/*", Database: "b", Mode: "session", Max: Some(7), Open: 2, InUse: 2}, poolByName(t, res, "b/*"))
	for _, p := range res.Pools {
		assert.NotEqual(t, "a/*", p.Name)
		assert.NotEqual(t, "c/*", p.Name, "current_connections unknown")
		assert.False(t, strings.HasPrefix(p.Name, "pgbouncer"), "the admin console is not a pool")
	}
	assert.Equal(t, []DatabaseState{{Name: "a"}, {Name: "b"}, {Name: "c"}}, res.Databases)
}

func TestPgBouncerRound_CapsPoolsAndKeepsClients(t *testing.T) {
	res, _ := fixtureRound(config.Target{LeakThreshold: 2 * time.Second, MaxPools: 2}, "1.18.0", own118,
		fixtureConsole(t, "pgbouncer-1.18", nil, nil))
	assert.Equal(t, []string{"app/app", "clients"}, poolNames(res))
	assert.Equal(t, 2, res.PoolsDropped)
	assert.Len(t, res.Leaks, 3, "leaks of kept and dropped pools are still reported")
}

func TestCapPools_DefaultAndOrder(t *testing.T) {
	var pools []Pool
	for _, n := range []string{"c", "a", "server", "b"} {
		pools = append(pools, Pool{Name: n})
	}
	kept, dropped := capPools(append([]Pool(nil), pools...), &config.Target{}, "server")
	assert.Zero(t, dropped)
	assert.Equal(t, []string{"a", "b", "c", "server"}, names(kept))
	kept, dropped = capPools(append([]Pool(nil), pools...), &config.Target{MaxPools: 1}, "server")
	assert.Equal(t, 3, dropped)
	assert.Equal(t, []string{"server"}, names(kept))
	kept, dropped = capPools(append([]Pool(nil), pools...), &config.Target{MaxPools: 3}, "missing")
	assert.Equal(t, 1, dropped)
	assert.Equal(t, []string{"a", "b", "c"}, names(kept))
}

func names(pools []Pool) []string {
	var out []string
	for _, p := range pools {
		out = append(out, p.Name)
	}
	return out
}

func TestModeResolver_ReplicationClientsPoolBySession(t *testing.T) {
	m := newModeResolver([]poolRow{{database: "app", user: "app", mode: "transaction"}}, nil, nil, false)
	assert.True(t, m.counts([]byte("app"), []byte("app"), []byte("none")))
	assert.False(t, m.counts([]byte("app"), []byte("app"), []byte("logical")))
	assert.False(t, m.counts([]byte("unknown"), []byte("app"), nil), "an unknown mode counts as session")
	assert.True(t, m.counts([]byte("app"), []byte("forced"), nil), "another user's pool of the database tells its mode")
}

func TestParseClock(t *testing.T) {
	a, ok := parseClock([]byte("2026-11-26 05:06:04 UTC"))
	require.True(t, ok)
	b, ok := parseClock([]byte("2026-11-26 05:06:01 CET"))
	require.True(t, ok)
	assert.Equal(t, 3.0, a-b)
	c, ok := parseClock([]byte("2026-12-01 00:00:00.25"))
	require.True(t, ok)
	assert.Equal(t, 4*86400+18*3600+53*60+56.25, c-a)
	wantEpoch := float64(time.Date(2026, 11, 26, 5, 6, 4, 0, time.UTC).Unix())
	assert.Equal(t, wantEpoch, a)
	for _, bad := range []string{"", "2026-11-26", "2026-13-01 00:00:00", "2026-11-26T05:06:0x", "yesterday at noon!!"} {
		_, ok := parseClock([]byte(bad))
		assert.False(t, ok, bad)
	}
}

func TestNum_ParsesIntNumericAndPaddedText(t *testing.T) {
	for in, want := range map[string]Optional{
		"3": Some(3), " 5 ": Some(5), "-1": Some(-1), "1.5": Some(1.5), "123456789012345678": Some(123456789012345678),
		"": {}, "NaN": {}, "+Inf": {}, "abc": {}, "1e400": {},
	} {
		assert.Equal(t, want, num([][]byte{[]byte(in)}, 0), "%q", in)
	}
	assert.Equal(t, Optional{}, num([][]byte{nil}, 0))
	assert.Equal(t, Optional{}, num(nil, 3))
	assert.Equal(t, Optional{}, count([][]byte{[]byte("-1")}, 0))
}

func TestVersions(t *testing.T) {
	assert.Equal(t, "1.18.0", parseBouncerVersion("1.18.0/bouncer"))
	assert.Equal(t, "1.18.0", parseBouncerVersion("PgBouncer 1.18.0"))
	assert.Equal(t, "1.25.1", parseBouncerVersion("PgBouncer 1.25.1 "))
	assert.Equal(t, "", parseBouncerVersion(""))
	assert.False(t, versionAtLeast("1.18.0", 1, 23))
	assert.True(t, versionAtLeast("1.23.0", 1, 23))
	assert.True(t, versionAtLeast("2.0", 1, 23))
	assert.True(t, versionAtLeast("", 1, 23), "unknown: try the command")
	assert.True(t, versionAtLeast("1.x", 1, 23))
	assert.Equal(t, "15.10", postgresVersion("15.10 (Debian 15.10-0+deb12u1)"))
	assert.Equal(t, "", postgresVersion(""))
}

func TestVersionCache_IsBounded(t *testing.T) {
	c := newVersionCache(2)
	conns := []*pgconn.PgConn{{}, {}, {}}
	c.put(conns[0], "1.0")
	c.put(conns[1], "1.1")
	v, ok := c.get(conns[1])
	assert.True(t, ok)
	assert.Equal(t, "1.1", v)
	c.put(conns[2], "1.2")
	assert.LessOrEqual(t, len(c.m), 2)
	v, ok = c.get(conns[2])
	assert.True(t, ok)
	assert.Equal(t, "1.2", v)
}

func TestPgBouncerRound_MapsTestenvRecording118(t *testing.T) {
	// Recorded by internal/testenv: pool of 3, 5 clients in BEGIN; the
	// console user's own row (port 47556) is one second after the holders'
	// requests.
	const pool = "appdb_147609099/app_147602700"
	res, r := fixtureRound(config.Target{LeakThreshold: 0}, "1.18.0", ownClient{addr: "127.0.0.1", port: 47556},
		fixtureConsole(t, "pgbouncer-1.18-testenv", nil, nil))
	require.True(t, r.ownFound)
	leak := func(ptr, port string, pid int) Leak {
		return Leak{
			ID: ptr + "@2026-11-26 05:11:40 UTC@2026-11-26 05:11:40 UTC", Pool: pool,
			ApplicationName: "holder", User: "app_147602700", Database: "appdb_147609099",
			ClientAddr: "127.0.0.1:" + port, PID: pid, Age: time.Second,
		}
	}
	assertResult(t, &Result{
		Kind: config.KindPgBouncer, Version: "1.18.0",
		Pools: []Pool{
			{
				Name: pool, Database: "appdb_147609099", User: "app_147602700", Mode: "transaction",
				Min: Some(0), Max: Some(3), Reserve: Some(0), Open: 3, InUse: 3,
				Waiting: Some(2), MaxWaitSeconds: Some(1.157154), Leaked: 3, OldestLeakSeconds: 1,
				States: bouncerStates([4]float64{3, 2, 0, 0}, [7]float64{3, 0, 0, 0, 0, 0, 0}),
			},
			{Name: "clients", Max: Some(100), Open: 6, InUse: 6},
		},
		Databases: []DatabaseState{{Name: "appdb_147609099"}},
		Stats: []DatabaseStats{{
			Database: "appdb_147609099", Transactions: 10, Queries: 10, ClientWaitSeconds: 0.048958,
			TransactionSeconds: Some(0.000883), QuerySeconds: Some(0.045502), ReceivedBytes: Some(178), SentBytes: Some(717),
		}},
		Leaks: []Leak{
			leak("0x559e16203a40", "47098", 23775),
			leak("0x559e16203ca0", "47080", 23776),
			leak("0x559e16203f00", "47108", 23773),
		},
	}, res)

	// With a 1 s threshold the same clients are not leaks yet: the age has
	// 1 s resolution and must be strictly above.
	res, _ = fixtureRound(config.Target{LeakThreshold: time.Second}, "1.18.0", ownClient{addr: "127.0.0.1", port: 47556},
		fixtureConsole(t, "pgbouncer-1.18-testenv", nil, nil))
	assert.Empty(t, res.Leaks)
}

func TestParseTable_ReadsBothFixtureFormats(t *testing.T) {
	tab := parseTable("# c\na\tb\tc\n x \t\\N\n")
	assert.Equal(t, []string{"a", "b", "c"}, tab.cols)
	assert.Equal(t, [][][]byte{{[]byte(" x "), nil, nil}}, tab.rows)
	bar := parseTable("a | b\n x | \\N | extra\n")
	assert.Equal(t, []string{"a", "b"}, bar.cols)
	assert.Equal(t, [][][]byte{{[]byte("x"), nil}}, bar.rows)
}

func TestPgBouncerVersion_FallsBackToShowVersionOncePerConnection(t *testing.T) {
	s := newPgBouncer(config.Target{})
	var sent []string
	cons := fixtureConsole(t, "pgbouncer-1.18-testenv", nil, &sent)
	r := &bouncerRound{}
	assert.Equal(t, "1.18.0", s.version(context.Background(), "1.18.0/bouncer", nil, cons, r))
	assert.Empty(t, sent, "the login's server_version costs no query")

	pc := &pgconn.PgConn{}
	assert.Equal(t, "1.18.0", s.version(context.Background(), "", pc, cons, r))
	assert.Equal(t, "1.18.0", s.version(context.Background(), "", pc, cons, r))
	assert.Equal(t, []string{"show_version"}, sent, "SHOW VERSION once per connection")
	assert.Empty(t, r.errors)

	failing := fixtureConsole(t, "pgbouncer-1.18-testenv", map[string]bool{"show_version": true}, nil)
	assert.Equal(t, "", s.version(context.Background(), "", &pgconn.PgConn{}, failing, r))
	require.Len(t, r.errors, 1)
	assert.Equal(t, QueryShowVersion, r.errors[0].Query)
}
