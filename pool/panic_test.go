package pool_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/pool"
)

// TestDo_PanicAtAnyPointLosesNoConnection panics at each point of Do
// between pgxpool handing out a connection and its release, against a real
// server. The panic reaches the caller; the connection is released (if the
// panic came after it was healthy and tracked) or destroyed, never left
// acquired; the pool goes on with the one connection MinConns asks for; and
// Close returns within its bound, leaving nothing behind.
func TestDo_PanicAtAnyPointLosesNoConnection(t *testing.T) {
	for _, pt := range allPoints {
		t.Run(string(pt), func(t *testing.T) {
			checkGoroutines(t)
			opts := testOptions(t, pgDSN(t, ""))
			opts.MinConnections = 1
			opts.MaxConnections = 2
			clock := useFakeClock(&opts)
			p := newHookedPool(t, opts, pool.Hooks{At: panicAt})
			require.NoError(t, ping(context.Background(), p))
			pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n >= 1 }, 10*time.Second)

			// A stale connection passes every point on its way to the
			// callback; one whose backend is gone also passes destroy.
			clock.Stale()
			if pt == pool.PointDestroy {
				require.Positive(t, pgServer(t).TerminateBackends(t, appName(t)))
			}
			called := false
			ctx := context.WithValue(context.Background(), panicAtKey{}, pt)
			require.PanicsWithValue(t, panicValue(pt), func() {
				_ = p.Do(ctx, func(ctx context.Context, c *pgx.Conn) error {
					called = true
					return c.Ping(ctx)
				})
			})
			require.Equal(t, pt == pool.PointRelease, called, "only release comes after the callback")
			s := p.Stats()
			require.Zero(t, s.InUse, "the connection was released or destroyed")
			require.Zero(t, s.Leaked)
			// One connection, as MinConns says: the one released, or the
			// replacement of the one destroyed.
			waitStats(t, p, "one idle connection", func(s pool.Stats) bool { return s.Open == 1 && s.Idle == 1 })
			pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 1 }, 10*time.Second)

			// The pool goes on.
			require.NoError(t, ping(context.Background(), p))

			if pt == pool.PointDestroy {
				// Destroying a connection that is still open: one that a
				// callback left inside a transaction.
				var pid uint32
				require.PanicsWithValue(t, panicValue(pt), func() {
					_ = p.Do(ctx, func(ctx context.Context, c *pgx.Conn) error {
						pid = c.PgConn().PID()
						_, err := c.Exec(ctx, "BEGIN")
						return err
					})
				})
				require.Zero(t, p.Stats().InUse)
				admin := pgServer(t).AdminConn(t)
				testenv.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
					var n int
					err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", int64(pid)).Scan(&n)
					return err == nil && n == 0, fmt.Sprintf("the destroyed connection's backend %d: %d rows, err %v", pid, n, err)
				})
				waitStats(t, p, "replaced", func(s pool.Stats) bool { return s.Open == 1 && s.Idle == 1 })
				pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 1 }, 10*time.Second)
			}

			took, err := closeWithin(t, p, time.Second)
			require.NoError(t, err)
			t.Logf("Close after a panic at %s took %v", pt, took)
			pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 0 }, 10*time.Second)
		})
	}
}

// panickingTracer panics in the first query named sql it sees once armed.
type panickingTracer struct {
	sql   string
	armed *atomic.Bool
}

func (tr panickingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if data.SQL == tr.sql && tr.armed.CompareAndSwap(true, false) {
		panic("tracer panic in " + tr.sql)
	}
	return ctx
}

func (panickingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestDo_PanickingTracerInThePgBouncerHealthCheckLosesNoConnection is the
// reported case: a query tracer that panics inside the PgBouncer-kind
// health check, that is inside pgx's own code. It used to leave the
// connection acquired for ever (in use 1, leaked 0) and Close blocked.
func TestDo_PanickingTracerInThePgBouncerHealthCheckLosesNoConnection(t *testing.T) {
	checkGoroutines(t)
	opts := testOptions(t, bouncer(t).DSN(monUser, monPass, "pgbouncer"))
	opts.Kind = config.KindPgBouncer
	opts.MinConnections = 1
	clock := useFakeClock(&opts)
	var armed atomic.Bool
	p := newHookedPool(t, opts, pool.Hooks{Configure: func(cfg *pgxpool.Config) {
		cfg.ConnConfig.Tracer = panickingTracer{sql: "SHOW VERSION", armed: &armed}
	}})
	show := func() error {
		return p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, "SHOW STATS")
			return err
		})
	}
	require.NoError(t, show())

	clock.Stale() // the next call runs the health check, SHOW VERSION
	armed.Store(true)
	require.PanicsWithValue(t, "tracer panic in SHOW VERSION", func() { _ = show() })
	s := p.Stats()
	require.Zero(t, s.InUse)
	require.Zero(t, s.Leaked)
	require.Equal(t, uint64(0), s.HealthCheckFailures, "a panic is not a failed check")

	require.NoError(t, show(), "the pool goes on")
	took, err := closeWithin(t, p, time.Second)
	require.NoError(t, err)
	t.Logf("Close after the tracer panic took %v", took)
}
