package scrape

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run the scrapers against a real PostgreSQL 15 and a real
// PgBouncer 1.18 (internal/testenv). Server-side counts change
// asynchronously, so every assertion polls with a deadline.

const (
	livePollTimeout = 20 * time.Second
	appPassword     = "app-secret"
	statsPassword   = "stats-secret"
	agentAppName    = "poolwatch-test"
)

// connPerDo is a test-only Querier: a new connection for every Do, closed
// afterwards. It stands in for the probe pool against a real server.
type connPerDo struct {
	cfg *pgx.ConnConfig
}

func newConnPerDo(tb testing.TB, dsn string, mode pgx.QueryExecMode) *connPerDo {
	tb.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(tb, err)
	cfg.DefaultQueryExecMode = mode
	cfg.RuntimeParams["application_name"] = agentAppName
	cfg.ConnectTimeout = 5 * time.Second
	return &connPerDo{cfg: cfg}
}

func (q *connPerDo) Do(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	conn, err := pgx.ConnectConfig(ctx, q.cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	return fn(ctx, conn)
}

// pollScrape scrapes until cond holds and returns that Result, failing the
// test with the last Result after livePollTimeout.
func pollScrape(t *testing.T, s Scraper, q Querier, what string, cond func(*Result) bool) *Result {
	t.Helper()
	var last *Result
	testenv.Eventually(t, livePollTimeout, 50*time.Millisecond, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last = s.Scrape(ctx, q)
		cancel()
		return cond(last), what + "; last result:\n" + dump(last)
	})
	return last
}

func dump(r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kind %s version %s errors %v dropped %d\n", r.Kind, r.Version, r.Errors, r.PoolsDropped)
	for _, p := range r.Pools {
		fmt.Fprintf(&b, "  %+v\n", p)
	}
	for _, l := range r.Leaks {
		fmt.Fprintf(&b, "  leak %+v\n", l)
	}
	return b.String()
}

func findPool(r *Result, name string) (Pool, bool) {
	for _, p := range r.Pools {
		if p.Name == name {
			return p, true
		}
	}
	return Pool{}, false
}

// liveBouncer starts PostgreSQL and, in front of it, a transaction-mode
// PgBouncer with database appdb (pool_size 3, reserve 0) for user app, and
// a stats user for the agent.
func liveBouncer(t testing.TB, dbFragment string, opts testenv.PgBouncerOptions) (*testenv.Postgres, *testenv.PgBouncer) {
	t.Helper()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "app", appPassword, "LOGIN")
	pg.CreateRole(t, "monitor", statsPassword, "LOGIN", "IN ROLE pg_monitor")
	pg.CreateDatabase(t, "appdb")
	opts.PoolMode = "transaction"
	if opts.MaxClientConn == 0 {
		opts.MaxClientConn = 50
	}
	opts.Databases = map[string]string{"appdb": "dbname=appdb " + dbFragment}
	opts.Users = map[string]string{"app": appPassword, "stats": statsPassword}
	opts.StatsUsers = []string{"stats"}
	b := testenv.StartPgBouncer(t, pg, opts)
	return pg, b
}

// consoleQuerier connects to the console with pgx's default exec mode (the
// extended protocol): the scraper must ask for the simple protocol itself.
func consoleQuerier(t testing.TB, b *testenv.PgBouncer) *connPerDo {
	return newConnPerDo(t, b.RawDSN("stats", statsPassword, "pgbouncer"), pgx.QueryExecModeCacheStatement)
}

