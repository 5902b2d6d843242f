package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// verifyNoLeaks checks, after every later-registered cleanup (proxy Close,
// connection Close) has run, that the test left no goroutine behind.
// It starts the shared cluster first, so that its process waiter is not
// taken for a leak.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	sharedPG(t)
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// proxied starts a proxy to the shared cluster and returns it with a
// superuser DSN through it (simple protocol, the given application_name).
func proxied(t *testing.T, app string) (*Proxy, string, *Postgres) {
	t.Helper()
	pg := sharedPG(t)
	p := StartProxy(t, pg.Addr())
	dsn, err := p.DSN(pg.DSN(pg.SuperUser, pg.SuperPassword, "postgres") + "&application_name=" + app)
	require.NoError(t, err)
	return p, dsn, pg
}

func TestProxy_CountsQueryAndParseMessagesOfRealConnections(t *testing.T) {
	verifyNoLeaks(t)
	p, dsn, _ := proxied(t, "count")
	ctx := context.Background()

	simple := connect(t, dsn+"&default_query_exec_mode=simple_protocol")
	require.Equal(t, 1, p.ActiveConns())
	require.Zero(t, p.QueryCount(), "pgx sends no query while connecting")
	for i := 0; i < 25; i++ {
		var n int
		require.NoError(t, simple.QueryRow(ctx, "SELECT $1::int", i).Scan(&n))
		require.Equal(t, i, n)
	}
	// One query far bigger than a proxy chunk (32 KiB).
	var n int
	require.NoError(t, simple.QueryRow(ctx, "SELECT length('"+strings.Repeat("Q", 300_000)+"')").Scan(&n))
	require.Equal(t, 300_000, n)
	require.Equal(t, int64(26), p.QueryCount())
	require.Zero(t, p.ParseCount())

	// Extended protocol (pgx's default statement cache): each distinct
	// statement is parsed once, in a pipelined batch that spans chunks.
	p.ResetCounts()
	require.Zero(t, p.QueryCount())
	ext := connect(t, dsn)
	for i := 0; i < 10; i++ {
		require.NoError(t, ext.QueryRow(ctx, "SELECT $1::int", i).Scan(&n))
	}
	require.Equal(t, int64(1), p.ParseCount())
	batch := &pgx.Batch{}
	pad := strings.Repeat("x", 3000)
	for i := 0; i < 50; i++ {
		batch.Queue(fmt.Sprintf("SELECT $1::int + %d /* %s */", i, pad), 1)
	}
	require.NoError(t, ext.SendBatch(ctx, batch).Close())
	require.Equal(t, int64(51), p.ParseCount())
	require.Zero(t, p.QueryCount())

	// sslmode=prefer: pgx sends an SSLRequest, the server answers 'N', pgx
	// retries in plain text; the counter follows.
	p.ResetCounts()
	pref := connect(t, strings.Replace(dsn, "sslmode=disable", "sslmode=prefer", 1)+"&default_query_exec_mode=simple_protocol")
	_, err := pref.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
	require.Equal(t, int64(1), p.QueryCount())
}

func TestProxy_CancelRequestPassesThroughAndIsNotCounted(t *testing.T) {
	verifyNoLeaks(t)
	app := uniqueName(t, "cancel")
	p, dsn, pg := proxied(t, app)
	c := connect(t, dsn+"&default_query_exec_mode=simple_protocol")
	ctx := context.Background()

	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "SELECT pg_sleep(30)")
		errc <- err
	}()
	Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		n := pg.QueryInt(t, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'", app)
		return n == 1, fmt.Sprintf("the query never became active: %d active", n)
	})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, c.PgConn().CancelRequest(cctx))
	select {
	case err := <-errc:
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "57014", pgErr.Code, "query_canceled")
	case <-time.After(10 * time.Second):
		t.Fatal("query not cancelled within 10 s")
	}
	require.Equal(t, int64(1), p.QueryCount())
}

func TestProxy_LatencyDelaysEachDirection(t *testing.T) {
	verifyNoLeaks(t)
	p, dsn, _ := proxied(t, "latency")
	c := connect(t, dsn+"&default_query_exec_mode=simple_protocol")
	ctx := context.Background()
	rtt := func() time.Duration {
		start := time.Now()
		_, err := c.Exec(ctx, "SELECT 1")
		require.NoError(t, err)
		return time.Since(start)
	}
	base := rtt()
	for i := 0; i < 2; i++ {
		base = min(base, rtt())
	}
	const d = 100 * time.Millisecond
	p.SetLatency(d)
	slow := rtt()
	require.GreaterOrEqual(t, slow, 2*d, "a round trip crosses the proxy twice")
	p.SetLatency(0)
	fast := rtt()
	for i := 0; i < 4 && fast >= 2*d; i++ { // a loaded machine can stall one round trip
		fast = min(fast, rtt())
	}
	require.Less(t, fast, 2*d, "latency off again")
	t.Logf("round trip: base %v, with %v latency %v, off again %v", base, d, slow, fast)
}

