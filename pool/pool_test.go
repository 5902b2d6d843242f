package pool_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/pool"
)

// shared is one PostgreSQL cluster and one PgBouncer used by the package's
// tests. Each test uses its own application_name, so pg_stat_activity
// counts do not mix.
var shared = testenv.MonitoringShared(monUser, monPass)

const (
	monUser = "pwmon"
	monPass = "s3cret-Pa55word"
)

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

func env(t *testing.T) (*testenv.Postgres, *testenv.PgBouncer) { return shared.Get(t) }

func pgServer(t *testing.T) *testenv.Postgres { pg, _ := env(t); return pg }
func bouncer(t *testing.T) *testenv.PgBouncer { _, b := env(t); return b }

// appName returns an application_name unique to the test.
func appName(t *testing.T) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	if len(name) > 50 {
		name = name[len(name)-50:]
	}
	return "pw_" + name
}

// pgDSN returns a DSN for the shared cluster with the test's application
// name, optionally through addr (a proxy) instead of the server.
func pgDSN(t *testing.T, addr string) string {
	t.Helper()
	pg, _ := env(t)
	if addr == "" {
		addr = pg.Addr()
	}
	return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&application_name=%s", monUser, monPass, addr, appName(t))
}

// testOptions are fast options for tests: no backoff, short timeouts.
func testOptions(t *testing.T, dsn string) pool.Options {
	return pool.Options{
		Target: t.Name(),
		Kind:   config.KindPostgres,
		DSN:    dsn,
		ProbePool: config.ProbePool{
			MaxConnections:     2,
			ConnectTimeout:     2 * time.Second,
			HealthCheckTimeout: time.Second,
			AcquireRetries:     3,
			RetryBackoff:       time.Millisecond,
			LeakThreshold:      30 * time.Second,
		},
		Logger: log.NewNopLogger(),
	}
}

// newPool creates a pool and closes it at the end of the test, then checks
// that no goroutine of it is left behind.
func newPool(t *testing.T, opts pool.Options) *pool.Pool {
	t.Helper()
	return newHookedPool(t, opts, pool.Hooks{})
}

// newHookedPool is newPool with test seams.
func newHookedPool(t *testing.T, opts pool.Options, h pool.Hooks) *pool.Pool {
	t.Helper()
	p, err := pool.NewWithHooks(opts, h)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := closeWithin(t, p, 5*time.Second)
		require.NoError(t, err)
	})
	return p
}

// closeWithin closes p under a context with the given bound and returns
// how long Close took and its error. If Close has not returned a second
// after the bound, the test fails at once rather than hang.
func closeWithin(t *testing.T, p *pool.Pool, bound time.Duration) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.Close(ctx) }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(bound + time.Second):
		t.Fatalf("Close with a %v deadline still blocked after %v", bound, time.Since(start))
		return 0, nil
	}
}

// waitCleaned waits, for at most 10 s, for the cleanup Close started to
// finish: every call returned and every connection closed.
func waitCleaned(t *testing.T, p *pool.Pool) {
	t.Helper()
	select {
	case <-p.Cleaned():
	case <-time.After(10 * time.Second):
		t.Fatalf("the pool's connections were not all closed 10 s after Close: %+v", p.Stats())
	}
}

// useFakeClock makes opts use a fake clock, and returns it.
func useFakeClock(opts *pool.Options) *fakeClock {
	c := newFakeClock()
	opts.Now = c.Now
	return c
}

// waitStats polls p's stats until ok holds, for at most 10 s: pgxpool
// closes idle connections, and the pool tops up MinConns, in the
// background.
func waitStats(t *testing.T, p *pool.Pool, what string, ok func(pool.Stats) bool) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() (bool, string) {
		s := p.Stats()
		return ok(s), fmt.Sprintf("%s: stats %+v", what, s)
	})
}

// verifyNoLeaks asserts that the pool is empty of acquired connections and
// that the server settles at no more than max backends for the test's
// application_name.
func verifyNoLeaks(t *testing.T, p *pool.Pool, maxBackends int) {
	t.Helper()
	waitStats(t, p, "nothing in use after release", func(s pool.Stats) bool { return s.InUse == 0 })
	s := p.Stats()
	require.Equal(t, 0, s.Leaked, "leaked")
	require.LessOrEqual(t, s.Open, s.Max, "open <= max")
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n <= maxBackends }, 10*time.Second)
}

