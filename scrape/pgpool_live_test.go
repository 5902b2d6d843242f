package scrape

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/pool"
)

// These tests run the pgpool scraper with the real probe pool against a
// real Pgpool-II 4.3 in front of two PostgreSQL 15 clusters (node 0 the
// primary, node 1 shown as a standby).

const monitorPassword = "monitor-secret"

// livePgpool starts two clusters with roles app and monitor (pg_monitor)
// and database appdb, and Pgpool-II with children child processes in front.
func livePgpool(t *testing.T, children int) (pg0, pg1 *testenv.Postgres, pp *testenv.Pgpool) {
	t.Helper()
	pg0 = testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg1 = testenv.StartPostgres(t, testenv.PostgresOptions{})
	for _, pg := range []*testenv.Postgres{pg0, pg1} {
		pg.CreateRole(t, "app", appPassword, "LOGIN")
		pg.CreateRole(t, "monitor", monitorPassword, "LOGIN", "IN ROLE pg_monitor")
		pg.CreateDatabase(t, "appdb")
	}
	pp = testenv.StartPgpool(t, []*testenv.Postgres{pg0, pg1}, testenv.PgpoolOptions{
		NumInitChildren: children, MaxPool: 2,
		Users: map[string]string{"app": appPassword, "monitor": monitorPassword},
	})
	return pg0, pg1, pp
}

// agentTarget is the pgpool target of the tests, as config resolves it.
func agentTarget(dsn string, leakThreshold time.Duration) config.Target {
	return config.Target{
		Name: "pgpool", Kind: config.KindPgpool, DSN: dsn, LeakThreshold: leakThreshold, MaxPools: 100,
		ProbePool: config.ProbePool{
			MinConnections: 1, MaxConnections: config.PgpoolMaxProbeConnections,
			ConnectTimeout: 2 * time.Second, HealthCheckTimeout: time.Second,
			AcquireRetries: 1, RetryBackoff: 10 * time.Millisecond, LeakThreshold: 30 * time.Second,
		},
	}
}

