package hostile_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// TestPools_JunkAutoDatabasesCannotPushOutThePoolsThatMatter logs in to
// 1,100 made-up database names through a PgBouncer with a `*` catch-all,
// as any application user can: each creates an auto-database and a pool
// that lives for autodb_idle_timeout. The pool in use (shop/app) and a
// pinned idle one (audit/app) stay in /metrics, the cut shows in
// poolwatch_target_pools_dropped, and the target's series stay under
// max_pools × the series of a pool. (Before the fix, max_pools kept pools
// by name, so junk names sorting first pushed the real pools out, and every
// auto-database added series of its own, uncapped.)
func TestPools_JunkAutoDatabasesCannotPushOutThePoolsThatMatter(t *testing.T) {
	const maxPools = 100
	junk := size(1100, 1100)
	// Each auto-database's first login opens a server connection, which
	// server_idle_timeout closes a second later: room for a few hundred.
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{MaxConnections: 400})
	pg.CreateRole(t, "app", appPassword, "LOGIN")
	pgb := testenv.StartPgBouncer(t, pg, testenv.PgBouncerOptions{
		PoolMode: "transaction",
		Databases: map[string]string{
			"shop":  "dbname=postgres",
			"audit": "dbname=postgres",
			"*":     "dbname=postgres", // the catch-all: any database name becomes an auto-database
		},
		Users:         map[string]string{"app": appPassword, "stats": statPassword},
		StatsUsers:    []string{"stats"},
		MaxClientConn: 200,
		// Idle server connections go at once, so that only a client in a
		// transaction keeps a pool in use.
		Extra: map[string]string{"server_idle_timeout": "1"},
	})
	cfg := fmt.Sprintf(`targets:
  - name: bouncer
    kind: pgbouncer
    dsn: %s
    max_pools: %d
    pinned_pools: ["audit/*"]
`, pgb.DSN("stats", statPassword, "pgbouncer"), maxPools)
	pw := testenv.StartPoolwatch(t, cfg)

	// shop/app is in use: a client sits in a transaction. audit/app exists
	// but is idle once its server connection has gone.
	h := testenv.HoldTransactions(t, pgb.DSN("app", appPassword, "shop"), 1, "shop-app")
	h.WaitHeld(t, 1, 20*time.Second)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, pgb.DSN("app", appPassword, "audit"))
	if err != nil {
		t.Fatalf("connect to audit: %v", err)
	}
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("query audit: %v", err)
	}
	_ = c.Close(ctx)

	eventually(t, 20*time.Second, "shop/app in use and audit/app idle", func() (bool, string) {
		m := pw.Scrape(t)
		shop, _ := m.Get(t, "poolwatch_pool_in_use_connections", "target", "bouncer", "pool", "shop/app")
		audit, ok := m.Get(t, "poolwatch_pool_open_connections", "target", "bouncer", "pool", "audit/app")
		return shop == 1 && ok && audit == 0, fmt.Sprintf("shop in use %v, audit open %v (present %v)", shop, audit, ok)
	})
	base := pw.Scrape(t)
	pools := len(base.Values("poolwatch_pool_info", "pool"))
	perPool := float64(base.SeriesOf("bouncer")) / float64(pools)
	t.Logf("before the junk: %d pools, %d series (%.1f per pool, the target's own series included)", pools, base.SeriesOf("bouncer"), perPool)

	// The attack: logins to made-up database names, 8 at a time. Each
	// makes PgBouncer create an auto-database and its pool, which outlive
	// the login by autodb_idle_timeout (an hour by default).
	start := time.Now()
	var failed atomic.Int64
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				jc, err := pgx.Connect(cctx, pgb.DSN("app", appPassword, fmt.Sprintf("aaa_junk_%05d", i)))
				cancel()
				if err == nil {
					_ = jc.Close(ctx)
				} else if failed.Add(1) <= 3 {
					t.Logf("junk login %d: %v", i, err)
				}
			}
		}()
	}
	for i := range junk {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Logf("%d junk logins in %v (%d failed)", junk, time.Since(start).Round(time.Millisecond), failed.Load())
	junkPools, junkDBs := 0, 0
	for _, r := range pgb.Show(t, "SHOW POOLS").Records() {
		if strings.HasPrefix(r["database"], "aaa_junk") {
			junkPools++
		}
	}
	for _, r := range pgb.Show(t, "SHOW DATABASES").Records() {
		if strings.HasPrefix(r["name"], "aaa_junk") {
			junkDBs++
		}
	}
	t.Logf("PgBouncer shows %d junk pools and %d junk databases", junkPools, junkDBs)
	if junkPools < junk {
		t.Fatalf("PgBouncer shows %d junk pools, want %d: the attack did not happen", junkPools, junk)
	}

	m := pw.Scrape(t)
	for _, pool := range []string{"shop/app", "audit/app", "clients"} {
		if _, ok := m.Get(t, "poolwatch_pool_info", "target", "bouncer", "pool", pool); !ok {
			t.Errorf("pool %s is gone from /metrics after %d junk auto-databases", pool, junk)
		}
	}
	if v := m.Must(t, "poolwatch_pool_in_use_connections", "target", "bouncer", "pool", "shop/app"); v != 1 {
		t.Errorf("shop/app in use %v, want 1", v)
	}
	kept := len(m.Values("poolwatch_pool_info", "pool"))
	dropped := m.Must(t, "poolwatch_target_pools_dropped", "target", "bouncer")
	series := m.SeriesOf("bouncer")
	bound := int(float64(maxPools) * perPool)
	t.Logf("after %d junk auto-databases: %d pools kept, %v dropped, %d series (bound max_pools × %.1f = %d)", junk, kept, dropped, series, perPool, bound)
	if kept != maxPools {
		t.Errorf("%d pools exported, want max_pools %d", kept, maxPools)
	}
	if want := float64(junk + pools - maxPools); dropped != want {
		t.Errorf("poolwatch_target_pools_dropped %v, want %v", dropped, want)
	}
	if series >= bound {
		t.Errorf("%d series for the target, want under max_pools × series per pool = %d", series, bound)
	}
	pw.StopAndCheck(t, statPassword, appPassword)
}
