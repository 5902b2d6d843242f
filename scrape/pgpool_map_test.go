package scrape

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
)

// recordedActivity is what pg_stat_activity would say about the leaky
// client's backend (pid 6153 in testdata/pgpool-4.3).
func recordedActivity(_ context.Context, pids []int32) (map[int]backendActivity, error) {
	out := map[int]backendActivity{}
	for _, p := range pids {
		if p == 6153 {
			out[6153] = backendActivity{idleSeconds: 3.5, xactSeconds: 4, xactStart: "2026-12-03 08:14:35.070205+00",
				app: "leaky", user: "app", database: "appdb", query: "SELECT 1"}
		}
	}
	return out, nil
}

// pgpoolFixtureRound runs a whole pgpool round against recorded output.
func pgpoolFixtureRound(s *pgpool, pc *pgconn.PgConn, cons console, act activityFn) *Result {
	r := &pgpoolRound{cfg: s.cfg}
	s.collect(context.Background(), cons, pc, act, r)
	return r.result()
}

func expectedPgpool43() *Result {
	return &Result{
		Kind: config.KindPgpool, Version: "4.3.5",
		Pools: []Pool{
			{
				Name: "children", Max: Some(4), Open: 3, InUse: 3, Leaked: 1, OldestLeakSeconds: 3.5,
				States: []StateCount{
					{SideClient, "execute_command", 2}, {SideClient, "idle_in_transaction", 1}, {SideClient, "wait_for_connection", 1},
				},
			},
			{Name: "node0", Max: Some(8), Open: 3, InUse: 3},
			{Name: "node1", Max: Some(8), Open: 3, InUse: 3},
		},
		Nodes: []BackendNode{
			{Name: "node0", Address: "127.0.0.1:37707", Status: "up", Role: "primary", Up: true},
			{Name: "node1", Address: "127.0.0.1:45467", Status: "up", Role: "standby", Up: true},
		},
		Leaks: []Leak{{
			ID: "pgpool:6132@6153@2026-12-03 08:14:35.070205+00", Pool: "children", ApplicationName: "leaky", User: "app", Database: "appdb",
			PID: 6153, Age: 3500 * time.Millisecond, TransactionAge: 4 * time.Second, Query: "SELECT 1",
		}},
	}
}

func TestPgpoolRound_MapsRecorded43(t *testing.T) {
	var sent []string
	s := newPgpool(config.Target{LeakThreshold: 2 * time.Second})
	res := pgpoolFixtureRound(s, nil, fixtureConsole(t, "pgpool-4.3", nil, &sent), recordedActivity)
	assert.Equal(t, expectedPgpool43(), res)
	assert.True(t, res.Up())
	assert.Equal(t, []string{"show_pool_version", "pgpool_show_num_init_children", "pgpool_show_max_pool",
		"show_pool_processes", "show_pool_pools", "show_pool_backend_stats"}, sent)
}

func TestPgpoolRound_ReadsVersionAndSettingsOncePerConnection(t *testing.T) {
	s := newPgpool(config.Target{LeakThreshold: time.Hour})
	pc := &pgconn.PgConn{}
	var sent []string
	cons := fixtureConsole(t, "pgpool-4.3", nil, &sent)
	pgpoolFixtureRound(s, pc, cons, recordedActivity)
	sent = nil
	res := pgpoolFixtureRound(s, pc, cons, recordedActivity)
	assert.Equal(t, []string{"show_pool_processes", "show_pool_pools", "show_pool_backend_stats"}, sent)
	assert.Equal(t, "4.3.5", res.Version)
	assert.Equal(t, Some(4), poolByName(t, res, "children").Max)

	// A failed setting is asked again on the next round.
	s = newPgpool(config.Target{LeakThreshold: time.Hour})
	res = pgpoolFixtureRound(s, pc, fixtureConsole(t, "pgpool-4.3", map[string]bool{"pgpool_show_max_pool": true}, nil), recordedActivity)
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryPgpoolShow, res.Errors[0].Query)
	assert.False(t, poolByName(t, res, "node0").Max.Valid, "max_pool unknown: no ceiling, not 0")
	sent = nil
	pgpoolFixtureRound(s, pc, cons, recordedActivity)
	assert.Contains(t, sent, "pgpool_show_max_pool")
}

func TestPgpoolRound_AgeFallsBackToFirstSeenWhenActivityFails(t *testing.T) {
	s := newPgpool(config.Target{LeakThreshold: 2 * time.Second})
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	now := t0
	s.now = func() time.Time { return now }
	failing := func(context.Context, []int32) (map[int]backendActivity, error) { return nil, errors.New("no primary") }
	cons := fixtureConsole(t, "pgpool-4.3", nil, nil)

	res := pgpoolFixtureRound(s, nil, cons, failing)
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryActivity, res.Errors[0].Query)
	assert.Empty(t, res.Leaks, "first seen now: age 0")

	now = t0.Add(2 * time.Second)
	assert.Empty(t, pgpoolFixtureRound(s, nil, cons, failing).Leaks, "not strictly past the threshold")
	now = t0.Add(3 * time.Second)
	res = pgpoolFixtureRound(s, nil, cons, failing)
	require.Len(t, res.Leaks, 1)
	assert.Equal(t, Leak{ID: "pgpool:6132@2026-12-03 08:14:35@2026-12-03T08:00:00Z", Pool: "children", User: "app", Database: "appdb",
		PID: 6153, Age: 3 * time.Second}, res.Leaks[0])
	assert.Equal(t, 1.0, poolByName(t, res, "children").Leaked)

	// The child leaves the transaction: forgotten, and a new one starts
	// from zero.
	idle := overrideConsole(cons, map[string]string{"show_pool_processes": "pool_pid|database|username|status\n6132|appdb|app|Idle"})
	assert.Empty(t, pgpoolFixtureRound(s, nil, idle, failing).Leaks)
	now = t0.Add(10 * time.Second)
	assert.Empty(t, pgpoolFixtureRound(s, nil, cons, failing).Leaks, "seen again: age 0 again")
}

