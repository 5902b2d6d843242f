package scrape

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
)

// pipelineConsole connects to the console of b for one test.
func pipelineConsole(t *testing.T, b *testenv.PgBouncer) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(context.Background(), consoleQuerier(t, b).cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// countRows is a mapping that counts rows and checks a column is there.
func countRows(n *int, col string) func(rowSource) error {
	return func(src rowSource) error {
		if colIndex(src.columns(), col)[0] < 0 {
			return missing(col)
		}
		for src.next() {
			*n++
		}
		return nil
	}
}

// usable checks that conn answers a console command on its own afterwards:
// nothing of the pipeline is left on it.
func usable(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var lists int
	require.NoError(t, showQuery(context.Background(), conn, "SHOW LISTS", countRows(&lists, "list")))
	assert.Positive(t, lists)
	assert.Equal(t, byte('I'), conn.PgConn().TxStatus())
}

func TestConsolePipeline_Live_ACommandThatFailsLeavesTheOthersAndTheConnectionIntact(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	conn := pipelineConsole(t, b)
	ctx := context.Background()
	p := newConsolePipeline(conn, []string{"SHOW POOLS", "SHOW NOSUCH", "SHOW DATABASES", "SHOW CONFIG"})

	var pools, bad, dbs, settings int
	require.NoError(t, p.run(ctx, "SHOW POOLS", countRows(&pools, "cl_active")))
	err := p.run(ctx, "SHOW NOSUCH", countRows(&bad, "x"))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "the console's own error")
	assert.Contains(t, err.Error(), "SHOW NOSUCH: ")
	assert.Contains(t, pgErr.Message, "invalid command")
	require.NoError(t, p.run(ctx, "SHOW DATABASES", countRows(&dbs, "pool_size")))
	mapErr := p.run(ctx, "SHOW CONFIG", countRows(&settings, "no_such_column"))
	require.ErrorIs(t, mapErr, errMissingColumn, "a mapping error is the command's own")
	p.close(ctx)

	assert.Equal(t, 1, pools, "the console's own pool")
	assert.Equal(t, 2, dbs, "appdb and the console")
	assert.Zero(t, bad)
	assert.False(t, conn.PgConn().IsClosed())
	usable(t, conn)
}

func TestConsolePipeline_Live_ACommandOutsideThePipelineRunsAfterTheAnswersInFlight(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	conn := pipelineConsole(t, b)
	ctx := context.Background()
	p := newConsolePipeline(conn, []string{"SHOW POOLS", "SHOW DATABASES", "SHOW STATS"})

	var pools, clients int
	require.NoError(t, p.run(ctx, "SHOW POOLS", countRows(&pools, "database")))
	// SHOW DATABASES and SHOW STATS are on the wire: they are read first.
	require.NoError(t, p.run(ctx, "SHOW CLIENTS", countRows(&clients, "ptr")))
	assert.Equal(t, 1, clients, "the agent's own connection")
	p.close(ctx)
	assert.False(t, conn.PgConn().IsClosed())
	usable(t, conn)
}

func TestConsolePipeline_Live_CloseReadsWhatIsLeftInFlight(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	conn := pipelineConsole(t, b)
	ctx := context.Background()
	p := newConsolePipeline(conn, []string{"SHOW POOLS", "SHOW DATABASES", "SHOW STATS"})
	var pools int
	require.NoError(t, p.run(ctx, "SHOW POOLS", countRows(&pools, "database")))
	p.close(ctx) // two answers unread
	assert.False(t, conn.PgConn().IsClosed())
	usable(t, conn)
}

