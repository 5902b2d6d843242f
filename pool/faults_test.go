package pool_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/pool"
)

func ping(ctx context.Context, p *pool.Pool) error {
	return p.Do(ctx, func(ctx context.Context, c *pgx.Conn) error { return c.Ping(ctx) })
}

func TestFault_BackendsKilledWhileIdleAreReplaced(t *testing.T) {
	checkGoroutines(t)
	opts := testOptions(t, pgDSN(t, ""))
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	fill(t, p, 2)
	require.Equal(t, 2, pgServer(t).TerminateBackends(t, appName(t)))
	clock.Stale()

	require.NoError(t, ping(context.Background(), p))
	s := p.Stats()
	require.Equal(t, uint64(2), s.HealthCheckFailures, "both dead idle connections were checked and destroyed")
	waitStats(t, p, "the dead connections are gone, the new one stays", func(s pool.Stats) bool { return s.Open == 1 })
	verifyNoLeaks(t, p, 1)
}

func TestFault_BackendKilledDuringHealthCheckIsDestroyedAndRetried(t *testing.T) {
	checkGoroutines(t)
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	opts := testOptions(t, pgDSN(t, proxy.Addr))
	opts.MaxConnections = 1
	opts.HealthCheckTimeout = 5 * time.Second
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	fill(t, p, 1)
	clock.Stale()

	// A ping takes well under a millisecond; stretch it so the kill lands
	// inside it.
	proxy.SetLatency(300 * time.Millisecond)
	called := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
			called <- struct{}{}
			return c.Ping(ctx)
		})
	}()
	// In use while no callback has run: the health check is in flight.
	testenv.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
		s := p.Stats()
		return s.InUse == 1, fmt.Sprintf("in use %d", s.InUse)
	})
	require.Empty(t, called)
	require.Equal(t, 1, pgServer(t).TerminateBackends(t, appName(t)))
	proxy.SetLatency(0)

	require.NoError(t, <-done)
	require.Len(t, called, 1)
	s := p.Stats()
	require.Equal(t, uint64(1), s.HealthCheckFailures)
	require.Equal(t, uint64(1), s.AcquireRetries)
	verifyNoLeaks(t, p, 1)
}

func TestFault_PostgresStoppedAndRestarted(t *testing.T) {
	checkGoroutines(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, monUser, monPass, "LOGIN", "IN ROLE pg_monitor")
	dsn := fmt.Sprintf("postgres://%s:%s@%s:%d/postgres?sslmode=disable&application_name=%s", monUser, monPass, pg.Host, pg.Port, appName(t))
	opts := testOptions(t, dsn)
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	fill(t, p, 2)

	pg.Stop(t)
	clock.Stale()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err := ping(ctx, p)
	cancel()
	require.Error(t, err, "the server is down")
	require.Contains(t, err.Error(), t.Name())
	waitStats(t, p, "every connection to the stopped server was destroyed", func(s pool.Stats) bool { return s.InUse == 0 && s.Open == 0 })

	pg.Start(t)
	require.NoError(t, ping(context.Background(), p), "recovers by itself once the server is back")
	waitStats(t, p, "one connection, idle", func(s pool.Stats) bool { return s.InUse == 0 && s.Open == 1 })
	pg.WaitBackends(t, appName(t), func(n int) bool { return n == 1 }, 10*time.Second)
}

func TestFault_ConnectionsResetByTheNetworkAreReplaced(t *testing.T) {
	checkGoroutines(t)
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	opts := testOptions(t, pgDSN(t, proxy.Addr))
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	fill(t, p, 2)
	require.Equal(t, 2, proxy.ResetAll())
	clock.Stale()
	require.NoError(t, ping(context.Background(), p))

	// A reset in the middle of a callback's query: the callback fails and
	// its connection is destroyed.
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
			close(started)
			_, err := c.Exec(ctx, "SELECT pg_sleep(10)")
			return err
		})
	}()
	<-started
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		return proxy.ResetAll() > 0, "no connection through the proxy to reset"
	})
	require.Error(t, <-done)
	require.NoError(t, ping(context.Background(), p))
	verifyNoLeaks(t, p, 2)
}