// checkGoroutines registers, as the test's last cleanup, a check that no
// goroutine started during the test outlives it: it runs after the pools
// the test opened are closed. The shared servers' goroutines, started
// earlier, are ignored.
func checkGoroutines(t *testing.T) {
	t.Helper()
	env(t)
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// fill opens n connections in the pool at once and returns them to it.
func fill(t *testing.T, p *pool.Pool, n int) {
	t.Helper()
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	ready.Add(n)
	release := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.Do(context.Background(), func(context.Context, *pgx.Conn) error {
				ready.Done()
				<-release
				return nil
			})
		}()
	}
	ready.Wait()
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, n, p.Stats().Idle)
}

func TestDo_DestroysEveryConnectionThatFailsItsHealthCheck(t *testing.T) {
	checkGoroutines(t)
	const failing = 3
	opts := testOptions(t, pgDSN(t, ""))
	opts.MaxConnections = failing + 1
	opts.AcquireRetries = failing
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	fill(t, p, failing)
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == failing }, 10*time.Second)
	clock.Stale()

	// Kill the backends of every idle connection: each attempt's health
	// check now fails, until one dials afresh.
	require.Equal(t, failing, pgServer(t).TerminateBackends(t, appName(t)))
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 0 }, 10*time.Second)

	calls := 0
	var pid uint32
	err := p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
		calls++
		pid = c.PgConn().PID()
		return c.QueryRow(ctx, "SELECT 1").Scan(new(int))
	})
	require.NoError(t, err)
	require.Equal(t, 1, calls, "exactly one connection handed out")
	require.NotZero(t, pid)

	s := p.Stats()
	require.Equal(t, uint64(failing), s.HealthCheckFailures)
	require.Equal(t, uint64(failing), s.AcquireRetries)
	waitStats(t, p, "the failed connections were destroyed, not returned", func(s pool.Stats) bool { return s.Open == 1 && s.Idle == 1 })
	verifyNoLeaks(t, p, 1)
}

func TestDo_DestroysEveryConnectionWhoseHealthCheckTimesOut(t *testing.T) {
	checkGoroutines(t)
	const failing = 2
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	opts := testOptions(t, pgDSN(t, proxy.Addr))
	opts.MaxConnections = failing + 1
	opts.AcquireRetries = failing
	opts.HealthCheckTimeout = 200 * time.Millisecond
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	fill(t, p, failing)

	// The idle connections stop answering; a fresh one works.
	proxy.FreezeExisting()
	clock.Stale()

	calls := 0
	start := time.Now()
	err := p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
		calls++
		return c.QueryRow(ctx, "SELECT 1").Scan(new(int))
	})
	require.NoError(t, err)
	require.Equal(t, 1, calls)
	require.GreaterOrEqual(t, time.Since(start), failing*opts.HealthCheckTimeout, "each frozen connection cost one health check timeout")
	s := p.Stats()
	require.Equal(t, uint64(failing), s.HealthCheckFailures)
	require.Equal(t, uint64(failing), s.AcquireRetries)
	waitStats(t, p, "the frozen connections were destroyed", func(s pool.Stats) bool { return s.Open == 1 })
	verifyNoLeaks(t, p, 1)
}

func TestDo_GivesUpAfterBoundedAttemptsAndHoldsNothing(t *testing.T) {
	checkGoroutines(t)
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	opts := testOptions(t, pgDSN(t, proxy.Addr))
	opts.AcquireRetries = 2
	opts.HealthCheckTimeout = 100 * time.Millisecond
	opts.RetryBackoff = 20 * time.Millisecond
	p := newPool(t, opts)
	// Every connection, old or new, is reset by the proxy right away.
	proxy.Refuse(true)

	called := false
	err := p.Do(context.Background(), func(context.Context, *pgx.Conn) error { called = true; return nil })
	require.Error(t, err)
	require.False(t, called)
	require.Contains(t, err.Error(), t.Name())
	s := p.Stats()
	require.Equal(t, uint64(2), s.AcquireRetries)
	require.Equal(t, uint64(1), s.AcquireErrors)
	require.Equal(t, 0, s.Open)
	proxy.Refuse(false)
	require.NoError(t, p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error { return c.Ping(ctx) }))
	verifyNoLeaks(t, p, 1)
}