func TestPgBouncer_Live_PoolExhaustionShowsInUseWaitingAndMaxWait(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3 reserve_pool=0", testenv.PgBouncerOptions{})
	q := consoleQuerier(t, b)
	s := newPgBouncer(config.Target{LeakThreshold: time.Hour})

	h := testenv.HoldTransactions(t, b.DSN("app", appPassword, "appdb"), 5, "holder")
	h.WaitHeld(t, 3, livePollTimeout)

	res := pollScrape(t, s, q, "3 in use and 2 waiting", func(r *Result) bool {
		p, ok := findPool(r, "appdb/app")
		return ok && p.InUse == 3 && p.Waiting.Value == 2 && p.MaxWaitSeconds.Value > 0
	})
	require.Empty(t, res.Errors)
	assert.Equal(t, "1.18.0", res.Version, "from the console's server_version, without SHOW VERSION")
	p, _ := findPool(res, "appdb/app")
	assert.Equal(t, Pool{
		Name: "appdb/app", Database: "appdb", User: "app", Mode: "transaction",
		Min: Some(0), Max: Some(3), Reserve: Some(0),
		Open: 3, InUse: 3, Waiting: Some(2), MaxWaitSeconds: p.MaxWaitSeconds,
		States: bouncerStates([4]float64{3, 2, 0, 0}, [7]float64{3, 0, 0, 0, 0, 0, 0}),
	}, p)
	assert.True(t, p.MaxWaitSeconds.Valid)
	assert.Less(t, p.MaxWaitSeconds.Value, livePollTimeout.Seconds()+5)
	_, hasAdmin := findPool(res, "pgbouncer/pgbouncer")
	assert.False(t, hasAdmin, "the admin console is not a pool")

	// The client side: max_client_conn, and the 5 holders plus the agent.
	res = pollScrape(t, s, q, "clients pool counts the holders and the agent", func(r *Result) bool {
		c, ok := findPool(r, PoolClients)
		return ok && c.Open == 6
	})
	c, _ := findPool(res, PoolClients)
	assert.Equal(t, Pool{Name: PoolClients, Max: Some(50), Open: 6, InUse: 6}, c)

	h.Release()
	pollScrape(t, s, q, "pool drained", func(r *Result) bool {
		p, ok := findPool(r, "appdb/app")
		return ok && p.InUse == 0 && p.Waiting == Some(0) && p.MaxWaitSeconds == Some(0) && len(r.Errors) == 0
	})
	res = pollScrape(t, s, q, "clients back to the agent alone", func(r *Result) bool {
		c, ok := findPool(r, PoolClients)
		return ok && c.Open == 1
	})
	// Stats: the 5 transactions were counted, and so was their wait.
	require.NotEmpty(t, res.Stats)
	assert.Equal(t, "appdb", res.Stats[0].Database)
	assert.GreaterOrEqual(t, res.Stats[0].Transactions, 5.0)
	assert.Greater(t, res.Stats[0].ClientWaitSeconds, 0.0)
}