func TestPgpoolRound_NodeDownStaysAPoolAndIsNotUp(t *testing.T) {
	nodes := "node_id|hostname|port|status|role\n0|db0|5432|up|primary\n1|db1|5432|down|standby\n2|db2|5432|waiting|standby"
	cons := overrideConsole(fixtureConsole(t, "pgpool-4.3", nil, nil), map[string]string{"show_pool_backend_stats": nodes})
	res := pgpoolFixtureRound(newPgpool(config.Target{LeakThreshold: time.Hour}), nil, cons, recordedActivity)
	assert.Equal(t, []BackendNode{
		{Name: "node0", Address: "db0:5432", Status: "up", Role: "primary", Up: true},
		{Name: "node1", Address: "db1:5432", Status: "down", Role: "standby"},
		{Name: "node2", Address: "db2:5432", Status: "waiting", Role: "standby", Up: true},
	}, res.Nodes)
	assert.Equal(t, []string{"children", "node0", "node1", "node2"}, poolNames(res))
	assert.Equal(t, Pool{Name: "node2", Max: Some(8)}, poolByName(t, res, "node2"), "a node with no cached connection")
}

func TestPgpoolRound_FailedCommandsLeaveTheRest(t *testing.T) {
	res := pgpoolFixtureRound(newPgpool(config.Target{LeakThreshold: time.Hour}), nil,
		fixtureConsole(t, "pgpool-4.3", map[string]bool{"show_pool_processes": true, "show_pool_backend_stats": true, "show_pool_nodes": true}, nil), recordedActivity)
	assert.False(t, res.Up())
	var failed []string
	for _, e := range res.Errors {
		failed = append(failed, e.Query)
	}
	assert.Equal(t, []string{QueryShowPoolProcesses, QueryShowPoolNodes}, failed)
	assert.Equal(t, []string{"node0", "node1"}, poolNames(res), "no children pool without SHOW POOL_PROCESSES")
	assert.Equal(t, 0.0, poolByName(t, res, "node0").InUse, "no child known to serve a client")
	assert.Equal(t, 3.0, poolByName(t, res, "node0").Open)
	assert.Nil(t, res.Nodes)
}

func TestPgpoolRound_FallsBackToShowPoolNodesOncePerConnection(t *testing.T) {
	s := newPgpool(config.Target{LeakThreshold: time.Hour})
	pc := &pgconn.PgConn{}
	var sent []string
	old := fixtureConsole(t, "pgpool-4.3", map[string]bool{"show_pool_backend_stats": true}, &sent) // before 4.2
	res := pgpoolFixtureRound(s, pc, old, recordedActivity)
	assert.True(t, res.Up(), "an unknown SHOW POOL_BACKEND_STATS is no error: %v", res.Errors)
	assert.Equal(t, expectedPgpool43().Nodes, res.Nodes, "the same states from SHOW POOL_NODES")
	sent = nil
	pgpoolFixtureRound(s, pc, old, recordedActivity)
	assert.Equal(t, []string{"show_pool_processes", "show_pool_pools", "show_pool_nodes"}, sent)
}

func TestMapPoolPools_ConnectedFromTheBackendPidWhenTheColumnIsMissing(t *testing.T) {
	scan, err := mapPoolPools(parseTable("pool_pid|pool_id|backend_id|database|username|pool_backendpid\n1|0|0|d|u|77\n1|1|0|||0\n2|0|0|d|u|x"))
	require.NoError(t, err)
	assert.Equal(t, 2, scan.maxPool)
	assert.Equal(t, []slotRow{{pid: "1", node: "0", database: "d", user: "u", backendPID: 77}}, scan.slots)
	_, err = mapPoolPools(parseTable("pool_pid|pool_id\n1|0"))
	require.ErrorIs(t, err, errMissingColumn)
	_, err = mapProcesses(parseTable("pool_pid|database\n1|d"))
	require.ErrorIs(t, err, errMissingColumn)
	_, err = mapNodes(parseTable("hostname\nh"))
	require.ErrorIs(t, err, errMissingColumn)
}

func TestChildState_IsTheStatusAsALabel(t *testing.T) {
	for in, want := range map[string]string{
		"Wait for connection": "wait_for_connection", "Idle in transaction": "idle_in_transaction",
		"Execute command": "execute_command", "Idle": "idle", " Connecting ": "connecting", "": "",
	} {
		assert.Equal(t, want, childState(in))
	}
	assert.Equal(t, childStateWaitConn, childState(childWaiting))
}