func TestDo_ReleasesOnErrorAndDestroysOnPanicOrOpenTransaction(t *testing.T) {
	checkGoroutines(t)
	opts := testOptions(t, pgDSN(t, ""))
	opts.MaxConnections = 1
	p := newPool(t, opts)
	ctx := context.Background()

	boom := errors.New("boom")
	var firstPID uint32
	err := p.Do(ctx, func(_ context.Context, c *pgx.Conn) error {
		firstPID = c.PgConn().PID()
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, p.Stats().Idle, "a callback error on a healthy connection returns it")

	// Left inside a transaction: destroyed.
	require.NoError(t, p.Do(ctx, func(ctx context.Context, c *pgx.Conn) error {
		require.Equal(t, firstPID, c.PgConn().PID(), "the returned connection was reused")
		_, err := c.Exec(ctx, "BEGIN")
		return err
	}))
	waitStats(t, p, "a connection left in a transaction is destroyed", func(s pool.Stats) bool { return s.Open == 0 })

	// A panic releases the connection, then propagates.
	require.PanicsWithValue(t, "callback panic", func() {
		_ = p.Do(ctx, func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, "BEGIN")
			require.NoError(t, err)
			panic("callback panic")
		})
	})
	waitStats(t, p, "the panicking callback's connection was in a transaction: destroyed", func(s pool.Stats) bool { return s.Open == 0 && s.InUse == 0 })

	// A query cut off by the context leaves the connection broken: destroyed.
	qctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = p.Do(qctx, func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "SELECT pg_sleep(5)")
		return err
	})
	require.Error(t, err)
	waitStats(t, p, "a connection cut off mid-query is destroyed", func(s pool.Stats) bool { return s.Open == 0 })
	verifyNoLeaks(t, p, 0)
}

func TestDo_SendsApplicationNameAndTimeoutsOnPostgres(t *testing.T) {
	checkGoroutines(t)
	dsn := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", monUser, monPass, pgServer(t).Addr())
	opts := testOptions(t, dsn)
	opts.StatementTimeout = 4500 * time.Millisecond
	opts.LockTimeout = 700 * time.Millisecond
	p := newPool(t, opts)
	var app, stmt, lock string
	require.NoError(t, p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
		return c.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('statement_timeout'), current_setting('lock_timeout')").Scan(&app, &stmt, &lock)
	}))
	require.Equal(t, "poolwatch", app)
	require.Equal(t, "4500ms", stmt)
	require.Equal(t, "700ms", lock)

	// A DSN's own application_name wins.
	p2 := newPool(t, testOptions(t, dsn+"&application_name=custom-probe"))
	require.NoError(t, p2.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
		return c.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app)
	}))
	require.Equal(t, "custom-probe", app)
}

func TestDo_RereadsThePasswordForEveryNewConnection(t *testing.T) {
	checkGoroutines(t)
	role := fmt.Sprintf("pw_rotate_%d", time.Now().UnixNano()) // unique across -count runs on the shared cluster
	pgServer(t).CreateRole(t, role, "first-Secret", "LOGIN")
	pwFile := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte("first-Secret\n"), 0o600))
	opts := testOptions(t, fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable&application_name=%s", role, pgServer(t).Addr(), appName(t)))
	opts.Password = config.PasswordSource{File: pwFile}
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	ping := func() error {
		return p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error { return c.Ping(ctx) })
	}
	require.NoError(t, ping())

	// Rotate: new password on the server and in the file, old connections gone.
	pgServer(t).Exec(t, fmt.Sprintf("ALTER ROLE %s PASSWORD 'second-Secret'", role))
	require.NoError(t, os.WriteFile(pwFile, []byte("second-Secret\n"), 0o600))
	pgServer(t).TerminateBackends(t, appName(t))
	clock.Stale()
	require.NoError(t, ping(), "the rotated password is read for the new connection")
	require.Equal(t, uint64(2), p.Stats().NewConnections)

	// An unreadable password source is a clear error.
	require.NoError(t, os.Remove(pwFile))
	pgServer(t).TerminateBackends(t, appName(t))
	clock.Stale()
	err := ping()
	require.Error(t, err)
	require.Contains(t, err.Error(), "read password: open password file: open "+pwFile+": no such file or directory")
	s := p.Stats()
	require.Equal(t, uint64(2), s.HealthCheckFailures, "the two killed connections")
	require.Equal(t, s.HealthCheckFailures, s.AcquireRetries, "a retry after each failed check, none after the unreadable file")
	verifyNoLeaks(t, p, 0)
}