func TestPgBouncerAndPostgres_Live_IdleTransactionIsALeakUntilCommit(t *testing.T) {
	pg, b := liveBouncer(t, "pool_size=3 reserve_pool=0", testenv.PgBouncerOptions{})
	bq := consoleQuerier(t, b)
	bs := newPgBouncer(config.Target{LeakThreshold: time.Second})
	pq := newConnPerDo(t, pg.DSN("monitor", statsPassword, "postgres"), pgx.QueryExecModeCacheStatement)
	ps := newPostgres(config.Target{
		LeakThreshold: time.Second,
		ApplicationPools: []config.ApplicationPool{
			{Name: "leaky", ApplicationName: "leaky-*"},
			{Name: "sleepers", ApplicationName: "sleeper-*"},
		},
	})

	// A long query in flight through PgBouncer: never a leak.
	sleeperCfg, err := pgx.ParseConfig(b.DSN("app", appPassword, "appdb") + "&application_name=sleeper-app")
	require.NoError(t, err)
	sleeper, err := pgx.ConnectConfig(context.Background(), sleeperCfg)
	require.NoError(t, err)
	sleeping := make(chan error, 1)
	sleepStart := time.Now()
	go func() {
		_, err := sleeper.Exec(context.Background(), "SELECT pg_sleep(6)")
		sleeping <- err
	}()
	t.Cleanup(func() {
		<-sleeping //nolint:errcheck // the sleeper's result does not matter here
		_ = sleeper.Close(context.Background())
	})

	// A client that begins a transaction and sits idle.
	h := testenv.HoldTransactions(t, b.DSN("app", appPassword, "appdb"), 1, "leaky-app")
	h.WaitHeld(t, 1, livePollTimeout)

	res := pollScrape(t, bs, bq, "leak on pgbouncer, while the sleeper runs past the threshold", func(r *Result) bool {
		p, ok := findPool(r, "appdb/app")
		return ok && p.Leaked >= 1 && time.Since(sleepStart) > 3*time.Second
	})
	require.Empty(t, res.Errors)
	p, _ := findPool(res, "appdb/app")
	assert.Equal(t, 1.0, p.Leaked, "only the idle transaction; the running pg_sleep is not a leak")
	assert.Greater(t, p.OldestLeakSeconds, 1.0)
	require.Len(t, res.Leaks, 1)
	bl := res.Leaks[0]
	assert.Equal(t, "appdb/app", bl.Pool)
	assert.Equal(t, "leaky-app", bl.ApplicationName)
	assert.Equal(t, "app", bl.User)
	assert.Equal(t, "appdb", bl.Database)
	assert.True(t, strings.HasPrefix(bl.ClientAddr, "127.0.0.1:"), bl.ClientAddr)
	assert.Greater(t, bl.Age, time.Second)
	assert.NotZero(t, bl.PID)
	assert.Empty(t, bl.Query)

	// The same backend on PostgreSQL: in the server pool and in its
	// application pool (PgBouncer set the client's application_name on it).
	res = pollScrape(t, ps, pq, "leak on postgres", func(r *Result) bool {
		s, _ := findPool(r, PoolServer)
		a, _ := findPool(r, "leaky")
		return s.Leaked == 1 && a.Leaked == 1 && time.Since(sleepStart) > 3*time.Second
	})
	require.Empty(t, res.Errors)
	sl, _ := findPool(res, "sleepers")
	assert.Zero(t, sl.Leaked, "an active query is not a leak")
	assert.Equal(t, 1.0, sl.InUse)
	require.Len(t, res.Leaks, 1)
	pl := res.Leaks[0]
	assert.Equal(t, "leaky", pl.Pool)
	assert.Equal(t, "leaky-app", pl.ApplicationName)
	assert.Equal(t, bl.PID, pl.PID, "PgBouncer's remote_pid is the backend's pid")
	assert.Equal(t, "BEGIN", pl.QueryKeyword)
	assert.Empty(t, pl.Query, "no query text unless log_query_text is set")
	assert.Greater(t, pl.Age, time.Second)
	assert.GreaterOrEqual(t, pl.TransactionAge, pl.Age)
	assert.True(t, strings.HasPrefix(pl.ClientAddr, "127.0.0.1:"), pl.ClientAddr)
	a, _ := findPool(res, "leaky")
	assert.Greater(t, a.OldestLeakSeconds, 1.0)
	id := pl.ID

	// The same leak keeps its ID across rounds.
	res = ps.Scrape(context.Background(), pq)
	require.Len(t, res.Leaks, 1)
	assert.Equal(t, id, res.Leaks[0].ID)

	// With log_query_text, the text comes too.
	withText := newPostgres(config.Target{LeakThreshold: time.Second, LogQueryText: true})
	res = withText.Scrape(context.Background(), pq)
	require.Len(t, res.Leaks, 1)
	assert.Equal(t, "BEGIN; SELECT 1", res.Leaks[0].Query)

	h.Release() // COMMIT
	pollScrape(t, bs, bq, "leak gone on pgbouncer", func(r *Result) bool {
		p, ok := findPool(r, "appdb/app")
		return ok && p.Leaked == 0 && p.OldestLeakSeconds == 0 && len(r.Leaks) == 0 && len(r.Errors) == 0
	})
	pollScrape(t, ps, pq, "leak gone on postgres", func(r *Result) bool {
		s, _ := findPool(r, PoolServer)
		a, _ := findPool(r, "leaky")
		return s.Leaked == 0 && a.Leaked == 0 && len(r.Leaks) == 0 && len(r.Errors) == 0
	})
}