// agentPool is the probe pool of target t, closed at the end of the test.
func agentPool(t *testing.T, tg config.Target) *pool.Pool {
	t.Helper()
	p, err := pool.New(pool.Options{Target: tg.Name, Kind: tg.Kind, DSN: tg.DSN, Password: tg.Password, ProbePool: tg.ProbePool, Logger: log.NewNopLogger()})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

func monitorDSN(pp *testenv.Pgpool, addr string) string {
	dsn := pp.DSN("monitor", monitorPassword, "appdb") + "&application_name=" + agentAppName
	if addr != "" {
		dsn = strings.Replace(dsn, pp.Addr(), addr, 1)
	}
	return dsn
}

// scrapeOnce runs one round with a 5 s budget.
func scrapeOnce(s Scraper, q Querier) *Result {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Scrape(ctx, q)
}

// requireOneAgentChild checks that the agent holds exactly one child: one
// connection in its probe pool, one backend of its own on the primary, and
// one child in use when nobody else is connected.
func requireOneAgentChild(t *testing.T, p *pool.Pool, pg0 *testenv.Postgres, s Scraper) {
	t.Helper()
	require.Equal(t, 1, p.Stats().Open, "the probe pool holds one connection")
	pg0.WaitBackends(t, agentAppName, func(n int) bool { return n == 1 }, 10*time.Second)
	res := pollScrape(t, s, p, "only the agent's child in use", func(r *Result) bool {
		c, ok := findPool(r, PoolChildren)
		return r.Up() && ok && c.InUse == 1
	})
	require.Equal(t, 1, p.Stats().Open, "and still one after the rounds: %s", dump(res))
}

func TestPgpool_Live_EveryChildBusyIsExhaustionWhileTheTargetStaysUp(t *testing.T) {
	const children = 4
	pg0, _, pp := livePgpool(t, children)
	tg := agentTarget(monitorDSN(pp, ""), time.Hour)
	p := agentPool(t, tg)
	s := newPgpool(tg)

	res := scrapeOnce(s, p)
	require.True(t, res.Up(), "%v", res.Errors)
	assert.Equal(t, "4.3.5", res.Version)
	c := poolByName(t, res, PoolChildren)
	assert.Equal(t, Pool{Name: PoolChildren, Max: Some(children), Open: 1, InUse: 1,
		States: []StateCount{{SideClient, "execute_command", 1}, {SideClient, "wait_for_connection", children - 1}}}, c)

	// Every child but the agent's runs a long query.
	ctx := context.Background()
	var sleepers []*pgx.Conn
	sleepDone := make(chan error, children)
	for i := 0; i < children-1; i++ {
		conn, err := pgx.Connect(ctx, pp.DSN("app", appPassword, "appdb")+"&application_name=sleeper")
		require.NoError(t, err)
		sleepers = append(sleepers, conn)
		go func() {
			_, err := conn.Exec(ctx, "SELECT pg_sleep(60)")
			sleepDone <- err
		}()
	}
	t.Cleanup(func() {
		for _, c := range sleepers {
			_ = c.Close(context.Background())
		}
	})
	pg0.WaitBackends(t, "sleeper", func(n int) bool { return n == children-1 }, livePollTimeout)
	// And one more client, which Pgpool-II cannot serve: it waits in the
	// listen backlog.
	blockedCtx, cancelBlocked := context.WithTimeout(ctx, time.Minute)
	defer cancelBlocked()
	blocked := make(chan *pgx.Conn, 1)
	go func() {
		conn, err := pgx.Connect(blockedCtx, pp.DSN("app", appPassword, "appdb")+"&application_name=blocked")
		if err != nil {
			close(blocked)
			return
		}
		blocked <- conn
	}()

	res = pollScrape(t, s, p, "every child in use", func(r *Result) bool {
		c, ok := findPool(r, PoolChildren)
		return ok && c.InUse == children
	})
	require.True(t, res.Up(), "the target stays up while every child is busy: %v", res.Errors)
	c = poolByName(t, res, PoolChildren)
	assert.Equal(t, Pool{Name: PoolChildren, Max: Some(children), Open: children, InUse: children,
		States: []StateCount{{SideClient, "execute_command", children}}}, c, "in use = max")
	assert.False(t, c.Waiting.Valid, "Pgpool-II shows no queue: waiting is absent")
	node0 := poolByName(t, res, "node0")
	assert.Equal(t, Some(children*2), node0.Max, "num_init_children x max_pool")
	assert.Equal(t, float64(children), node0.InUse)
	select {
	case conn, ok := <-blocked:
		if ok {
			_ = conn.Close(ctx)
		}
		t.Fatal("the extra client got a child although every child was busy")
	default:
	}

	// Cancel the sleeps: children come free and the blocked client gets one.
	pg0.Exec(t, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'sleeper'")
	for range sleepers {
		require.Error(t, <-sleepDone, "cancelled")
	}
	for _, c := range sleepers {
		require.NoError(t, c.Close(ctx))
	}
	sleepers = nil
	select {
	case conn, ok := <-blocked:
		require.True(t, ok, "the blocked client connects once a child is free")
		require.NoError(t, conn.Close(ctx))
	case <-time.After(livePollTimeout):
		t.Fatal("the blocked client never got a child")
	}
	requireOneAgentChild(t, p, pg0, s)
}

func TestPgpool_Live_IdleTransactionIsALeakLoggedOnce(t *testing.T) {
	pg0, _, pp := livePgpool(t, 4)
	tg := agentTarget(monitorDSN(pp, ""), time.Second)
	p := agentPool(t, tg)
	s := newPgpool(tg)
	var logs testenv.SyncBuffer
	leakLog := NewLeakLog(log.NewLogfmtLogger(&logs))

	ctx := context.Background()
	leaky, err := pgx.Connect(ctx, pp.DSN("app", appPassword, "appdb")+"&application_name=leaky")
	require.NoError(t, err)
	defer func() { _ = leaky.Close(ctx) }()
	_, err = leaky.Exec(ctx, "BEGIN")
	require.NoError(t, err)
	_, err = leaky.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
	backendPID := int(pg0.QueryInt(t, "SELECT pid FROM pg_stat_activity WHERE application_name = 'leaky' AND state = 'idle in transaction'"))

	res := pollScrape(t, s, p, "the idle transaction is a leak", func(r *Result) bool {
		leakLog.Observe(r.Leaks)
		c, ok := findPool(r, PoolChildren)
		return ok && c.Leaked == 1
	})
	require.True(t, res.Up(), "%v", res.Errors)
	require.Len(t, res.Leaks, 1)
	l := res.Leaks[0]
	assert.Equal(t, PoolChildren, l.Pool)
	assert.Equal(t, backendPID, l.PID, "the backend pid, joined through SHOW POOL_POOLS")
	assert.Equal(t, "leaky", l.ApplicationName)
	assert.Equal(t, "app", l.User)
	assert.Equal(t, "appdb", l.Database)
	assert.Equal(t, "SELECT 1", l.Query)
	assert.Greater(t, l.Age, time.Second)
	assert.GreaterOrEqual(t, l.TransactionAge, l.Age)
	c := poolByName(t, res, PoolChildren)
	assert.Equal(t, l.Age.Seconds(), c.OldestLeakSeconds)
	for range 3 {
		leakLog.Observe(scrapeOnce(s, p).Leaks)
	}
	assert.Equal(t, 1, strings.Count(logs.String(), "leaked connection"), "logged once: %s", logs.String())
	assert.Contains(t, logs.String(), fmt.Sprintf("pid=%d", backendPID))

	_, err = leaky.Exec(ctx, "COMMIT")
	require.NoError(t, err)
	pollScrape(t, s, p, "no leak after COMMIT", func(r *Result) bool {
		c, ok := findPool(r, PoolChildren)
		return r.Up() && ok && c.Leaked == 0 && len(r.Leaks) == 0
	})
}

// recoverWithinOneScrape scrapes until a round is up, and fails if more
// than one round failed before.
func recoverWithinOneScrape(t *testing.T, s Scraper, q Querier, what string) *Result {
	t.Helper()
	for i := 0; i < 2; i++ {
		res := scrapeOnce(s, q)
		if res.Up() {
			t.Logf("%s: up again after %d failed round(s)", what, i)
			return res
		}
		t.Logf("%s: round %d failed: %v", what, i+1, res.Errors)
	}
	t.Fatalf("%s: still down two rounds later", what)
	return nil
}

func TestPgpool_Live_RestartRecoversWithinOneScrape(t *testing.T) {
	pg0, _, pp := livePgpool(t, 4)
	tg := agentTarget(monitorDSN(pp, ""), time.Hour)
	p := agentPool(t, tg)
	s := newPgpool(tg)
	require.True(t, scrapeOnce(s, p).Up())

	pp.Stop(t)
	res := scrapeOnce(s, p)
	require.False(t, res.Up(), "Pgpool-II is down")
	assert.Empty(t, res.Pools)
	pp.Start(t)
	res = recoverWithinOneScrape(t, s, p, "restart")
	assert.Equal(t, "4.3.5", res.Version)
	requireOneAgentChild(t, p, pg0, s)
}

func TestPgpool_Live_BackendNodeDownShowsAndTheTargetStaysUp(t *testing.T) {
	pg0, pg1, pp := livePgpool(t, 4)
	tg := agentTarget(monitorDSN(pp, ""), time.Hour)
	p := agentPool(t, tg)
	s := newPgpool(tg)
	res := scrapeOnce(s, p)
	require.True(t, res.Up())
	require.Len(t, res.Nodes, 2)
	require.True(t, res.Nodes[1].Up)

	pg1.Stop(t)
	failed := 0
	res = pollScrape(t, s, p, "node 1 down", func(r *Result) bool {
		if !r.Up() {
			failed++
			t.Logf("a round failed while Pgpool-II detached node 1: %v", r.Errors)
		}
		return r.Up() && len(r.Nodes) == 2 && !r.Nodes[1].Up
	})
	t.Logf("node 1 detached: %d failed round(s) on the way", failed)
	assert.LessOrEqual(t, failed, 1, "Pgpool-II restarts its children on failover: at most one round fails")
	assert.Equal(t, BackendNode{Name: "node1", Address: pg1.Addr(), Status: "down", Role: "standby"}, res.Nodes[1])
	assert.True(t, res.Nodes[0].Up)
	assert.True(t, recoverWithinOneScrape(t, s, p, "node down").Up())
	requireOneAgentChild(t, p, pg0, s)
}

func TestPgpool_Live_BlackholedPgpoolIsBoundedAndRecoversWithinOneScrape(t *testing.T) {
	pg0, _, pp := livePgpool(t, 4)
	proxy := testenv.StartProxy(t, pp.Addr())
	tg := agentTarget(monitorDSN(pp, proxy.Addr), time.Hour)
	p := agentPool(t, tg)
	s := newPgpool(tg)
	require.True(t, scrapeOnce(s, p).Up())

	proxy.Blackhole(true)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	start := time.Now()
	res := s.Scrape(ctx, p)
	elapsed := time.Since(start)
	cancel()
	require.False(t, res.Up())
	assert.Less(t, elapsed, 2500*time.Millisecond, "bounded by the round's deadline")
	proxy.Blackhole(false)
	recoverWithinOneScrape(t, s, p, "blackhole")
	requireOneAgentChild(t, p, pg0, s)
}

func TestPgpool_Live_WrongPasswordFailsClearlyAndRecoversWithinOneScrape(t *testing.T) {
	pg0, _, pp := livePgpool(t, 4)
	pwFile := filepath.Join(t.TempDir(), "pw")
	const wrong = "not-the-Password-42"
	require.NoError(t, os.WriteFile(pwFile, []byte(wrong+"\n"), 0o600))
	tg := agentTarget(pp.DSN("monitor", "", "appdb")+"&application_name="+agentAppName, time.Hour)
	tg.Password = config.PasswordSource{File: pwFile}
	p := agentPool(t, tg)
	s := newPgpool(tg)

	res := scrapeOnce(s, p)
	require.False(t, res.Up())
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryConnect, res.Errors[0].Query)
	assert.Contains(t, res.Errors[0].Error(), "authentication failed")
	assert.NotContains(t, res.Errors[0].Error(), wrong)
	assert.Zero(t, p.Stats().Open)

	require.NoError(t, os.WriteFile(pwFile, []byte(monitorPassword+"\n"), 0o600))
	recoverWithinOneScrape(t, s, p, "password fixed")
	requireOneAgentChild(t, p, pg0, s)
}