func TestDo_WrongPasswordIsAClearErrorWithoutThePasswordAndIsNotRetried(t *testing.T) {
	checkGoroutines(t)
	const bad = "Wr0ng-Pa55word-xyz"
	dsn := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&application_name=%s", monUser, bad, pgServer(t).Addr(), appName(t))
	p := newPool(t, testOptions(t, dsn))
	err := p.Do(context.Background(), func(context.Context, *pgx.Conn) error { return nil })
	require.Error(t, err)
	require.Contains(t, err.Error(), "password authentication failed")
	require.NotContains(t, err.Error(), bad)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "28P01", pgErr.Code)
	s := p.Stats()
	require.Equal(t, uint64(0), s.AcquireRetries, "a wrong password is not retried")
	require.Equal(t, uint64(1), s.AcquireErrors)
	require.Equal(t, 0, s.Open)
}

func TestNew_RejectsBadOptionsWithoutLeakingThePassword(t *testing.T) {
	base := pool.Options{Target: "t", DSN: "postgres://u:hunter2-secret@127.0.0.1:1/db", ProbePool: config.ProbePool{MaxConnections: 1}}
	for name, tc := range map[string]struct {
		mutate func(*pool.Options)
		want   string
	}{
		"zero max":       {func(o *pool.Options) { o.MaxConnections = 0 }, "max connections must be > 0"},
		"min above max":  {func(o *pool.Options) { o.MinConnections = 2 }, "min connections 2 must be between 0 and max 1"},
		"negative retry": {func(o *pool.Options) { o.AcquireRetries = -1 }, "acquire retries must be >= 0"},
		"bad dsn":        {func(o *pool.Options) { o.DSN = "postgres://u:hunter2-secret@127.0.0.1:notaport/db" }, "invalid DSN"},
		"bad kv dsn":     {func(o *pool.Options) { o.DSN = "host=x password=hunter2-secret sslmode=bogus" }, "invalid DSN"},
		"unknown kind":   {func(o *pool.Options) { o.Kind = "oracle" }, `probe pool "t": unknown kind "oracle"`},
		"two pgpool children": {func(o *pool.Options) { o.Kind, o.MaxConnections = config.KindPgpool, 2 },
			`probe pool "t": a pgpool target allows at most 1 connection(s), got max 2`},
	} {
		t.Run(name, func(t *testing.T) {
			o := base
			tc.mutate(&o)
			_, err := pool.New(o)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestDo_AfterCloseFailsWithErrClosed(t *testing.T) {
	checkGoroutines(t)
	p, err := pool.New(testOptions(t, pgDSN(t, "")))
	require.NoError(t, err)
	require.NoError(t, p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error { return c.Ping(ctx) }))
	require.NoError(t, p.Close(context.Background()))
	require.NoError(t, p.Close(context.Background()), "Close is idempotent")
	err = p.Do(context.Background(), func(context.Context, *pgx.Conn) error { return nil })
	require.ErrorIs(t, err, pool.ErrClosed)
	require.Equal(t, 0, p.Stats().Open)
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 0 }, 10*time.Second)
}

// sleepInCallback runs pg_sleep(seconds) in a callback of p and returns,
// once the callback has started, the channel that gets Do's result.
func sleepInCallback(p *pool.Pool, seconds string) <-chan error {
	started := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
			close(started)
			_, err := c.Exec(ctx, "SELECT pg_sleep("+seconds+")")
			return err
		})
	}()
	<-started
	return result
}

func TestClose_CancelsCallbacksThatOutliveItsContext(t *testing.T) {
	checkGoroutines(t)
	p, err := pool.New(testOptions(t, pgDSN(t, "")))
	require.NoError(t, err)
	result := sleepInCallback(p, "30")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err = p.Close(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(begin), 10*time.Second, "Close did not wait for the 30 s query")
	require.Error(t, <-result, "the callback saw its context cancelled")
	<-p.Cleaned()
	require.Equal(t, 0, p.Stats().InUse)
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 0 }, 10*time.Second)
}

func TestClose_WaitsForCallbacksThatFinishInTime(t *testing.T) {
	checkGoroutines(t)
	p, err := pool.New(testOptions(t, pgDSN(t, "")))
	require.NoError(t, err)
	result := sleepInCallback(p, "0.3")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Close(ctx))
	require.NoError(t, <-result, "the callback ran to completion")
}