func TestPgBouncer_Live_FindsItsOwnClientRowAndSkipsIdleClients(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3 reserve_pool=0 max_db_connections=4", testenv.PgBouncerOptions{})
	s := newPgBouncer(config.Target{LeakThreshold: time.Second})
	q := consoleQuerier(t, b)

	round := func() *bouncerRound {
		r := &bouncerRound{cfg: s.cfg}
		err := q.Do(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
			cons := func(ctx context.Context, sql string, mapFn func(rowSource) error) error {
				return showQuery(ctx, conn, sql, mapFn)
			}
			r.version = s.version(ctx, conn.PgConn().ParameterStatus("server_version"), conn.PgConn(), cons, r)
			s.collect(ctx, cons, ownClientOf(conn), r)
			return nil
		})
		require.NoError(t, err)
		require.Empty(t, r.errors)
		return r
	}

	// No server linked to a client: SHOW CLIENTS is not sent.
	r := round()
	assert.False(t, r.clientsRan)

	h := testenv.HoldTransactions(t, b.DSN("app", appPassword, "appdb"), 1, "holder")
	h.WaitHeld(t, 1, livePollTimeout)
	r = round()
	assert.True(t, r.clientsRan)
	assert.True(t, r.ownFound, "the agent's row is matched by its local port")

	res := r.result()
	db, ok := findPool(res, "appdb/*")
	require.True(t, ok, dump(res))
	assert.Equal(t, Pool{Name: "appdb/*", Database: "appdb", Mode: "transaction", Max: Some(4), Open: 1, InUse: 1}, db)
	h.Release()
}

func TestPgBouncer_Live_ShowsPausedDatabases(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	s := newPgBouncer(config.Target{LeakThreshold: time.Hour})
	q := consoleQuerier(t, b)

	res := pollScrape(t, s, q, "database listed", func(r *Result) bool { return len(r.Databases) == 1 })
	assert.Equal(t, []DatabaseState{{Name: "appdb"}}, res.Databases)
	b.AdminExec(t, "PAUSE appdb")
	res = pollScrape(t, s, q, "paused", func(r *Result) bool { return len(r.Databases) == 1 && r.Databases[0].Paused })
	assert.False(t, res.Databases[0].Disabled)
	b.AdminExec(t, "RESUME appdb")
	b.AdminExec(t, "DISABLE appdb")
	res = pollScrape(t, s, q, "disabled", func(r *Result) bool { return len(r.Databases) == 1 && r.Databases[0].Disabled })
	assert.False(t, res.Databases[0].Paused)
}

func TestPgBouncer_Live_ConnectFailureIsRecordedAsConnect(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	q := newConnPerDo(t, b.RawDSN("stats", "wrong-password", "pgbouncer"), pgx.QueryExecModeSimpleProtocol)
	res := newPgBouncer(config.Target{}).Scrape(context.Background(), q)
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryConnect, res.Errors[0].Query)
	assert.Empty(t, res.Pools)
	assert.NotContains(t, res.Errors[0].Error(), "wrong-password")
}