func TestProxy_BlackholeTimesOutConnectsAndHoldsLiveTraffic(t *testing.T) {
	verifyNoLeaks(t)
	p, dsn, _ := proxied(t, "blackhole")
	ctx := context.Background()
	live := connect(t, dsn+"&default_query_exec_mode=simple_protocol")

	p.Blackhole(true)
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	cfg.ConnectTimeout = 500 * time.Millisecond
	start := time.Now()
	_, err = pgx.ConnectConfig(ctx, cfg)
	elapsed := time.Since(start)
	require.Error(t, err)
	require.True(t, pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded), "timeout error, got %v", err)
	require.GreaterOrEqual(t, elapsed, 450*time.Millisecond)
	require.Less(t, elapsed, 5*time.Second)
	// The abandoned blackholed connection leaves the count once its client
	// has closed it.
	Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		n := p.ActiveConns()
		return n == 1, fmt.Sprintf("only the live connection should be left, have %d", n)
	})

	// A live connection's query is held, not lost...
	done := make(chan error, 1)
	go func() {
		_, err := live.Exec(ctx, "SELECT 1")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("query answered through a blackhole: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// ...and delivered once the blackhole lifts.
	p.Blackhole(false)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("held query not delivered after the blackhole lifted")
	}
	fresh := connect(t, dsn)
	_, err = fresh.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
}

func TestProxy_ResetAllBreaksLiveConnections(t *testing.T) {
	verifyNoLeaks(t)
	app := uniqueName(t, "reset")
	p, dsn, pg := proxied(t, app)
	ctx := context.Background()
	a := connect(t, dsn)
	b := connect(t, dsn)
	require.Equal(t, 2, pg.WaitBackends(t, app, func(n int) bool { return n == 2 }, 5*time.Second))
	require.Equal(t, 2, p.ActiveConns())

	require.Equal(t, 2, p.ResetAll())
	require.Equal(t, 0, p.ActiveConns())
	for _, c := range []*pgx.Conn{a, b} {
		_, err := c.Exec(ctx, "SELECT 1")
		require.Error(t, err)
		require.True(t, c.IsClosed())
	}
	// The server side was cut too.
	pg.WaitBackends(t, app, func(n int) bool { return n == 0 }, 5*time.Second)
	// pgx answers a broken connection by dialing a CancelRequest in the
	// background (pgconn asyncClose); that one ends by itself.
	Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		n := p.ActiveConns()
		return n == 0, fmt.Sprintf("%d proxied connections left", n)
	})

	c := connect(t, dsn)
	_, err := c.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
}

func TestProxy_RefuseClosesNewConnections(t *testing.T) {
	verifyNoLeaks(t)
	p, dsn, _ := proxied(t, "refuse")
	p.Refuse(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, dsn)
	require.Error(t, err)
	require.False(t, pgconn.Timeout(err), "closed by the proxy, not timed out: %v", err)
	require.NoError(t, ctx.Err())
	p.Refuse(false)
	c := connect(t, dsn)
	_, err = c.Exec(context.Background(), "SELECT 1")
	require.NoError(t, err)
}

func TestProxy_CloseEndsEveryGoroutine(t *testing.T) {
	pg := sharedPG(t)
	ignore := goleak.IgnoreCurrent()
	p, err := NewProxy(pg.Addr())
	require.NoError(t, err)
	dsn, err := p.DSN(pg.DSN(pg.SuperUser, pg.SuperPassword, "postgres"))
	require.NoError(t, err)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	p.SetLatency(time.Hour) // a chunk parked in a timer
	execDone := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "SELECT 1")
		execDone <- err
	}()
	p.Blackhole(true)
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	cfg.ConnectTimeout = 200 * time.Millisecond
	_, err = pgx.ConnectConfig(ctx, cfg) // a blackholed conn, abandoned by its client
	require.Error(t, err)

	p.Close()
	p.Close() // idempotent
	require.Equal(t, 0, p.ActiveConns())
	select {
	case err := <-execDone:
		require.Error(t, err, "the proxy closed the connection under the query")
	case <-time.After(10 * time.Second):
		t.Fatal("query not ended by proxy Close")
	}
	_ = c.Close(ctx)
	goleak.VerifyNone(t, ignore)
}