func TestStats_IdleClosedPoolHoldsNoConnectionAndReopensOnUse(t *testing.T) {
	checkGoroutines(t)
	opts := testOptions(t, pgDSN(t, ""))
	opts.IdleClose = time.Minute
	opts.MinConnections = 1
	clock := useFakeClock(&opts)
	tick := make(chan time.Time)
	// The janitor handles one tick at a time: once a second tick is
	// received, the first one has been handled.
	janitorRound := func() { tick <- time.Time{}; tick <- time.Time{} }
	p := newHookedPool(t, opts, pool.Hooks{Tick: tick})
	require.Equal(t, 0, p.Stats().Open, "nothing is opened before the first use")
	require.NoError(t, ping(context.Background(), p))
	// The call's own dial and the MinConns top-up may both have dialled.
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n >= 1 }, 10*time.Second)

	clock.Advance(59 * time.Second)
	janitorRound()
	require.GreaterOrEqual(t, p.Stats().Open, 1, "not idle for IdleClose yet")

	clock.Advance(2 * time.Second)
	janitorRound()
	require.Equal(t, 0, p.Stats().Open)
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 0 }, 10*time.Second)
	before := p.Stats().NewConnections
	require.NoError(t, ping(context.Background(), p))
	require.Greater(t, p.Stats().NewConnections, before, "the reopened pool dialled")
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Stale moves the clock past pool.FreshFor, so that every connection is
// health-checked before it is handed out again.
func (c *fakeClock) Stale() { c.Advance(2 * pool.FreshFor) }

