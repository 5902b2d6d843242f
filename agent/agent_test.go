package agent_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/poolwatch/poolwatch/agent"
	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/scrape"
)

const (
	monUser = "pwmon"
	monPass = "Agent-S3cret-pw"
)

var shared = testenv.MonitoringShared(monUser, monPass)

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

// checkGoroutines verifies, after every other cleanup of the test, that no
// goroutine started by the test is left.
func checkGoroutines(t *testing.T) {
	t.Helper()
	shared.Get(t)
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// newAgent applies the YAML config to a new agent, closed on cleanup.
func newAgent(t *testing.T, yaml string, logger log.Logger) *agent.Agent {
	t.Helper()
	return newAgentAt(t, yaml, logger, nil)
}

// newAgentAt is newAgent with the agent's clock set to now, unless nil.
func newAgentAt(t *testing.T, yaml string, logger log.Logger, now func() time.Time) *agent.Agent {
	t.Helper()
	cfg, err := config.Parse("test.yml", []byte(yaml))
	require.NoError(t, err)
	a := agent.New(logger, 0)
	if now != nil {
		a.SetClock(now)
	}
	require.NoError(t, a.Apply(cfg))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, a.Close(ctx))
	})
	return a
}

// bouncerVia is a pgbouncer target whose console is reached through addr.
func bouncerTarget(name, addr, extra string) string {
	return fmt.Sprintf(`
  - name: %s
    kind: pgbouncer
    dsn: postgres://%s:%s@%s/pgbouncer?sslmode=disable
%s`, name, monUser, monPass, addr, extra)
}

func postgresTarget(name, addr, app, extra string) string {
	return fmt.Sprintf(`
  - name: %s
    kind: postgres
    dsn: postgres://%s:%s@%s/postgres?sslmode=disable&application_name=%s
%s`, name, monUser, monPass, addr, app, extra)
}

// roundQueries measures how many simple-protocol queries one round of a
// lone request sends through the proxy, after a warm-up round.
func roundQueries(t *testing.T, a *agent.Agent, p *testenv.Proxy, name string) int64 {
	t.Helper()
	a.Scrape(context.Background(), []string{name})
	p.ResetCounts()
	out := a.Scrape(context.Background(), []string{name})
	require.True(t, out[0].Up(), "%v", out[0].Errors)
	n := p.QueryCount()
	require.Positive(t, n)
	return n
}

func TestScrape_ConcurrentRequestsJoinTheRoundInFlight(t *testing.T) {
	checkGoroutines(t)
	_, pgb := shared.Get(t)
	proxy := testenv.StartProxy(t, pgb.Addr())
	a := newAgent(t, "targets:"+bouncerTarget("b", proxy.Addr, ""), nil)
	perRound := roundQueries(t, a, proxy, "b")

	// Hold a round open with latency, then pile 20 requests onto it.
	proxy.SetLatency(100 * time.Millisecond)
	proxy.ResetCounts()
	first := make(chan *scrape.Result, 1)
	go func() { first <- a.Scrape(context.Background(), []string{"b"})[0] }()
	testenv.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
		return proxy.StatementCount() > 0, "the first round has not started"
	})

	var wg sync.WaitGroup
	outs := make([]*scrape.Result, 20)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = a.Scrape(context.Background(), []string{"b"})[0]
		}()
	}
	wg.Wait()
	o := <-first
	require.True(t, o.Up())
	for _, joined := range outs {
		require.Same(t, o, joined, "every request got the one round's outcome")
	}
	require.Equal(t, perRound, proxy.QueryCount(), "the target saw exactly one round")
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestScrape_MinScrapeIntervalServesARecentRoundAgain(t *testing.T) {
	checkGoroutines(t)
	_, pgb := shared.Get(t)
	proxy := testenv.StartProxy(t, pgb.Addr())
	clock := newFakeClock()
	a := newAgentAt(t, "targets:"+bouncerTarget("b", proxy.Addr, "    min_scrape_interval: 5s"), nil, clock.Now)
	proxy.ResetCounts()
	first := a.Scrape(context.Background(), []string{"b"})[0]
	require.True(t, first.Up())
	perRound := proxy.QueryCount()

	// 20 requests spread over 2 s.
	for range 20 {
		clock.Advance(100 * time.Millisecond)
		o := a.Scrape(context.Background(), []string{"b"})[0]
		require.Same(t, first, o)
	}
	require.Equal(t, perRound, proxy.QueryCount(), "one round for 21 requests")

	clock.Advance(3 * time.Second) // the first round is 5 s old
	o := a.Scrape(context.Background(), []string{"b"})[0]
	require.NotSame(t, first, o, "a round as old as the interval is not served again")
	require.True(t, o.Up())
	require.Greater(t, proxy.QueryCount(), perRound, "a new round queried the target")
}