func TestFault_BlackholedTargetIsBoundedByTheTimeout(t *testing.T) {
	checkGoroutines(t)
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	opts := testOptions(t, pgDSN(t, proxy.Addr))
	opts.ConnectTimeout = 300 * time.Millisecond
	opts.HealthCheckTimeout = 300 * time.Millisecond
	opts.RetryBackoff = 10 * time.Millisecond
	clock := useFakeClock(&opts)
	p, err := pool.New(opts)
	require.NoError(t, err)
	fill(t, p, 1)
	proxy.Blackhole(true)
	clock.Stale()

	for _, budget := range []time.Duration{200 * time.Millisecond, 1500 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		start := time.Now()
		err := ping(ctx, p)
		elapsed := time.Since(start)
		cancel()
		require.Error(t, err)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, elapsed, budget+time.Second, "bounded by the caller's context")
	}
	waitStats(t, p, "nothing in use", func(s pool.Stats) bool { return s.InUse == 0 })
	require.Positive(t, p.Stats().HealthCheckFailures)

	// Closing while a dial is hung in the blackhole returns by Close's
	// deadline; the dial ends within ConnectTimeout in the background and
	// leaves no goroutine behind (checked by goleak above).
	pinged := make(chan error, 1)
	go func() { pinged <- ping(context.Background(), p) }()
	testenv.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
		s := p.Stats()
		return s.Open > 0, fmt.Sprintf("open %d", s.Open)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = p.Close(ctx)
	elapsed := time.Since(start)
	t.Logf("Close with a 100ms deadline and a dial in a blackhole returned after %v", elapsed)
	require.Less(t, elapsed, 100*time.Millisecond+time.Second)
	require.Error(t, <-pinged)
	<-p.Cleaned()
	proxy.Blackhole(false)
}