func TestPostgres_Live_ServerSlotsCountEveryClientBackend(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{MaxConnections: 20, SuperuserReserved: 2})
	pg.CreateRole(t, "monitor", statsPassword, "LOGIN", "IN ROLE pg_monitor")
	s := newPostgres(config.Target{LeakThreshold: time.Minute})

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			q := newConnPerDo(t, pg.DSN("monitor", statsPassword, "postgres"), mode)
			res := pollScrape(t, s, q, "only the agent", func(r *Result) bool {
				p, ok := findPool(r, PoolServer)
				return ok && p.Open == 1
			})
			require.Empty(t, res.Errors)
			assert.Regexp(t, `^15\.\d+$`, res.Version)

			var conns []*pgx.Conn
			for i := 0; i < 4; i++ {
				c, err := pgx.Connect(context.Background(), pg.DSN("monitor", statsPassword, "postgres")+"&application_name=slot-holder")
				require.NoError(t, err)
				conns = append(conns, c)
			}
			res = pollScrape(t, s, q, "4 holders and the agent", func(r *Result) bool {
				p, ok := findPool(r, PoolServer)
				return ok && p.InUse == 5
			})
			p, _ := findPool(res, PoolServer)
			assert.Equal(t, Pool{Name: PoolServer, Max: Some(18), Reserve: Some(2), Open: 5, InUse: 5}, p)
			for _, c := range conns {
				require.NoError(t, c.Close(context.Background()))
			}
			pollScrape(t, s, q, "holders gone", func(r *Result) bool {
				p, ok := findPool(r, PoolServer)
				return ok && p.InUse == 1
			})
		})
	}
}

func TestPostgres_Live_ApplicationPoolsMatchGlobsInOrder(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "monitor", statsPassword, "LOGIN", "IN ROLE pg_monitor")
	pg.CreateRole(t, "app", appPassword, "LOGIN")
	pg.CreateRole(t, "worker", appPassword, "LOGIN")
	s := newPostgres(config.Target{
		LeakThreshold: time.Hour,
		ApplicationPools: []config.ApplicationPool{
			{Name: "web", ApplicationName: "web-*", MinConnections: intp(2), MaxConnections: intp(5)},
			{Name: "jobs", ApplicationName: "job?", User: "work*"},
			{Name: "pct", ApplicationName: "50%_off", Database: "post?res"},
			{Name: "catchall", ApplicationName: "*"},
		},
	})

	open := func(user, app string) *pgx.Conn {
		c, err := pgx.Connect(context.Background(), pg.DSN(user, appPassword, "postgres")+"&application_name="+strings.ReplaceAll(app, "%", "%25"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	web1 := open("app", "web-1")
	open("app", "web-2")
	open("app", "web-3")
	open("worker", "jobA")
	open("worker", "jobB")
	open("app", "jobC")    // not user work*: falls through to catchall
	open("app", "50%_off") // % and _ are literal in the glob
	open("app", "50x_off")
	_, err := web1.Exec(context.Background(), "BEGIN")
	require.NoError(t, err)

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			q := newConnPerDo(t, pg.DSN("monitor", statsPassword, "postgres"), mode)
			res := pollScrape(t, s, q, "every client counted", func(r *Result) bool {
				p, ok := findPool(r, PoolServer)
				return ok && p.Open == 9 && len(r.Errors) == 0
			})
			want := map[string]Pool{
				"web":      {Name: "web", Min: Some(2), Max: Some(5), Open: 3, InUse: 1},
				"jobs":     {Name: "jobs", User: "work*", Open: 2, InUse: 0},
				"pct":      {Name: "pct", Database: "post?res", Open: 1, InUse: 0},
				"catchall": {Name: "catchall", Open: 3, InUse: 1}, // jobC, 50x_off, and the agent running the query
			}
			for name, w := range want {
				p, ok := findPool(res, name)
				require.True(t, ok, name)
				assert.Equal(t, w, p, name)
			}
			assert.Equal(t, []string{"catchall", "jobs", "pct", "server", "web"}, poolNames(res))
		})
	}
}

// heldConn is a Querier over one long-lived connection: the probe pool's
// steady state, where no connection is opened per scrape.
type heldConn struct{ conn *pgx.Conn }

func (q heldConn) Do(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	return fn(ctx, q.conn)
}