func TestScrape_BlackholedTargetsCostTheirTimeoutNotTheSum(t *testing.T) {
	checkGoroutines(t)
	pg, pgb := shared.Get(t)
	var targets strings.Builder
	targets.WriteString("targets:")
	for i := range 3 {
		p := testenv.StartProxy(t, pg.Addr())
		p.Blackhole(true)
		targets.WriteString(postgresTarget(fmt.Sprintf("dead-%d", i), p.Addr, "poolwatch", "    scrape_timeout: 2s"))
	}
	targets.WriteString(postgresTarget("pg", pg.Addr(), "poolwatch", ""))
	targets.WriteString(bouncerTarget("bouncer", pgb.Addr(), ""))
	a := newAgent(t, targets.String(), nil)

	start := time.Now()
	outs := a.Scrape(context.Background(), a.Names())
	elapsed := time.Since(start)
	require.Len(t, outs, 5)
	up := map[string]bool{}
	for _, o := range outs {
		up[o.Target] = o.Up()
	}
	require.Equal(t, map[string]bool{"dead-0": false, "dead-1": false, "dead-2": false, "pg": true, "bouncer": true}, up)
	require.Less(t, elapsed, 4*time.Second, "the scrape takes one timeout, not the sum of three")
	require.GreaterOrEqual(t, elapsed, 1900*time.Millisecond, "a blackholed target costs its timeout")
	t.Logf("5 targets, 3 blackholed with a 2 s timeout: %v", elapsed)
}

