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

	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/pool"
)

func ping(ctx context.Context, p *pool.Pool) error {
	return p.Do(ctx, func(ctx context.Context, c *pgx.Conn) error { return c.Ping(ctx) })
}

func TestFault_BackendsKilledWhileIdleAreReplaced(t *testing.T) {
	checkGoroutines(t)
	opts := testOptions(t, pgDSN(t, ""))
	p := newPool(t, opts)
	fill(t, p, 2)
	require.Equal(t, 2, pgServer(t).TerminateBackends(t, appName(t)))

	require.NoError(t, ping(context.Background(), p))
	s := p.Stats()
	require.Equal(t, uint64(2), s.HealthCheckFailures, "both dead idle connections were checked and destroyed")
	require.Equal(t, 1, s.Open)
	verifyNoLeaks(t, p, 1)
}

func TestFault_BackendKilledDuringHealthCheckIsDestroyedAndRetried(t *testing.T) {
	checkGoroutines(t)
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	opts := testOptions(t, pgDSN(t, proxy.Addr))
	opts.MaxConns = 1
	opts.HealthCheckTimeout = 5 * time.Second
	p := newPool(t, opts)
	fill(t, p, 1)

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
	require.Eventually(t, func() bool { return p.Stats().InUse == 1 }, 5*time.Second, time.Millisecond)
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
	p := newPool(t, testOptions(t, dsn))
	fill(t, p, 2)

	pg.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err := ping(ctx, p)
	cancel()
	require.Error(t, err, "the server is down")
	require.Contains(t, err.Error(), t.Name())
	s := p.Stats()
	require.Equal(t, 0, s.InUse)
	require.Equal(t, 0, s.Open, "every connection to the stopped server was destroyed")

	pg.Start(t)
	require.NoError(t, ping(context.Background(), p), "recovers by itself once the server is back")
	s = p.Stats()
	require.Equal(t, 0, s.InUse)
	require.Equal(t, 1, s.Open)
	pg.WaitBackends(t, appName(t), func(n int) bool { return n == 1 }, 10*time.Second)
}

func TestFault_ConnectionsResetByTheNetworkAreReplaced(t *testing.T) {
	checkGoroutines(t)
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	p := newPool(t, testOptions(t, pgDSN(t, proxy.Addr)))
	fill(t, p, 2)
	require.Equal(t, 2, proxy.ResetAll())
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
	require.Eventually(t, func() bool { return proxy.ResetAll() > 0 }, 5*time.Second, 10*time.Millisecond)
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
	p, err := pool.New(opts)
	require.NoError(t, err)
	fill(t, p, 1)
	proxy.Blackhole(true)

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
	s := p.Stats()
	require.Equal(t, 0, s.InUse)
	require.Positive(t, s.HealthCheckFailures)

	// Closing while a dial is hung in the blackhole returns promptly and
	// leaves no goroutine behind (checked by goleak above).
	go func() { _ = ping(context.Background(), p) }()
	require.Eventually(t, func() bool { return p.Stats().Open > 0 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_ = p.Close(ctx)
	require.Less(t, time.Since(start), 3*time.Second)
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
	require.Equal(t, uint64(1050), s.AcquireRetries)
	require.Equal(t, 0, s.Open)
}

func TestPgBouncer_HealthCheckUsesShowVersionAndDoesNotChurn(t *testing.T) {
	checkGoroutines(t)
	dsn := bouncer(t).DSN(monUser, monPass, "pgbouncer")
	opts := testOptions(t, dsn)
	opts.Kind = pool.KindPgBouncer
	opts.StatementTimeout = time.Second // must not be sent to the console
	opts.LockTimeout = time.Second
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
	// pgxpool's default would ping a connection idle for more than 1 s,
	// fail on the console, and dial again.
	time.Sleep(1100 * time.Millisecond)
	_, err = show()
	require.NoError(t, err)
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

func TestBackoff_DoublesUpToTheCap(t *testing.T) {
	// Exercised through the pool: with a 50 ms base and 2 retries, a call
	// against a refused port takes at least 50+100 ms.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	opts := testOptions(t, "postgres://u@127.0.0.1:"+strconv.Itoa(port)+"/db?sslmode=disable")
	opts.AcquireRetries = 2
	opts.RetryBackoff = 50 * time.Millisecond
	p := newPool(t, opts)
	start := time.Now()
	require.Error(t, ping(context.Background(), p))
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
}