func TestFault_ThousandFailedCallsAgainstAStoppedTargetLeaveNothingBehind(t *testing.T) {
	checkGoroutines(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens here now
	opts := testOptions(t, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&connect_timeout=1", monUser, monPass, addr))
	opts.AcquireRetries = 1
	opts.RetryBackoff = 0
	p := newPool(t, opts)

	call := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		require.Error(t, ping(ctx, p))
	}
	for range 50 {
		call()
	}
	base := testenv.Baseline(t)
	for range 1000 {
		call()
	}
	after := testenv.SettleAt(t, base)
	t.Logf("after warm-up: %d goroutines, %d fds; after 1000 failures: %d goroutines, %d fds", base.Goroutines, base.FDs, after.Goroutines, after.FDs)
	s := p.Stats()
	require.Equal(t, uint64(1050), s.AcquireErrors)
	require.Equal(t, uint64(1), s.AcquireRetries, "only the first failed call retried: the target was down for the others")
	require.Equal(t, 0, s.Open)
}

// TestDo_ATargetThatIsDownGetsOneAttemptPerCallAndCostsNothingBetween: the
// first call that finds nothing listening makes its retries; while the
// target stays down, each call makes one attempt and the pool drops its
// inner pool afterwards (no pgxpool, no goroutine of it); once the target
// answers, the retries are back.
func TestDo_ATargetThatIsDownGetsOneAttemptPerCallAndCostsNothingBetween(t *testing.T) {
	checkGoroutines(t)
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	opts := testOptions(t, pgDSN(t, proxy.Addr))
	opts.AcquireRetries = 2
	opts.RetryBackoff = time.Millisecond
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	require.NoError(t, ping(context.Background(), p))
	proxy.Refuse(true)
	proxy.ResetAll()
	clock.Stale() // the idle connection gets its health check

	require.Error(t, ping(context.Background(), p))
	require.Equal(t, uint64(2), p.Stats().AcquireRetries, "the first failing call retries")
	for range 5 {
		require.Error(t, ping(context.Background(), p))
	}
	require.Equal(t, uint64(2), p.Stats().AcquireRetries, "the target was down at the last call: one attempt each")
	waitStats(t, p, "nothing held", func(s pool.Stats) bool { return s.Open == 0 })
	require.False(t, p.HasInner(), "a down target costs no inner pool between calls")

	proxy.Refuse(false)
	require.NoError(t, ping(context.Background(), p), "up again at the next call")
	proxy.Refuse(true)
	proxy.ResetAll()
	clock.Stale()
	require.Error(t, ping(context.Background(), p))
	require.Equal(t, uint64(4), p.Stats().AcquireRetries, "up at the last call: the retries again")
	proxy.Refuse(false)
	verifyNoLeaks(t, p, 1)
}

// TestPgBouncer_HealthCheckUsesShowVersionOverTheSimpleProtocol: through a
// proxy that counts the messages, every query to the console is a simple
// 'Q' message, none is a Parse, a stale connection is checked with one
// query (SHOW VERSION, which the console accepts) and a fresh one with
// none, and the connection is reused throughout.
func TestPgBouncer_HealthCheckUsesShowVersionOverTheSimpleProtocol(t *testing.T) {
	checkGoroutines(t)
	b := bouncer(t)
	proxy := testenv.StartProxy(t, b.Addr())
	dsn, err := proxy.DSN(b.DSN(monUser, monPass, "pgbouncer"))
	require.NoError(t, err)
	opts := testOptions(t, dsn)
	opts.Kind = config.KindPgBouncer
	opts.StatementTimeout = time.Second // must not be sent to the console
	opts.LockTimeout = time.Second
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	show := func() (string, error) {
		var version string
		err := p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
			return c.QueryRow(ctx, "SHOW VERSION").Scan(&version)
		})
		return version, err
	}
	v, err := show()
	require.NoError(t, err)
	require.Contains(t, v, "PgBouncer")

	proxy.ResetCounts()
	_, err = show()
	require.NoError(t, err)
	require.Equal(t, int64(1), proxy.QueryCount(), "fresh: the callback's query only")

	clock.Stale()
	proxy.ResetCounts()
	_, err = show()
	require.NoError(t, err)
	require.Equal(t, int64(2), proxy.QueryCount(), "stale: the health check, then the callback's query")
	require.Zero(t, proxy.ParseCount(), "no extended protocol on the console")
	s := p.Stats()
	require.Equal(t, uint64(1), s.NewConnections, "the console connection was reused")
	require.Equal(t, uint64(0), s.HealthCheckFailures)

	var apps []string
	require.NoError(t, p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
		rows, err := c.Query(ctx, "SHOW CLIENTS")
		if err != nil {
			return err
		}
		defer rows.Close()
		idx := -1
		for i, fd := range rows.FieldDescriptions() {
			if fd.Name == "application_name" {
				idx = i
			}
		}
		for rows.Next() {
			vals := rows.RawValues()
			if idx >= 0 {
				apps = append(apps, string(vals[idx]))
			}
		}
		return rows.Err()
	}))
	require.Contains(t, apps, "poolwatch")
}

// TestDo_WaitsTheBackoffBeforeEachRetry: the waits between attempts, as
// Do asks for them (the sleep is injected, so nothing is timed).
func TestDo_WaitsTheBackoffBeforeEachRetry(t *testing.T) {
	checkGoroutines(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close()) // nothing listens here now: every dial is refused
	opts := testOptions(t, "postgres://u@127.0.0.1:"+strconv.Itoa(port)+"/db?sslmode=disable")
	opts.AcquireRetries = 5
	opts.RetryBackoff = 800 * time.Millisecond
	var waits []time.Duration
	p := newHookedPool(t, opts, pool.Hooks{Sleep: func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		return ctx.Err()
	}})
	require.Error(t, ping(context.Background(), p))
	ms := time.Millisecond
	require.Equal(t, []time.Duration{800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms}, waits)
	require.Equal(t, uint64(5), p.Stats().AcquireRetries)
}