func TestScrape_CallerContextBoundsTheWait(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	p := testenv.StartProxy(t, pg.Addr())
	p.Blackhole(true)
	a := newAgent(t, "targets:"+postgresTarget("dead", p.Addr, "poolwatch", "    scrape_timeout: 3s"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	o := a.Scrape(ctx, []string{"dead"})[0]
	require.Less(t, time.Since(start), 2*time.Second)
	require.False(t, o.Up())
	require.NotEmpty(t, o.Errors)
}

func TestScrape_FailedRoundsCountErrorsAndLogRateLimitedLinesWithoutThePassword(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	var logs testenv.SyncBuffer
	p := testenv.StartProxy(t, pg.Addr())
	clock := newFakeClock()
	a := newAgentAt(t, "targets:"+postgresTarget("pg", p.Addr, "poolwatch", ""), log.NewLogfmtLogger(&logs), clock.Now)
	o := a.Scrape(context.Background(), []string{"pg"})[0]
	require.True(t, o.Up())
	require.Equal(t, map[string]float64{"connect": 0, "activity": 0, "round": 0}, o.ScrapeErrors)

	p.Refuse(true)
	p.ResetAll()
	for i := 1; i <= 3; i++ {
		o = a.Scrape(context.Background(), []string{"pg"})[0]
		require.False(t, o.Up())
		// Even the first round after the reset fails its connect, not its
		// query: the connection that succeeded within the last second is
		// not handed out once its socket shows the reset (docs/connections.md).
		require.Equal(t, float64(i), o.ScrapeErrors["connect"])
		require.Zero(t, o.ScrapeErrors["activity"])
	}
	// One line for the connect failures, and one before it if the first
	// round failed its query instead.
	lines := strings.Count(logs.String(), "target scrape failed")
	require.Equal(t, 1+int(o.ScrapeErrors["activity"]), lines, "one line per way of failing, not per scrape:\n%s", logs.String())
	require.Contains(t, logs.String(), "target=pg")
	require.NotContains(t, logs.String(), monPass)

	// The same failure is logged again once the interval has passed, with
	// the count of the rounds that were not.
	clock.Advance(agent.FailureLogInterval)
	o = a.Scrape(context.Background(), []string{"pg"})[0]
	require.False(t, o.Up())
	require.Equal(t, lines+1, strings.Count(logs.String(), "target scrape failed"))
	require.Contains(t, logs.String(), "unlogged_failed_scrapes=")

	p.Refuse(false)
	o = a.Scrape(context.Background(), []string{"pg"})[0]
	require.True(t, o.Up(), "up again by itself")
	require.Equal(t, lines+1, strings.Count(logs.String(), "target scrape failed"))
	require.Equal(t, 1, strings.Count(logs.String(), `msg="target scrape succeeded again"`))
	o = a.Scrape(context.Background(), []string{"pg"})[0]
	require.True(t, o.Up())
	require.Equal(t, 1, strings.Count(logs.String(), `msg="target scrape succeeded again"`), "said once")
}

// TestScrape_ARequestsBudgetNeverCutsTheSharedRound starts a slow round
// with a request whose budget is far shorter than the round, as a hostile
// X-Prometheus-Scrape-Timeout-Seconds would: that request alone sees the
// target down; a request that joins the same round gets it whole, the
// target sees one round, and the agent keeps its connection.
func TestScrape_ARequestsBudgetNeverCutsTheSharedRound(t *testing.T) {
	checkGoroutines(t)
	_, pgb := shared.Get(t)
	proxy := testenv.StartProxy(t, pgb.Addr())
	a := newAgent(t, "targets:"+bouncerTarget("b", proxy.Addr, "    scrape_timeout: 10s"), nil)
	perRound := roundQueries(t, a, proxy, "b")
	conns := a.ProbePools()[0].Stats.NewConnections

	proxy.SetLatency(50 * time.Millisecond)
	proxy.ResetCounts()
	hostile, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	cut := a.Scrape(hostile, []string{"b"})[0]
	require.False(t, cut.Up(), "the hostile request's own budget ended first")
	var budget *agent.RequestBudgetError
	require.ErrorAs(t, cut.Errors[0], &budget)
	require.Equal(t, scrape.QueryRound, cut.Errors[0].Query)
	require.Zero(t, cut.ScrapeErrors["round"], "a request's budget is not the target's error")

	whole := a.Scrape(context.Background(), []string{"b"})[0]
	require.True(t, whole.Up(), "%v", whole.Errors)
	require.Equal(t, perRound, proxy.QueryCount(), "one round, run to its end, served the second request")
	require.Equal(t, conns, a.ProbePools()[0].Stats.NewConnections, "no reconnect")
	require.Zero(t, whole.ScrapeErrors["round"])
}

func TestApply_KeepsUnchangedPoolsAndClosesRemovedOnes(t *testing.T) {
	checkGoroutines(t)
	pg, pgb := shared.Get(t)
	keep := postgresTarget("keep", pg.Addr(), "pw_keep", "")
	gone := postgresTarget("gone", pg.Addr(), "pw_gone", "")
	a := newAgent(t, "targets:"+keep+gone, nil)
	for _, o := range a.Scrape(context.Background(), a.Names()) {
		require.True(t, o.Up())
	}
	pg.WaitBackends(t, "pw_keep", func(n int) bool { return n == 1 }, 10*time.Second)
	pidBefore := pg.QueryInt(t, "SELECT pid FROM pg_stat_activity WHERE application_name = 'pw_keep'")

	cfg, err := config.Parse("next.yml", []byte("targets:"+keep+bouncerTarget("new", pgb.Addr(), "")))
	require.NoError(t, err)
	require.NoError(t, a.Apply(cfg))
	require.Equal(t, []string{"keep", "new"}, a.Names())
	require.True(t, a.Has("new"))
	require.False(t, a.Has("gone"))
	pg.WaitBackends(t, "pw_gone", func(n int) bool { return n == 0 }, 10*time.Second)

	for _, o := range a.Scrape(context.Background(), a.Names()) {
		require.True(t, o.Up(), o.Target)
	}
	pidAfter := pg.QueryInt(t, "SELECT pid FROM pg_stat_activity WHERE application_name = 'pw_keep'")
	require.Equal(t, pidBefore, pidAfter, "the unchanged target kept its connection")
	for _, p := range a.ProbePools() {
		if p.Target == "keep" {
			require.Equal(t, uint64(1), p.Stats.NewConnections)
		}
	}
}

func TestReloader_RejectsABadFileAndKeepsTheOldConfig(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	path := t.TempDir() + "/poolwatch.yml"
	good := "targets:" + postgresTarget("pg", pg.Addr(), "poolwatch", "")
	require.NoError(t, os.WriteFile(path, []byte(good), 0o600))
	reg := prometheus.NewRegistry()
	a := agent.New(nil, 0)
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	r := agent.NewReloader(path, a, reg, log.NewNopLogger())
	require.False(t, r.Loaded())
	require.NoError(t, r.Reload())
	require.True(t, r.Loaded())
	require.Equal(t, 1.0, testutil.ToFloat64(mustGauge(t, reg, "poolwatch_config_last_reload_successful")))

	require.NoError(t, os.WriteFile(path, []byte(good+"    bogus_key: 1\n"), 0o600))
	err := r.Reload()
	require.ErrorContains(t, err, "poolwatch.yml:5: targets[0].bogus_key: unknown key")
	require.Equal(t, 0.0, testutil.ToFloat64(mustGauge(t, reg, "poolwatch_config_last_reload_successful")))
	require.Equal(t, []string{"pg"}, a.Names(), "the old configuration stays in force")
	require.True(t, a.Scrape(context.Background(), []string{"pg"})[0].Up())
}

func TestReloader_AFailedFirstLoadIsReturnedNotLoggedAsKeepingAnOldConfig(t *testing.T) {
	path := t.TempDir() + "/poolwatch.yml"
	require.NoError(t, os.WriteFile(path, []byte("targets: []\n"), 0o600))
	var logs testenv.SyncBuffer
	reg := prometheus.NewRegistry()
	r := agent.NewReloader(path, agent.New(nil, 0), reg, log.NewLogfmtLogger(&logs))
	err := r.Reload()
	require.ErrorContains(t, err, "poolwatch.yml:1: targets: at least one target is required")
	require.False(t, r.Loaded())
	require.Equal(t, 0.0, testutil.ToFloat64(mustGauge(t, reg, "poolwatch_config_last_reload_successful")))
	require.Empty(t, logs.String(), "there is no previous configuration to keep: the caller reports the error")
}

func mustGauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "copy"})
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	t.Fatalf("metric %s not found", name)
	return nil
}

