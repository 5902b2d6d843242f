package scrape

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
)

// BenchmarkPgBouncerRound_Live30Pools measures a whole pgbouncer round on
// one held console connection against a live PgBouncer 1.18 with 30 used
// pools: the round as it ships (SHOW POOLS, DATABASES, CONFIG, LISTS,
// STATS and MEM; SHOW USERS is skipped before 1.23, SHOW CLIENTS when no
// leak is possible), and the same without SHOW MEM, the command this round
// added. Loopback, PgBouncer on the same machine: ns/op includes
// PgBouncer's own time.
func BenchmarkPgBouncerRound_Live30Pools(b *testing.B) {
	const pools = 30
	pg := testenv.StartPostgres(b, testenv.PostgresOptions{})
	pg.CreateRole(b, "app", appPassword, "LOGIN")
	pg.CreateRole(b, "monitor", statsPassword, "LOGIN")
	pg.CreateDatabase(b, "appdb")
	dbs := map[string]string{}
	for i := 0; i < pools; i++ {
		dbs[fmt.Sprintf("db%02d", i)] = "dbname=appdb pool_size=3"
	}
	bouncer := testenv.StartPgBouncer(b, pg, testenv.PgBouncerOptions{
		PoolMode: "transaction", Databases: dbs, StatsUsers: []string{"stats"},
		Users: map[string]string{"app": appPassword, "stats": statsPassword},
	})
	ctx := context.Background()
	for name := range dbs {
		c, err := pgx.Connect(ctx, bouncer.DSN("app", appPassword, name))
		require.NoError(b, err)
		_, err = c.Exec(ctx, "SELECT 1")
		require.NoError(b, err)
		require.NoError(b, c.Close(ctx))
	}
	agent, err := pgx.ConnectConfig(ctx, consoleQuerier(b, bouncer).cfg)
	require.NoError(b, err)
	b.Cleanup(func() { _ = agent.Close(context.Background()) })
	q := heldConn{conn: agent}
	s := newPgBouncer(config.Target{LeakThreshold: time.Hour})

	run := func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			res := s.Scrape(ctx, q)
			if len(res.Errors) > 0 {
				b.Fatal(res.Errors)
			}
			if len(res.Pools) < pools {
				b.Fatalf("%d pools", len(res.Pools))
			}
		}
	}
	b.Run("all_commands", run)
	all := bouncerCommands
	var without []bouncerCommand
	for _, c := range all {
		if c.query != QueryShowMem {
			without = append(without, c)
		}
	}
	bouncerCommands = without
	b.Run("without_show_mem", run)
	bouncerCommands = all
}

// BenchmarkPgpoolRound_Live measures a whole pgpool round on one held
// connection through a live Pgpool-II 4.3 (num_init_children 32, max_pool
// 4, two backend nodes): SHOW POOL_PROCESSES, POOL_POOLS (256 rows) and
// POOL_NODES; and with a client idle in a transaction, which adds the one
// pg_stat_activity query. Loopback: ns/op includes Pgpool-II's and
// PostgreSQL's own time.
func BenchmarkPgpoolRound_Live(b *testing.B) {
	pg0 := testenv.StartPostgres(b, testenv.PostgresOptions{})
	pg1 := testenv.StartPostgres(b, testenv.PostgresOptions{})
	for _, pg := range []*testenv.Postgres{pg0, pg1} {
		pg.CreateRole(b, "app", appPassword, "LOGIN")
		pg.CreateRole(b, "monitor", monitorPassword, "LOGIN", "IN ROLE pg_monitor")
		pg.CreateDatabase(b, "appdb")
	}
	pp := testenv.StartPgpool(b, []*testenv.Postgres{pg0, pg1}, testenv.PgpoolOptions{
		NumInitChildren: 32, MaxPool: 4,
		Users: map[string]string{"app": appPassword, "monitor": monitorPassword},
	})
	ctx := context.Background()
	agent, err := pgx.Connect(ctx, pp.DSN("monitor", monitorPassword, "appdb"))
	require.NoError(b, err)
	b.Cleanup(func() { _ = agent.Close(context.Background()) })
	q := heldConn{conn: agent}
	s := newPgpool(config.Target{LeakThreshold: time.Hour})
	run := func() func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				res := s.Scrape(ctx, q)
				if len(res.Errors) > 0 {
					b.Fatal(res.Errors)
				}
				if c, _ := findPool(res, PoolChildren); c.Max.Value != 32 {
					b.Fatalf("children %+v", c)
				}
			}
		}
	}
	b.Run("no_idle_transaction", run())
	idle, err := pgx.Connect(ctx, pp.DSN("app", appPassword, "appdb"))
	require.NoError(b, err)
	b.Cleanup(func() { _ = idle.Close(context.Background()) })
	_, err = idle.Exec(ctx, "BEGIN")
	require.NoError(b, err)
	_, err = idle.Exec(ctx, "SELECT 1")
	require.NoError(b, err)
	b.Run("idle_transaction", run())
}