func TestConsolePipeline_Live_AContextThatEndsMidRoundClosesTheConnectionAndFailsTheRest(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	conn := pipelineConsole(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newConsolePipeline(conn, []string{"SHOW CONFIG", "SHOW DATABASES", "SHOW STATS"})

	// The context ends while SHOW CONFIG's rows are read. Whether the rest
	// of its answer was already in the read buffer or not, the answers
	// after it are left on the wire.
	err := p.run(ctx, "SHOW CONFIG", func(src rowSource) error {
		cancel()
		for src.next() {
		}
		return nil
	})
	if err != nil {
		require.ErrorIs(t, err, context.Canceled)
	}
	for _, sql := range []string{"SHOW DATABASES", "SHOW STATS"} {
		assert.ErrorIs(t, p.run(ctx, sql, countRows(new(int), "database")), context.Canceled, sql)
	}
	p.close(ctx)
	assert.True(t, conn.PgConn().IsClosed(), "answers were left on the wire: the connection must not be reused")
}

func TestConsolePipeline_Live_AConsoleThatStopsAnsweringIsGivenUpAtTheDeadline(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	proxy := testenv.StartProxy(t, b.Addr())
	dsn, err := proxy.DSN(b.RawDSN("stats", statsPassword, "pgbouncer"))
	require.NoError(t, err)
	conn, err := pgx.ConnectConfig(context.Background(), newConnPerDo(t, dsn, pgx.QueryExecModeCacheStatement).cfg)
	require.NoError(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	require.Equal(t, 1, proxy.FreezeExisting())

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	p := newConsolePipeline(conn, []string{"SHOW POOLS", "SHOW DATABASES"})
	start := time.Now()
	err = p.run(ctx, "SHOW POOLS", countRows(new(int), "database"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 10*time.Second, "bounded by the context, not by the operating system")
	assert.ErrorIs(t, p.run(ctx, "SHOW DATABASES", countRows(new(int), "database")), context.DeadlineExceeded)
	p.close(ctx)
	assert.True(t, conn.PgConn().IsClosed())
}

func TestConsolePipeline_Live_APanicInAMappingClosesTheConnection(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	conn := pipelineConsole(t, b)
	ctx := context.Background()
	p := newConsolePipeline(conn, []string{"SHOW CONFIG", "SHOW DATABASES"})
	func() {
		defer func() { assert.NotNil(t, recover()) }()
		defer p.close(ctx)
		_ = p.run(ctx, "SHOW CONFIG", func(src rowSource) error {
			src.next()
			panic("mapping bug")
		})
	}()
	assert.True(t, conn.PgConn().IsClosed(), "the rest of the answer is on the wire")
}

func TestConsolePipeline_Live_AContextOverBeforeTheRoundSendsNothing(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	conn := pipelineConsole(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := newConsolePipeline(conn, []string{"SHOW POOLS", "SHOW DATABASES"})
	for _, sql := range []string{"SHOW POOLS", "SHOW DATABASES", "SHOW CLIENTS"} {
		err := p.run(ctx, sql, countRows(new(int), "database"))
		assert.ErrorIs(t, err, context.Canceled, sql)
		assert.Contains(t, err.Error(), sql+": ")
	}
	p.close(ctx)
	assert.False(t, conn.PgConn().IsClosed(), "nothing was sent: the connection is clean")
	usable(t, conn)
}

// TestPgBouncer_Live_PipelinedRoundMatchesCommandByCommand scrapes the same
// PgBouncer both ways, the round as it ships (its commands at once) and
// one command at a time, and compares what they map.
func TestPgBouncer_Live_PipelinedRoundMatchesCommandByCommand(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	h := testenv.HoldTransactions(t, b.DSN("app", appPassword, "appdb"), 2, "holder")
	h.WaitHeld(t, 2, livePollTimeout)
	defer h.Release()
	s := newPgBouncer(config.Target{LeakThreshold: time.Hour})
	conn := pipelineConsole(t, b)
	ctx := context.Background()

	piped := s.Scrape(ctx, heldConn{conn: conn})
	require.Empty(t, piped.Errors)
	r := &bouncerRound{cfg: s.cfg, version: piped.Version}
	s.collect(ctx, func(ctx context.Context, sql string, mapFn func(rowSource) error) error {
		return showQuery(ctx, conn, sql, mapFn)
	}, ownClientOf(conn), r)
	seq := r.result()
	require.Empty(t, seq.Errors)

	assert.Equal(t, seq.Pools, piped.Pools)
	assert.Equal(t, seq.Databases, piped.Databases)
	assert.Equal(t, seq.Lists, piped.Lists)
	assert.Len(t, piped.Stats, len(seq.Stats))
	assert.NotEmpty(t, piped.Memory)
	usable(t, conn)
}