func TestScrape_ThousandFailedScrapesLeaveNoGoroutineOrDescriptor(t *testing.T) {
	checkGoroutines(t)
	port := testenv.FreePort(t) // nothing listens there
	a := newAgent(t, "targets:"+postgresTarget("stopped", fmt.Sprintf("127.0.0.1:%d", port), "poolwatch",
		"    probe_pool: {acquire_retries: 0}"), nil)
	scrape := func() {
		o := a.Scrape(context.Background(), []string{"stopped"})[0]
		require.False(t, o.Up())
	}
	for range 50 {
		scrape()
	}
	base := testenv.Baseline(t)
	for range 1000 {
		scrape()
	}
	after := testenv.SettleAt(t, base)
	t.Logf("baseline %d goroutines %d fds; after 1000 failed scrapes %d goroutines %d fds", base.Goroutines, base.FDs, after.Goroutines, after.FDs)
	o := a.Scrape(context.Background(), []string{"stopped"})[0]
	require.Equal(t, 1051.0, o.ScrapeErrors["connect"])
}

func TestScrape_WarnsOnceWhenTheRoleCannotSeeOtherRoles(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	role := fmt.Sprintf("pw_nomonitor_%d", time.Now().UnixNano()) // unique across -count runs on the shared cluster
	pg.CreateRole(t, role, "NoMon-S3cret", "LOGIN")
	var logs testenv.SyncBuffer
	a := newAgent(t, fmt.Sprintf(`targets:
  - name: weak
    kind: postgres
    dsn: postgres://%s:NoMon-S3cret@%s/postgres?sslmode=disable
`, role, pg.Addr()), log.NewLogfmtLogger(&logs))
	for range 3 {
		o := a.Scrape(context.Background(), []string{"weak"})[0]
		require.True(t, o.Up(), "the target is reachable; only its view is limited")
		require.True(t, o.LimitedVisibility)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "grant it pg_monitor"), logs.String())

	strong := newAgent(t, "targets:"+postgresTarget("strong", pg.Addr(), "poolwatch", ""), log.NewLogfmtLogger(&logs))
	o := strong.Scrape(context.Background(), []string{"strong"})[0]
	require.False(t, o.LimitedVisibility, "pg_monitor sees everything")
	require.Equal(t, 1, strings.Count(logs.String(), "grant it pg_monitor"))
}

func TestScrape_LogsThePoolCapOnceWhileItDrops(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	pgb := testenv.StartPgBouncer(t, pg, testenv.PgBouncerOptions{
		Users:      map[string]string{monUser: monPass},
		StatsUsers: []string{monUser},
		Databases:  map[string]string{"postgres": "dbname=postgres"},
	})
	// A pool is listed once a client has used it.
	conn, err := pgx.Connect(context.Background(), pgb.DSN(monUser, monPass, "postgres"))
	require.NoError(t, err)
	_, err = conn.Exec(context.Background(), "SELECT 1")
	require.NoError(t, err)
	require.NoError(t, conn.Close(context.Background()))

	var logs testenv.SyncBuffer
	a := newAgent(t, "targets:"+bouncerTarget("b", pgb.Addr(), "    max_pools: 1"), log.NewLogfmtLogger(&logs))
	for range 3 {
		o := a.Scrape(context.Background(), []string{"b"})[0]
		require.True(t, o.Up())
		require.Equal(t, 1, o.PoolsDropped, "postgres/pwmon is over the cap")
		require.Len(t, o.Pools, 1)
		require.Equal(t, "clients", o.Pools[0].Name, "the target-wide pool is always kept")
	}
	require.Equal(t, 1, strings.Count(logs.String(), "too many pools"), "logged once, not per scrape:\n%s", logs.String())
	require.Contains(t, logs.String(), "max_pools=1 dropped=1")
}