// BenchmarkPgBouncerScrape_Live2000Clients measures a whole pgbouncer round
// on one held console connection against a live PgBouncer 1.18 with 2,000
// connected clients: with a linked client (SHOW CLIENTS sent, 2,000+ rows)
// and without (SHOW CLIENTS skipped). Loopback, PgBouncer on the same
// machine: ns/op includes PgBouncer's own time.
func BenchmarkPgBouncerScrape_Live2000Clients(b *testing.B) {
	const clients = 2000
	_, bouncer := liveBouncer(b, "pool_size=3", testenv.PgBouncerOptions{MaxClientConn: clients + 50})
	cfg, err := pgx.ParseConfig(bouncer.DSN("app", appPassword, "appdb"))
	require.NoError(b, err)
	conns := make(chan *pgx.Conn, clients)
	errs := make(chan error, clients)
	sem := make(chan struct{}, 8)
	for i := 0; i < clients; i++ {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			c, err := pgx.ConnectConfig(context.Background(), cfg)
			if err != nil {
				errs <- err
				return
			}
			conns <- c
		}()
	}
	for i := 0; i < cap(sem); i++ {
		sem <- struct{}{}
	}
	close(conns)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		for c := range conns {
			_ = c.Close(context.Background())
		}
	})
	agent, err := pgx.ConnectConfig(context.Background(), consoleQuerier(b, bouncer).cfg)
	require.NoError(b, err)
	b.Cleanup(func() { _ = agent.Close(context.Background()) })
	q := heldConn{conn: agent}
	s := newPgBouncer(config.Target{LeakThreshold: time.Hour})

	b.Run("show_clients_skipped", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			res := s.Scrape(context.Background(), q)
			if len(res.Errors) > 0 {
				b.Fatal(res.Errors)
			}
		}
	})
	h := testenv.HoldTransactions(b, bouncer.DSN("app", appPassword, "appdb"), 1, "holder")
	h.WaitHeld(b, 1, livePollTimeout)
	b.Run("show_clients_sent", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			res := s.Scrape(context.Background(), q)
			if len(res.Errors) > 0 {
				b.Fatal(res.Errors)
			}
			if c, _ := findPool(res, PoolClients); c.Open < clients {
				b.Fatalf("clients pool counts %v", c.Open)
			}
		}
	})
	h.Release()
}

func TestPgBouncer_Live_ConcurrentScrapesAreIndependent(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	q := consoleQuerier(t, b)
	s := newPgBouncer(config.Target{LeakThreshold: time.Second})
	h := testenv.HoldTransactions(t, b.DSN("app", appPassword, "appdb"), 1, "holder")
	h.WaitHeld(t, 1, livePollTimeout)

	const workers, rounds = 4, 5
	results := make(chan *Result, workers*rounds)
	done := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < rounds; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				results <- s.Scrape(ctx, q)
				cancel()
			}
		}()
	}
	for w := 0; w < workers; w++ {
		<-done
	}
	close(results)
	for res := range results {
		require.Empty(t, res.Errors)
		p, ok := findPool(res, "appdb/app")
		require.True(t, ok, dump(res))
		assert.Equal(t, 1.0, p.InUse)
		assert.Equal(t, "1.18.0", res.Version)
	}
}

func TestPostgres_Live_FailuresAreRecordedByQueryName(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "monitor", statsPassword, "LOGIN", "IN ROLE pg_monitor")
	s := newPostgres(config.Target{LeakThreshold: time.Minute})

	wrong := newConnPerDo(t, pg.DSN("monitor", "wrong-password", "postgres"), pgx.QueryExecModeCacheStatement)
	res := s.Scrape(context.Background(), wrong)
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryConnect, res.Errors[0].Query)
	assert.NotContains(t, res.Errors[0].Error(), "wrong-password")
	assert.Empty(t, res.Pools)

	// The connection works but the round's context is already over.
	q := newConnPerDo(t, pg.DSN("monitor", statsPassword, "postgres"), pgx.QueryExecModeCacheStatement)
	res = s.Scrape(context.Background(), cancelledFn{q})
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryActivity, res.Errors[0].Query)
	assert.ErrorIs(t, res.Errors[0], context.Canceled)
	assert.Empty(t, res.Pools)
	assert.Regexp(t, `^15\.`, res.Version, "the version comes with the connection")
}

// cancelledFn connects normally but runs fn under a cancelled context.
type cancelledFn struct{ q *connPerDo }