// TestStats_CountsALeakedConnectionUntilItIsReleased uses an injected clock:
// the leak threshold is crossed without waiting for it.
func TestStats_CountsALeakedConnectionUntilItIsReleased(t *testing.T) {
	checkGoroutines(t)
	clock := newFakeClock()
	advance := clock.Advance

	var logs testenv.SyncBuffer
	opts := testOptions(t, pgDSN(t, ""))
	opts.LeakThreshold = 30 * time.Second
	opts.Now = clock.Now
	opts.Logger = log.NewLogfmtLogger(&logs)
	p := newPool(t, opts)

	holding := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- p.Do(context.Background(), func(context.Context, *pgx.Conn) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	advance(29 * time.Second)
	s := p.Stats()
	require.Equal(t, 0, s.Leaked, "below the threshold")
	require.Equal(t, 1, s.InUse)
	require.Equal(t, 29*time.Second, s.OldestHeld)

	advance(2 * time.Second)
	s = p.Stats()
	require.Equal(t, 1, s.Leaked)
	require.Equal(t, 31*time.Second, s.OldestHeld)
	p.Stats()
	require.Equal(t, 1, strings.Count(logs.String(), "held past leak threshold"), "each leak is logged once: %s", logs.String())
	require.Contains(t, logs.String(), "held_for=31s")

	close(release)
	require.NoError(t, <-done)
	s = p.Stats()
	require.Equal(t, 0, s.Leaked)
	require.Equal(t, 0, s.InUse)
	require.Equal(t, time.Duration(0), s.OldestHeld)
}

// panicAtKey is the context key under which a call tells panicAt the point
// at which it wants a panic.
type panicAtKey struct{}

// panicAt is a pool.Hooks.At that panics at the point the call's context
// names, if any.
func panicAt(ctx context.Context, pt pool.Point) {
	if want, ok := ctx.Value(panicAtKey{}).(pool.Point); ok && want == pt {
		panic(panicValue(pt))
	}
}

func panicValue(pt pool.Point) string { return "injected panic at " + string(pt) }

// allPoints are the points of Do where a test may panic.
var allPoints = []pool.Point{pool.PointAcquired, pool.PointCheck, pool.PointChecked, pool.PointDestroy, pool.PointTrack, pool.PointHandOff, pool.PointRelease}

// TestDo_StressKeepsInvariants runs many goroutines that, in a random
// order, acquire, fail, panic (in the callback and at every point of Do
// where a panic could lose a connection), leave transactions open, lose
// their backend, time out mid-query and kill the pool's idle connections
// behind its back (so that health checks fail and attempts retry), while a
// watcher checks the pool's invariants. The clock moves at random, so some
// connections are handed out fresh and others are checked first. Bounded
// by count and time; the seed is logged.
func TestDo_StressKeepsInvariants(t *testing.T) {
	checkGoroutines(t)
	opts := testOptions(t, pgDSN(t, ""))
	opts.MaxConnections = 3
	opts.MinConnections = 1
	opts.AcquireRetries = 2
	clock := useFakeClock(&opts)
	p := newHookedPool(t, opts, pool.Hooks{At: panicAt})
	admin := pgServer(t).AdminConn(t)
	var adminMu sync.Mutex
	app := appName(t)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	const workers, perWorker = 12, 40
	deadline := time.Now().Add(20 * time.Second)
	var violations atomic.Int64
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			s := p.Stats()
			if s.InUse > s.Max || s.Open > s.Max || s.InUse < 0 || s.Idle < 0 {
				violations.Add(1)
			}
			runtime.Gosched()
		}
	}()

	var wg sync.WaitGroup
	var ok, failed, seamPanics atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w))) //nolint:gosec // G404: a reproducible test schedule, not a secret
			for range perWorker {
				if time.Now().After(deadline) {
					return
				}
				clock.Advance(time.Duration(rng.IntN(3)) * pool.FreshFor / 2)
				op := rng.IntN(9)
				if op == 7 {
					// Behind the pool's back: kill its idle connections.
					adminMu.Lock()
					_, _ = admin.Exec(context.Background(),
						"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle'", app)
					adminMu.Unlock()
					continue
				}
				timeout := 2 * time.Second
				if op == 6 {
					timeout = 20 * time.Millisecond
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				if op == 8 {
					ctx = context.WithValue(ctx, panicAtKey{}, allPoints[rng.IntN(len(allPoints))])
				}
				err := func() (err error) {
					defer func() {
						if r := recover(); r != nil {
							if v, _ := r.(string); strings.HasPrefix(v, "injected panic at ") {
								seamPanics.Add(1)
							}
							err = fmt.Errorf("recovered: %v", r)
						}
					}()
					return p.Do(ctx, func(ctx context.Context, c *pgx.Conn) error {
						switch op {
						case 0, 8:
							return c.QueryRow(ctx, "SELECT 1").Scan(new(int))
						case 1:
							return errors.New("callback failure")
						case 2:
							panic("stress panic")
						case 3:
							_, err := c.Exec(ctx, "BEGIN")
							return err
						case 4:
							_, err := c.Exec(ctx, "SELECT pg_terminate_backend(pg_backend_pid())")
							return err
						case 5:
							_, err := c.Exec(ctx, "SELECT pg_sleep(0.005)")
							return err
						default: // 6: cut off mid-query by the context
							_, err := c.Exec(ctx, "SELECT pg_sleep(1)")
							return err
						}
					})
				}()
				cancel()
				if err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(stopWatch)
	<-watchDone
	s := p.Stats()
	t.Logf("stress: %d ok, %d failed, %d panics at Do's points, stats %+v", ok.Load(), failed.Load(), seamPanics.Load(), s)
	require.Zero(t, violations.Load(), "invariant violations")
	require.Positive(t, ok.Load())
	require.Positive(t, failed.Load())
	require.Positive(t, seamPanics.Load())
	require.Positive(t, s.HealthCheckFailures, "connections killed behind the pool's back failed their health check")
	verifyNoLeaks(t, p, opts.MaxConnections)
}

// TestDo_RereadsTLSFilesForEveryNewConnection: the CA file named in the DSN
// is read when a connection is made, not once when the pool is created, so
// a renewed file is picked up without a reload. Here the file disappears,
// and the next new connection says so.
func TestDo_RereadsTLSFilesForEveryNewConnection(t *testing.T) {
	checkGoroutines(t)
	ca := testenv.NewCA(t, "poolwatch test CA")
	paths := testenv.WriteFiles(t, map[string][]byte{"ca.crt": ca.CertPEM})
	// sslmode=prefer with a root certificate: the test server has no TLS,
	// so pgx falls back to plain text, but it still loads the file.
	opts := testOptions(t, strings.Replace(pgDSN(t, ""), "sslmode=disable", "sslmode=prefer", 1)+"&sslrootcert="+paths["ca.crt"])
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	require.NoError(t, ping(context.Background(), p))

	require.NoError(t, os.Remove(paths["ca.crt"]))
	pgServer(t).TerminateBackends(t, appName(t))
	clock.Stale()
	err := ping(context.Background(), p)
	require.Error(t, err)
	require.Contains(t, err.Error(), "read TLS files")
	require.NotContains(t, err.Error(), monPass)
}