// reloadInTheWindow makes a's next Scrape apply yaml after it has taken its
// targets and before their rounds start, and wait there until the pools the
// reload retires are closed: the window in which a reload used to close a
// pool under a round that had not started yet.
func reloadInTheWindow(t *testing.T, a *agent.Agent, yaml string) {
	t.Helper()
	next, err := config.Parse("next.yml", []byte(yaml))
	require.NoError(t, err)
	done := false
	a.SetAfterSnapshot(func() { // runs in the goroutine of Scrape's caller
		if done {
			return
		}
		done = true
		require.NoError(t, a.Apply(next))
		a.WaitClosing()
	})
}

func TestScrape_AReloadThatClosesTheTargetsPoolMidRequestIsNotASpuriousUpZero(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	a := newAgent(t, "targets:"+postgresTarget("pg", pg.Addr(), "pw_race_old", ""), nil)
	require.True(t, a.Scrape(context.Background(), []string{"pg"})[0].Up())

	// The reload changes the target (its DSN): its pool is replaced.
	reloadInTheWindow(t, a, "targets:"+postgresTarget("pg", pg.Addr(), "pw_race_new", ""))
	out := a.Scrape(context.Background(), []string{"pg"})
	require.Len(t, out, 1)
	require.True(t, out[0].Up(), "the request is served by the new configuration, not failed by the old pool's close: %v", out[0].Errors)
	require.Equal(t, "pg", out[0].Target)
	pg.WaitBackends(t, "pw_race_new", func(n int) bool { return n == 1 }, 10*time.Second)
	pg.WaitBackends(t, "pw_race_old", func(n int) bool { return n == 0 }, 10*time.Second)
	require.Zero(t, out[0].ScrapeErrors["connect"], "the new target's counters saw no failure")
}

func TestScrape_ATargetRemovedMidRequestIsLeftOutNotDown(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	keep := postgresTarget("keep", pg.Addr(), "pw_race_keep", "")
	a := newAgent(t, "targets:"+keep+postgresTarget("gone", pg.Addr(), "pw_race_gone", ""), nil)
	for _, o := range a.Scrape(context.Background(), a.Names()) {
		require.True(t, o.Up(), o.Target)
	}

	reloadInTheWindow(t, a, "targets:"+keep)
	out := a.Scrape(context.Background(), []string{"keep", "gone"})
	require.Len(t, out, 1, "the removed target is not reported down")
	require.Equal(t, "keep", out[0].Target)
	require.True(t, out[0].Up())
}

func TestApply_LongestScrapeTimeoutFollowsTheConfig(t *testing.T) {
	checkGoroutines(t)
	a := newAgent(t, "targets:"+postgresTarget("a", "127.0.0.1:1", "x", "    scrape_timeout: 3s")+
		postgresTarget("b", "127.0.0.1:1", "x", "    scrape_timeout: 7s"), nil)
	require.Equal(t, 7*time.Second, a.LongestScrapeTimeout())
	cfg, err := config.Parse("test.yml", []byte("targets:"+postgresTarget("a", "127.0.0.1:1", "x", "    scrape_timeout: 2s")))
	require.NoError(t, err)
	require.NoError(t, a.Apply(cfg))
	require.Equal(t, 2*time.Second, a.LongestScrapeTimeout())
	a.WaitClosing()
}

// TestScrape_ARoundThatEndedIsServedEvenAfterTheBudgetEnded: a request
// waits for its targets one after the other; a live target's round that
// ended while the request was still waiting for a hung one is served, not
// marked down because the budget has ended since.
func TestScrape_ARoundThatEndedIsServedEvenAfterTheBudgetEnded(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	p := testenv.StartProxy(t, pg.Addr())
	p.Blackhole(true)
	a := newAgent(t, "targets:"+postgresTarget("dead", p.Addr, "poolwatch", "    scrape_timeout: 3s")+
		postgresTarget("live", pg.Addr(), "poolwatch", ""), nil)
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		outs := a.Scrape(ctx, []string{"dead", "live"})
		cancel()
		require.Len(t, outs, 2)
		require.False(t, outs[0].Up())
		require.True(t, outs[1].Up(), "the live target's round ended within the budget: %v", outs[1].Errors)
	}
}