func (c cancelledFn) Do(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	return c.q.Do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		return fn(cctx, conn)
	})
}

func TestPgBouncer_Live_CancelledRoundRecordsEachQuery(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3", testenv.PgBouncerOptions{})
	res := newPgBouncer(config.Target{}).Scrape(context.Background(), cancelledFn{consoleQuerier(t, b)})
	var names []string
	for _, e := range res.Errors {
		names = append(names, e.Query)
		assert.ErrorIs(t, e, context.Canceled)
	}
	// SHOW POOLS failed, so whether a leak is possible is unknown: SHOW
	// CLIENTS is tried too.
	assert.Equal(t, []string{"show_pools", "show_databases", "show_config", "show_lists", "show_stats", "show_mem", "show_clients"}, names)
	assert.Equal(t, "1.18.0", res.Version)
	assert.Empty(t, res.Pools)
}

// TestPostgres_Live_CulpritQueryTextStaysOnTheServerUnlessAskedFor leaves
// transactions idle after statements whose text holds a password, behind
// leading comments: the culprit carries the statement's first keyword and,
// with compute_query_id on, its query_id, and no text; with
// log_query_text, the text with every literal and comment redacted.
func TestPostgres_Live_CulpritQueryTextStaysOnTheServerUnlessAskedFor(t *testing.T) {
	const password = "AppRolePassw0rd-LEAKME"
	for _, queryID := range []string{"on", "off"} {
		t.Run("compute_query_id="+queryID, func(t *testing.T) {
			pg := testenv.StartPostgres(t, testenv.PostgresOptions{ExtraConf: map[string]string{"compute_query_id": queryID}})
			pg.CreateRole(t, "monitor", statsPassword, "LOGIN", "IN ROLE pg_monitor")
			pg.CreateRole(t, "app", appPassword, "LOGIN")
			pg.Exec(t, "GRANT CREATE ON DATABASE postgres TO app")
			q := newConnPerDo(t, pg.DSN("monitor", statsPassword, "postgres"), pgx.QueryExecModeCacheStatement)

			ctx := context.Background()
			statements := map[string]string{
				"ALTER":  "ALTER ROLE app PASSWORD '" + password + "'",
				"CREATE": "/* rotate */ -- the app role\n  CREATE ROLE app_tmp LOGIN PASSWORD '" + password + "'",
			}
			for keyword, stmt := range statements {
				c, err := pgx.Connect(ctx, pg.DSN("postgres", pg.SuperPassword, "postgres")+"&application_name=culprit-"+keyword)
				require.NoError(t, err)
				t.Cleanup(func() { _ = c.Close(context.Background()) })
				_, err = c.Exec(ctx, "BEGIN")
				require.NoError(t, err)
				_, err = c.Exec(ctx, stmt)
				require.NoError(t, err)
			}

			s := newPostgres(config.Target{LeakThreshold: 500 * time.Millisecond})
			res := pollScrape(t, s, q, "both culprits leaked", func(r *Result) bool { return len(r.Leaks) == 2 })
			got := map[string]Leak{}
			for _, l := range res.Leaks {
				got[strings.TrimPrefix(l.ApplicationName, "culprit-")] = l
			}
			for keyword := range statements {
				l := got[keyword]
				assert.Equal(t, keyword, l.QueryKeyword)
				assert.Empty(t, l.Query)
				if queryID == "on" {
					assert.Regexp(t, `^-?[0-9]+$`, l.QueryID)
				} else {
					assert.Empty(t, l.QueryID, "compute_query_id off: no query_id")
				}
			}

			withText := newPostgres(config.Target{LeakThreshold: 500 * time.Millisecond, LogQueryText: true})
			res = withText.Scrape(ctx, q)
			require.Len(t, res.Leaks, 2)
			for _, l := range res.Leaks {
				assert.NotContains(t, l.Query, password)
				assert.Contains(t, l.Query, "PASSWORD '***'")
			}
		})
	}
}
