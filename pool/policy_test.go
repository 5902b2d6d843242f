package pool_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/pool"
)

// TestDo_HandsOutAConnectionThatSucceededWithinFreshForWithoutAHealthCheck
// counts, through a proxy, the queries each call sends: the callback's ping,
// plus the health check's when the connection's last success is FreshFor
// old or more.
func TestDo_HandsOutAConnectionThatSucceededWithinFreshForWithoutAHealthCheck(t *testing.T) {
	checkGoroutines(t)
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	opts := testOptions(t, pgDSN(t, proxy.Addr))
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	queries := func(fn func(context.Context, *pgx.Conn) error) int64 {
		t.Helper()
		proxy.ResetCounts()
		err := p.Do(context.Background(), fn)
		if err != nil && err.Error() != "callback failed" {
			require.NoError(t, err)
		}
		return proxy.QueryCount()
	}
	pingFn := func(ctx context.Context, c *pgx.Conn) error { return c.Ping(ctx) }

	require.Equal(t, int64(1), queries(pingFn), "a new connection: its login was its round trip")
	clock.Advance(pool.FreshFor - time.Millisecond)
	require.Equal(t, int64(1), queries(pingFn), "used successfully just under FreshFor ago")
	clock.Advance(pool.FreshFor)
	require.Equal(t, int64(2), queries(pingFn), "FreshFor old: checked first")

	// A callback that fails does not make the connection fresh; the
	// check before it did.
	clock.Advance(pool.FreshFor)
	require.Equal(t, int64(1), queries(func(context.Context, *pgx.Conn) error { return errors.New("callback failed") }), "checked, then a callback that sent nothing")
	clock.Advance(pool.FreshFor - time.Millisecond)
	require.Equal(t, int64(1), queries(pingFn), "the check's success counts")
	require.Equal(t, uint64(1), p.Stats().NewConnections)
}

// TestDo_AFreshConnectionWhoseBackendWasTerminatedIsCheckedNotHandedOut:
// a connection that succeeded within FreshFor but whose server ended the
// session since (pg_terminate_backend sends an error and closes the socket)
// is not handed out on freshness alone: the socket shows it, the health
// check fails, the connection is destroyed and the call gets a new one. The
// callback's query succeeds; without the socket check it would meet the
// dead connection.
func TestDo_AFreshConnectionWhoseBackendWasTerminatedIsCheckedNotHandedOut(t *testing.T) {
	checkGoroutines(t)
	opts := testOptions(t, pgDSN(t, ""))
	opts.MaxConnections = 1
	clock := useFakeClock(&opts)
	p := newPool(t, opts)
	pingFn := func(ctx context.Context, c *pgx.Conn) error { return c.Ping(ctx) }
	require.NoError(t, p.Do(context.Background(), pingFn))

	require.Equal(t, 1, pgServer(t).TerminateBackends(t, appName(t)))
	// The backend is gone when pg_stat_activity no longer lists it; its
	// error and end of stream are then in the agent's socket.
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 0 }, 10*time.Second)
	clock.Advance(pool.FreshFor / 2) // still fresh by the clock

	require.NoError(t, p.Do(context.Background(), pingFn), "the callback never sees the dead connection")
	s := p.Stats()
	require.Equal(t, uint64(1), s.HealthCheckFailures, "the socket sent it to its health check, which failed")
	require.Equal(t, uint64(2), s.NewConnections)
	require.Equal(t, uint64(0), s.AcquireErrors)
}

// TestDo_ReplacesADestroyedConnectionInTheBackgroundUpToMinConns: with
// MinConns 1, a connection destroyed after a callback (left in a
// transaction) is replaced by a dial that the call does not wait for: the
// call returns while the replacement's dial is held up in its password
// read.
func TestDo_ReplacesADestroyedConnectionInTheBackgroundUpToMinConns(t *testing.T) {
	checkGoroutines(t)
	opts := testOptions(t, pgDSNWithoutPassword(t))
	opts.MinConnections = 1
	opts.MaxConnections = 1
	var reads atomic.Int64
	var hold atomic.Bool
	held := make(chan struct{})
	unhold := make(chan struct{})
	p := newHookedPool(t, opts, pool.Hooks{Password: func(ctx context.Context) (string, error) {
		reads.Add(1)
		if hold.Load() {
			close(held)
			select {
			case <-unhold:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		return monPass, nil
	}})
	require.NoError(t, ping(context.Background(), p))
	waitStats(t, p, "one idle connection", func(s pool.Stats) bool { return s.Open == 1 && s.Idle == 1 })
	require.Equal(t, int64(1), reads.Load())

	hold.Store(true)
	require.NoError(t, p.Do(context.Background(), func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "BEGIN")
		return err
	}), "the call returns while its replacement is being dialled")
	<-held
	require.Equal(t, int64(2), reads.Load())
	close(unhold)
	waitStats(t, p, "replaced", func(s pool.Stats) bool { return s.Open == 1 && s.Idle == 1 && s.InUse == 0 })
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 1 }, 10*time.Second)
	require.Equal(t, uint64(2), p.Stats().NewConnections)

	require.NoError(t, ping(context.Background(), p))
	require.Equal(t, uint64(2), p.Stats().NewConnections, "the call used the replacement")
}

// TestStats_LogsLeaksWithoutHoldingThePoolsLock: the logger itself asks
// the pool for its stats, from another goroutine, while it logs the leak
// found by Stats and then by the janitor. Were the pool's lock held while
// logging, that Stats would block until the logger gave up.
func TestStats_LogsLeaksWithoutHoldingThePoolsLock(t *testing.T) {
	checkGoroutines(t)
	opts := testOptions(t, pgDSN(t, ""))
	opts.LeakThreshold = 30 * time.Second
	clock := useFakeClock(&opts)
	var p *pool.Pool
	var logs testenv.SyncBuffer
	var blocked atomic.Int64
	opts.Logger = log.LoggerFunc(func(kv ...any) error {
		done := make(chan struct{})
		go func() { p.Stats(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			blocked.Add(1)
		}
		return log.NewLogfmtLogger(&logs).Log(kv...)
	})
	tick := make(chan time.Time)
	p = newHookedPool(t, opts, pool.Hooks{Tick: tick})

	holding := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 2)
	hold := func() {
		done <- p.Do(context.Background(), func(context.Context, *pgx.Conn) error {
			holding <- struct{}{}
			<-release
			return nil
		})
	}
	go hold()
	<-holding
	clock.Advance(31 * time.Second)
	require.Equal(t, 1, p.Stats().Leaked) // logs the first leak
	go hold()
	<-holding
	clock.Advance(31 * time.Second)
	tick <- time.Time{} // the janitor logs the second
	tick <- time.Time{}
	close(release)
	require.NoError(t, <-done)
	require.NoError(t, <-done)
	require.Zero(t, blocked.Load(), "Stats blocked while the pool logged")
	require.Equal(t, 2, strings.Count(logs.String(), "held past leak threshold"), logs.String())
}
